"""Tests for fedbench.fl.transcript_io: a transcript survives the file exactly, keeps only what
the channel revealed, and a damaged file is refused naming the file and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fedbench.config import parse_experiment
from fedbench.defenses.secagg.channel import SecAgg
from fedbench.fl.pipeline import Pipeline
from fedbench.fl.simulation import Simulation, SimulationResult
from fedbench.fl.threat import ThreatModel
from fedbench.fl.transcript import Transcript
from fedbench.fl.transcript_io import (
    META_FILE,
    TENSOR_FILE,
    ChannelMeta,
    TranscriptError,
    WriterMeta,
    read_transcript,
    recorded_channel,
    transcript_files,
    write_transcript,
)
from fedbench.fl.views import ViewKind
from fedbench.harness.build import build_data, model_factory
from fedbench.seeding import Streams

EXPERIMENT: dict[str, Any] = {
    "data": "digits", "model": {"name": "logreg"},
    "fl": {"num_clients": 4, "clients_per_round": 3, "rounds": 3, "batch_size": 16},
}


def _run(secagg: bool = False) -> tuple[SimulationResult, Pipeline]:
    cfg = parse_experiment(EXPERIMENT)
    streams = Streams(cfg.seed)
    data = build_data(cfg, streams)
    pipeline = Pipeline([("secagg", SecAgg(tolerated_dropout=0.0))] if secagg else [])
    sim = Simulation(
        model_factory=model_factory(cfg, data, streams), data=data, fl=cfg.fl,
        pipeline=pipeline, streams=streams,
        transcript=Transcript(rounds=3, keep_rounds={0, 2}, keep_model_sequence=True),
    ).run()
    return sim, pipeline


def _write(folder: Path, sim: SimulationResult, pipeline: Pipeline) -> Path:
    channel = pipeline.channel
    files = transcript_files(
        sim.transcript, experiment=parse_experiment(EXPERIMENT).model_dump(mode="json"),
        channel=ChannelMeta(name=getattr(channel, "name", "plaintext"),
                            reveals_client_updates=channel.reveals_client_updates),
        writer=WriterMeta(name="fedbench", version="test"), private=sim.private,
    )
    return write_transcript(folder, files)


@pytest.fixture(scope="module")
def plain() -> tuple[SimulationResult, Pipeline]:
    return _run()


@pytest.fixture()
def folder(tmp_path: Path, plain: tuple[SimulationResult, Pipeline]) -> Path:
    return _write(tmp_path / "t", *plain)


def test_every_view_reads_back_exactly(
    folder: Path, plain: tuple[SimulationResult, Pipeline]
) -> None:
    sim, _ = plain
    loaded = read_transcript(folder)
    before, after = sim.transcript, loaded.transcript
    for t in (0, 2):
        for cid in before.rounds[t].contributors:
            a, b = before.client_update_view(t, cid), after.client_update_view(t, cid)
            assert torch.equal(a.update, b.update) and a.update.dtype == b.update.dtype
            assert (a.weight, a.num_examples, a.params.tolist()) == (
                b.weight, b.num_examples, b.params.tolist())
        agg_a, agg_b = before.aggregate_view(t), after.aggregate_view(t)
        assert torch.equal(agg_a.aggregate, agg_b.aggregate)
        assert agg_a.contributors == agg_b.contributors
    with pytest.raises(KeyError, match="round 1 was not kept"):
        after.aggregate_view(1)
    assert all(torch.equal(x, y) for x, y in zip(
        before.model_sequence_view().params, after.model_sequence_view().params, strict=True))
    assert torch.equal(before.final_model_view().params, after.final_model_view().params)
    assert [r.sampled for r in before.rounds] == [r.sampled for r in after.rounds]
    assert loaded.private is not None
    assert {k: v.tolist() for k, v in loaded.private.used_ids.items()} == {
        k: v.tolist() for k, v in sim.private.used_ids.items()}
    assert loaded.private.participants == sim.private.participants


def test_a_secagg_transcript_holds_no_single_update_and_opens_only_the_aggregate(
    tmp_path: Path,
) -> None:
    sim, pipeline = _run(secagg=True)
    folder = _write(tmp_path / "s", sim, pipeline)
    loaded = read_transcript(folder)
    assert not any(name.startswith("round.0.client")
                   for name in np.load(folder / TENSOR_FILE).files)
    threat = ThreatModel(channel=recorded_channel(loaded.channel))
    assert ViewKind.CLIENT_UPDATE not in threat.open_views()
    assert ViewKind.AGGREGATE in threat.open_views()
    with pytest.raises(PermissionError, match="hides single client updates"):
        loaded.transcript.client_update_view(0)
    # A file claiming a hiding channel but carrying an update is refused, not believed.
    meta = json.loads((folder / META_FILE).read_text())
    meta["rounds"][0]["client_updates"] = [meta["rounds"][0]["contributors"][0]]
    (folder / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(TranscriptError, match=r"rounds\.0\.client_updates.*hides single"):
        read_transcript(folder)


def _edit(folder: Path, change: Any) -> None:
    meta = json.loads((folder / META_FILE).read_text())
    change(meta)
    (folder / META_FILE).write_text(json.dumps(meta))


def test_a_truncated_tensor_file_is_refused_naming_it(folder: Path) -> None:
    data = (folder / TENSOR_FILE).read_bytes()
    (folder / TENSOR_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(TranscriptError, match=rf"{TENSOR_FILE}: .*field 'tensors'.size.*trunc"):
        read_transcript(folder)


def test_a_corrupted_tensor_file_is_refused_naming_it(folder: Path) -> None:
    data = bytearray((folder / TENSOR_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / TENSOR_FILE).write_bytes(bytes(data))
    with pytest.raises(TranscriptError, match=r"tensors.npz: its SHA-256 differs.*sha256"):
        read_transcript(folder)


def test_truncated_metadata_is_refused_naming_the_file(folder: Path) -> None:
    text = (folder / META_FILE).read_text()
    (folder / META_FILE).write_text(text[: len(text) // 2])
    with pytest.raises(TranscriptError, match=rf"{META_FILE}: not valid JSON.*truncated"):
        read_transcript(folder)


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m["rounds"].pop(1), r"field 'rounds' has 2 rounds.*'num_rounds' says 3"),
    (lambda m: m.update(num_params=7), r"tensor 'round.0.params' has shape \(650,\).*\(7,\)"),
    (lambda m: m.update(version=99), r"field 'version' is 99"),
    (lambda m: m.update(format="other"), r"field 'format' must be 'fedbench-transcript'"),
    (lambda m: m["rounds"][0].update(sampled="all"), r"field 'rounds.0.sampled'"),
    (lambda m: m["rounds"][0]["model_hashes"].update({"1": "0" * 16}),
     r"rounds.0.model_hashes': clients \[1\] received a model other"),
    (lambda m: m["rounds"][2].update(vectors=["params"]),
     r"rounds.2.vectors' lacks the aggregate"),
    (lambda m: m.pop("channel"), r"field 'channel': Field required"),
])
def test_an_inconsistent_file_is_refused_naming_the_field(
    folder: Path, change: Any, message: str
) -> None:
    _edit(folder, change)
    with pytest.raises(TranscriptError, match=message) as caught:
        read_transcript(folder)
    assert str(folder) in str(caught.value)


def test_a_folder_without_a_transcript_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TranscriptError, match=r"no transcript\.json"):
        read_transcript(tmp_path)
