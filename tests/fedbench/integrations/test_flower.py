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
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("flwr")
pytest.importorskip("ray")

from flower_app import EXPERIMENT, SECAGG_EXPERIMENT, SERVER_DP

from fedbench.cli import main
from fedbench.config import parse_experiment
from fedbench.fl.transcript_io import META_FILE, TENSOR_FILE, read_transcript
from fedbench.harness.cell import TranscribedCell, execute_cell
from fedbench.harness.records import read_results_dir
from fedbench.harness.suite import Cell

pytestmark = pytest.mark.slow  # Ray and Flower start-up: about a minute, then the attack


def _run_in_loopback(folder: Path, mode: str) -> Path:
    """A real Flower simulation, in a network namespace with only the loopback interface."""
    if not (shutil.which("unshare") and shutil.which("ip")):
        pytest.skip("needs unshare and ip (iproute2) to keep Ray on loopback")
    script = Path(__file__).with_name("flower_app.py")
    command = f"ip link set lo up && {sys.executable} {script} {folder} {mode}"
    env = {**os.environ, "PYTHONPATH": str(script.parent), "RAY_USAGE_STATS_ENABLED": "0",
           "FLWR_TELEMETRY_ENABLED": "0"}
    done = subprocess.run(["unshare", "--net", "--fork", "sh", "-c", command],
                          capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0 and "unshare failed" in done.stderr:
        pytest.skip(f"cannot make a network namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


@pytest.fixture(scope="module")
def flower_transcript(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run_in_loopback(tmp_path_factory.mktemp("flower") / "transcript", "plain")


@pytest.fixture(scope="module")
def server_dp_transcript(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run_in_loopback(tmp_path_factory.mktemp("flower") / "server_dp", "server_dp")


@pytest.fixture(scope="module")
def secagg_transcript(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run_in_loopback(tmp_path_factory.mktemp("flower") / "secaggplus", "secaggplus")


def _fedbench_transcript(tmp_path: Path, base: dict[str, Any] = EXPERIMENT) -> Path:
    """fedbench's own run of the same training (every client, so each Flower one is in it)."""
    experiment = {**base, "fl": {**base["fl"], "clients_per_round": None}}
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


def test_a_secaggplus_run_holds_only_the_aggregate_and_opens_only_that_view(
    secagg_transcript: Path, tmp_path: Path
) -> None:
    flower = read_transcript(secagg_transcript)
    assert not flower.channel.reveals_client_updates
    (record,) = flower.transcript.rounds
    assert len(record.contributors) == 3 and record.client_updates is None
    with np.load(secagg_transcript / TENSOR_FILE) as tensors:
        assert not [name for name in tensors.files if ".client." in name]
    # The unmasked sum is the sum of the updates fedbench computes for the same clients, up to
    # SecAgg+'s quantization (a step of 16 / 2^22 per coordinate).
    own = read_transcript(_fedbench_transcript(tmp_path / "own", SECAGG_EXPERIMENT))
    total = sum(own.transcript.client_update_view(0, c).update.double()
                for c in record.contributors)
    torch.testing.assert_close(flower.transcript.aggregate_view(0).aggregate, total,
                               rtol=0.0, atol=1e-4)
    assert main(["attack", str(secagg_transcript), "--attacks",
                 "[{name: idlg, iterations: 2, inner_iterations: 2}]",
                 "--results-dir", str(tmp_path / "attack"), "-q"]) == 0
    (folder,) = (tmp_path / "attack").iterdir()
    views = {m.view.value for m in read_results_dir(folder).metrics
             if m.attack == "idlg" and m.view is not None}
    assert views == {"aggregate"}


def test_under_flowers_server_side_dp_the_server_still_reads_each_raw_update(
    server_dp_transcript: Path, tmp_path: Path
) -> None:
    """DifferentialPrivacyServerSideFixedClipping clips and noises at the server: the server
    itself reads every update before it does, so the client_update view holds the raw update,
    the very one iDLG inverts in the plain run; only the released model carries noise."""
    flower = read_transcript(server_dp_transcript)
    own = read_transcript(_fedbench_transcript(tmp_path))
    (record,) = flower.transcript.rounds
    clip = SERVER_DP["clipping_norm"]
    for cid in record.contributors:
        raw = flower.transcript.client_update_view(0, cid).update
        torch.testing.assert_close(raw, own.transcript.client_update_view(0, cid).update,
                                   rtol=1e-5, atol=1e-7)
        assert float(raw.norm()) > 2 * clip  # so Flower did clip it before averaging
    assert record.params is not None and record.next_params is not None
    step = record.next_params - record.params
    clipped_mean_norm_bound = clip  # a mean of updates clipped to `clip` has at most that norm
    assert float(step.norm()) > 5 * clipped_mean_norm_bound  # Gaussian noise on top
