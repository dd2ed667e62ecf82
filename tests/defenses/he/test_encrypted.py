"""Tests for fedbench.defenses.he.encrypted: the shared round logic of the HE channels."""

from __future__ import annotations

import numpy as np
import pytest

from fedbench.defenses.he.ckks import CKKSKeys
from fedbench.defenses.he.ckks_channel import CKKSChannel
from fedbench.defenses.he.encrypted import max_clients
from fedbench.fl.context import RoundContext, RunInfo
from fedbench.seeding import Streams


def _run(sampling: str, expected: float) -> RunInfo:
    return RunInfo(
        num_clients=50, rounds=1, expected_clients=expected, sampling=sampling,
        weighting="uniform", recipe=None, client_sizes=(1,) * 50, dim=10, model_factory=None,
        streams=Streams(0),
    )


@pytest.mark.parametrize(
    "sampling, expected, most", [("fixed", 10.0, 10), ("fixed", 50.0, 50), ("poisson", 5.0, 50)]
)
def test_max_clients_covers_every_possible_round(sampling: str, expected: float, most: int) -> None:
    assert max_clients(_run(sampling, expected)) == most


def test_setup_sizes_the_channel_and_rounds_reset_the_reference(ckks_small_keys: CKKSKeys) -> None:
    channel = CKKSChannel(keys=ckks_small_keys)
    channel.setup(_run("poisson", 5.0))
    assert channel.clients == 50
    assert not channel.reveals_client_updates
    ctx = RoundContext(round=0, sampled=[0, 1, 2], num_clients=50, expected_clients=5.0, dim=10,
                       streams=Streams(0))
    channel.begin_round(ctx)
    messages = {c: channel.encode(c, np.full(10, c, np.float32)) for c in (0, 1, 2)}
    assert channel.reveal(messages[1]) is None  # the server cannot read one update
    # Only two of the three encoded messages arrive: the error against "the plaintext sum" is
    # not reported, because the reference sum covers a different set of clients.
    partial = channel.aggregate({c: messages[c] for c in (0, 2)})
    np.testing.assert_allclose(partial.total, 2.0, atol=partial.stats["error_bound"])
    assert "max_abs_error" not in partial.stats
    channel.begin_round(ctx)
    messages = {c: channel.encode(c, np.full(10, c, np.float32)) for c in (0, 1, 2)}
    full = channel.aggregate(messages)
    assert full.stats["max_abs_error"] == pytest.approx(np.abs(full.total - 3.0).max())
    assert channel.history == [partial.stats, full.stats]


def test_the_server_transcript_holds_no_single_update() -> None:
    import torch

    from fedbench.config import parse_experiment
    from fedbench.fl.pipeline import Pipeline
    from fedbench.fl.simulation import Simulation
    from fedbench.fl.threat import ThreatModel
    from fedbench.fl.transcript import Transcript
    from fedbench.fl.views import ViewKind
    from fedbench.harness.build import build_data, model_factory
    from fedbench.registry import DEFENSES

    cfg = parse_experiment({"model": "logreg", "fl": {"num_clients": 3, "rounds": 1}})
    streams = Streams(cfg.seed)
    data = build_data(cfg, streams)
    defense = DEFENSES.create("ckks", {"preset": "n4096"})
    pipeline = Pipeline([("ckks", defense)])
    transcript = Transcript(rounds=1, keep_rounds=(0,))
    Simulation(model_factory=model_factory(cfg, data, streams), data=data, fl=cfg.fl,
               pipeline=pipeline, streams=streams, transcript=transcript).run()
    assert ViewKind.CLIENT_UPDATE not in ThreatModel(channel=pipeline.channel).open_views()
    assert transcript.rounds[0].client_updates is None
    with pytest.raises(PermissionError, match="hides single client updates"):
        transcript.client_update_view(0)
    aggregate = transcript.aggregate_view(0)
    assert aggregate.contributors == (0, 1, 2) and torch.count_nonzero(aggregate.aggregate) > 0
    assert transcript.rounds[0].upload_bytes[0] > 2 * 4096 * 8  # a ciphertext, not 4·dim bytes
