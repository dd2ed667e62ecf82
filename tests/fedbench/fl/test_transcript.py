"""Tests for fedbench.fl.transcript: which views are open and what is kept."""

from __future__ import annotations

import pytest
import torch

from fedbench.fl.transcript import RoundRecord, Transcript, ViewKind


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
        client_updates={3: torch.ones(2), 4: torch.zeros(2)},
    )


def test_hidden_channel_closes_client_view_and_drops_updates() -> None:
    transcript = Transcript(rounds=2, keep_rounds={0}, reveals_client_updates=False)
    transcript.add_round(_record(0))
    assert ViewKind.CLIENT_UPDATE not in transcript.open_views()
    assert transcript.rounds[0].client_updates is None
    with pytest.raises(PermissionError, match="hides single client updates"):
        transcript.client_update_view(0)
    assert transcript.aggregate_view(0).num_examples == 30


def test_plaintext_client_view() -> None:
    transcript = Transcript(rounds=1, keep_rounds={0}, reveals_client_updates=True)
    transcript.add_round(_record(0))
    assert transcript.open_views() == set(ViewKind)
    view = transcript.client_update_view(0, 4)
    assert view.client_id == 4 and view.num_examples == 20 and view.weight == pytest.approx(4 / 3)
    assert transcript.client_update_view(0).client_id == 3  # first contributor by default
    with pytest.raises(KeyError, match="client 9 did not contribute"):
        transcript.client_update_view(0, 9)


def test_rounds_not_kept_hold_no_vectors() -> None:
    transcript = Transcript(rounds=3, keep_rounds={-1}, reveals_client_updates=True)
    for t in range(3):
        transcript.add_round(_record(t))
    assert [r.params is not None for r in transcript.rounds] == [False, False, True]
    with pytest.raises(KeyError, match="round 0 was not kept"):
        transcript.aggregate_view(0)
    assert transcript.aggregate_view(-1).round == 2


def test_model_sequence_only_when_asked() -> None:
    plain = Transcript(rounds=2, reveals_client_updates=True)
    seq = Transcript(rounds=2, keep_model_sequence=True, reveals_client_updates=True)
    for t in range(3):
        plain.record_params(torch.full((2,), float(t)))
        seq.record_params(torch.full((2,), float(t)))
    assert len(seq.model_sequence_view().params) == 3
    with pytest.raises(KeyError, match="model sequence was not kept"):
        plain.model_sequence_view()
    assert torch.equal(plain.final_model_view().params, torch.full((2,), 2.0))
