"""Tests for fedbench.fl.threat: which views are open, and the view for a target with its truth."""

from __future__ import annotations

import pytest
import torch

from fedbench.attack import AttackTarget
from fedbench.config import parse_experiment
from fedbench.defenses.secagg.channel import SecAgg
from fedbench.fl.channel import PlaintextChannel
from fedbench.fl.pipeline import Pipeline
from fedbench.fl.simulation import Simulation
from fedbench.fl.threat import ThreatModel
from fedbench.fl.views import ViewKind
from fedbench.harness.build import build_data, model_factory
from fedbench.seeding import Streams


def test_open_views_follow_the_channel() -> None:
    assert ThreatModel(channel=PlaintextChannel()).open_views() == set(ViewKind)
    assert ThreatModel(channel=SecAgg().channel).open_views() == {
        ViewKind.AGGREGATE, ViewKind.MODEL_SEQUENCE, ViewKind.FINAL_MODEL
    }


def test_the_transcript_keeps_what_the_wanted_views_need() -> None:
    threat = ThreatModel(channel=PlaintextChannel())
    transcript = threat.transcript(rounds=5, wanted=[
        (ViewKind.CLIENT_UPDATE, AttackTarget(round=-1)),
        (ViewKind.AGGREGATE, AttackTarget(round=2)),
        (ViewKind.FINAL_MODEL, AttackTarget(round=0)),
    ])
    assert transcript.keep_rounds == {4, 2} and not transcript.keep_model_sequence


@pytest.mark.parametrize("channel", ["plaintext", "secagg"])
def test_the_view_for_a_target_comes_with_exactly_the_examples_behind_it(channel: str) -> None:
    cfg = parse_experiment({
        "model": "logreg",
        "fl": {"algorithm": "fedsgd", "num_clients": 4, "rounds": 1, "batch_size": 3},
    })
    streams = Streams(0)
    data = build_data(cfg, streams)
    pipeline = Pipeline([("secagg", SecAgg())] if channel == "secagg" else [])
    threat = ThreatModel(channel=pipeline.channel)
    target = AttackTarget(round=0, client=2)
    kinds = [ViewKind.CLIENT_UPDATE, ViewKind.AGGREGATE, ViewKind.FINAL_MODEL]
    transcript = threat.transcript(rounds=1, wanted=[(k, target) for k in kinds])
    sim = Simulation(model_factory=model_factory(cfg, data, streams), data=data, fl=cfg.fl,
                     pipeline=pipeline, streams=streams, transcript=transcript).run()
    kwargs = {"transcript": sim.transcript, "private": sim.private, "data": data}
    if channel == "plaintext":
        view, truth = threat.view(ViewKind.CLIENT_UPDATE, target, **kwargs)
        assert view.client_id == 2
        assert truth.examples is not None and len(truth.examples) == 3
        client_ids = set(data.clients[2].ids.tolist())
        assert set(truth.examples.ids.tolist()) <= client_ids
    else:
        with pytest.raises(PermissionError, match="client_update view is closed"):
            threat.view(ViewKind.CLIENT_UPDATE, target, **kwargs)
    aggregate, truth = threat.view(ViewKind.AGGREGATE, target, **kwargs)
    assert aggregate.contributors == (0, 1, 2, 3)
    assert truth.examples is not None and len(truth.examples) == 12
    final, truth = threat.view(ViewKind.FINAL_MODEL, target, **kwargs)
    assert truth.examples is None and torch.equal(final.params, sim.transcript.final_params)
