"""Tests for fedbench.fl.transcript: what is kept, and only what the channel reveals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedbench.defenses.secagg.channel import SecAgg
from fedbench.fl.channel import EncodedUpdate, PlaintextChannel
from fedbench.fl.transcript import RoundRecord, Transcript, model_hash


def _record(round_index: int) -> RoundRecord:
    return RoundRecord(
        round=round_index,
        sampled=(3, 4),
        contributors=(3, 4),
        num_examples={3: 10, 4: 20},
        weights={3: 2 / 3, 4: 4 / 3},
        params=torch.zeros(2),
        aggregate=torch.ones(2),
        next_params=torch.ones(2),
    )


def _messages() -> dict[int, EncodedUpdate]:
    return {c: EncodedUpdate(c, np.full(2, float(c), dtype=np.float32), 8) for c in (3, 4)}


def test_a_hiding_channel_leaves_no_single_update_in_the_transcript() -> None:
    transcript = Transcript(rounds=2, keep_rounds={0})
    transcript.add_round(_record(0), channel=SecAgg().channel, messages=_messages())
    assert transcript.rounds[0].client_updates is None
    with pytest.raises(PermissionError, match="hides single client updates"):
        transcript.client_update_view(0)
    assert transcript.aggregate_view(0).num_examples == 30


def test_the_plaintext_channel_reveals_each_update_as_received() -> None:
    transcript = Transcript(rounds=1, keep_rounds={0})
    transcript.add_round(_record(0), channel=PlaintextChannel(), messages=_messages())
    view = transcript.client_update_view(0, 4)
    assert view.client_id == 4 and view.num_examples == 20 and view.weight == pytest.approx(4 / 3)
    assert torch.equal(view.update, torch.full((2,), 4.0))
    assert transcript.client_update_view(0).client_id == 3  # first contributor by default
    with pytest.raises(KeyError, match="client 9 did not contribute"):
        transcript.client_update_view(0, 9)


def test_rounds_not_kept_hold_no_vectors() -> None:
    transcript = Transcript(rounds=3, keep_rounds={-1})
    for t in range(3):
        transcript.add_round(_record(t), channel=PlaintextChannel(), messages=_messages())
    assert [r.params is not None for r in transcript.rounds] == [False, False, True]
    assert [r.client_updates is not None for r in transcript.rounds] == [False, False, True]
    with pytest.raises(KeyError, match="round 0 was not kept"):
        transcript.aggregate_view(0)
    assert transcript.aggregate_view(-1).round == 2


def test_kept_vectors_are_copies() -> None:
    record = _record(0)
    transcript = Transcript(rounds=1, keep_rounds={0})
    transcript.add_round(record, channel=PlaintextChannel(), messages=_messages())
    params = transcript.aggregate_view(0).params
    params += 1  # an attack that writes into its view must not change what the server saw
    assert torch.equal(transcript.rounds[0].params, torch.ones(2))


def test_model_sequence_only_when_asked() -> None:
    plain = Transcript(rounds=2)
    seq = Transcript(rounds=2, keep_model_sequence=True)
    for t in range(3):
        plain.record_params(torch.full((2,), float(t)))
        seq.record_params(torch.full((2,), float(t)))
    assert len(seq.model_sequence_view().params) == 3
    with pytest.raises(KeyError, match="model sequence was not kept"):
        plain.model_sequence_view()
    assert torch.equal(plain.final_model_view().params, torch.full((2,), 2.0))


def test_model_hash_tells_models_apart() -> None:
    a = torch.arange(10, dtype=torch.float32)
    assert model_hash(a) == model_hash(a.clone())
    b = a.clone()
    b[3] += 1e-6
    assert model_hash(a) != model_hash(b)
