"""Tests for fedbench.integrations.flower with real Flower: a recorded Flower FedAvg run of one
FedSGD round is a valid transcript, holds the updates fedbench's own run of the same training
computes, and iDLG on it recovers a client's image."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("flwr")
pytest.importorskip("ray")

from flower_app import EXPERIMENT

from fedbench.cli import main
from fedbench.config import parse_experiment
from fedbench.fl.transcript_io import META_FILE, read_transcript
from fedbench.harness.cell import TranscribedCell, execute_cell
from fedbench.harness.records import read_results_dir
from fedbench.harness.suite import Cell

pytestmark = pytest.mark.slow  # Ray and Flower start-up: about a minute, then the attack


@pytest.fixture(scope="module")
def flower_transcript(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Flower simulation, in a network namespace with only the loopback interface."""
    if not (shutil.which("unshare") and shutil.which("ip")):
        pytest.skip("needs unshare and ip (iproute2) to keep Ray on loopback")
    folder = tmp_path_factory.mktemp("flower") / "transcript"
    script = Path(__file__).with_name("flower_app.py")
    command = f"ip link set lo up && {sys.executable} {script} {folder}"
    env = {**os.environ, "PYTHONPATH": str(script.parent), "RAY_USAGE_STATS_ENABLED": "0",
           "FLWR_TELEMETRY_ENABLED": "0"}
    done = subprocess.run(["unshare", "--net", "--fork", "sh", "-c", command],
                          capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0 and "unshare failed" in done.stderr:
        pytest.skip(f"cannot make a network namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


def _fedbench_transcript(tmp_path: Path) -> Path:
    """fedbench's own run of the same training (every client, so each Flower one is in it)."""
    experiment = {**EXPERIMENT, "fl": {**EXPERIMENT["fl"], "clients_per_round": None}}
    cell = Cell("own", "flower-fedsgd", "none", 0, parse_experiment(experiment))
    files = execute_cell(TranscribedCell.of(cell), figures=False).files
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    (meta,) = tmp_path.glob(f"transcripts/*/{META_FILE}")
    return meta.parent


def test_the_recorded_run_validates_and_holds_fedbenchs_own_updates(
    flower_transcript: Path, tmp_path: Path
) -> None:
    flower = read_transcript(flower_transcript)  # the same validator as for fedbench's files
    own = read_transcript(_fedbench_transcript(tmp_path))
    assert flower.writer.name == "flower" and own.writer.name == "fedbench"
    (record,) = flower.transcript.rounds
    assert len(record.contributors) == 2 and record.failed is None
    assert set(record.model_hashes.values()) == {own.transcript.rounds[0].model_hashes[0]}
    for cid in record.contributors:
        theirs = flower.transcript.client_update_view(0, cid).update
        ours = own.transcript.client_update_view(0, cid).update
        torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-7)
    meta = json.loads((flower_transcript / META_FILE).read_text())
    assert meta["private"] == {"used_ids": [], "whole_shards": True}


def test_idlg_on_the_recorded_flower_run_recovers_a_clients_image(
    flower_transcript: Path, tmp_path: Path
) -> None:
    assert main(["attack", str(flower_transcript), "--attacks",
                 "[{name: idlg, iterations: 150}]", "--results-dir", str(tmp_path), "-q"]) == 0
    (folder,) = tmp_path.iterdir()
    rows = {(m.metric, m.view.value if m.view else None): m.value
            for m in read_results_dir(folder).metrics}
    psnr = rows[("psnr", "client_update")]
    baseline = rows[("psnr_failure_baseline", "client_update")]
    assert psnr is not None and baseline is not None
    # Flower samples the two clients at random, so the image varies between runs; a recovered
    # one is 25-55 dB here, a failed one within a few dB of the baseline.
    assert psnr > baseline + 12.0, (psnr, baseline)
    assert rows[("label_accuracy", "client_update")] == 1.0
