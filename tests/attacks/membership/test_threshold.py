"""Confidence and entropy thresholds: the formulas, and success on an overfitted target."""

from __future__ import annotations

import numpy as np
import torch
from membership_target import Target

from fedbench.attacks.membership.threshold import modified_entropy, prediction_entropy
from fedbench.metrics.mia import auc
from fedbench.registry import ATTACKS


def test_modified_entropy_matches_song_and_mittal() -> None:
    logits = torch.randn(40, 5, dtype=torch.float64)
    y = torch.randint(0, 5, (40,))
    p = torch.softmax(logits, -1).numpy()
    expected = []
    for row, label in zip(p, y.numpy(), strict=True):
        value = -(1 - row[label]) * np.log(row[label])
        value -= sum(row[j] * np.log(1 - row[j]) for j in range(5) if j != label)
        expected.append(value)
    np.testing.assert_allclose(modified_entropy(logits, y).numpy(), expected, rtol=1e-10)
    plain = -(p * np.log(p)).sum(1)
    np.testing.assert_allclose(prediction_entropy(logits).numpy(), plain, rtol=1e-10)


def test_modified_entropy_separates_right_from_wrong_confident_predictions() -> None:
    logits = torch.tensor([[8.0, 0.0, 0.0], [8.0, 0.0, 0.0]])
    right, wrong = modified_entropy(logits, torch.tensor([0, 1]))
    # Plain entropy is the same for both rows; the label-aware version is not.
    assert right < 0.01 < 1.0 < wrong


def test_confidence_and_entropy_find_members(overfit_target: Target) -> None:
    view = overfit_target.sim.transcript.final_model_view()
    for name, params in (("confidence", {}), ("entropy", {}), ("entropy", {"modified": False})):
        scores = ATTACKS.create(name, params).run(view, overfit_target.knowledge).scores
        assert scores is not None and np.isfinite(scores).all()
        assert auc(scores, overfit_target.membership) > 0.55, (name, params)
