"""Shokri et al.'s shadow-model attack."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from membership_target import Target

from fedbench.attacks.membership.shadow import shadow_features
from fedbench.metrics.mia import auc
from fedbench.registry import ATTACKS


def test_features_are_the_sorted_vector_and_the_true_class_signals() -> None:
    logits = torch.tensor([[0.0, 2.0, 1.0]])
    features = shadow_features(logits, torch.tensor([2]))
    p = torch.softmax(logits.double(), -1)[0].numpy()
    np.testing.assert_allclose(features[0, :3], np.sort(p)[::-1])
    assert features[0, 3] == pytest.approx(np.log(p[2]))
    assert features[0, 4] == pytest.approx(np.log(p[2] / (1 - p[2])))
    assert shadow_features(torch.zeros(4, 7, 10), torch.zeros(7, dtype=torch.long)).shape == (
        4, 7, 12)


def test_shadow_attack_finds_members(overfit_target: Target) -> None:
    view = overfit_target.sim.transcript.final_model_view()
    result = ATTACKS.create("shadow").run(view, overfit_target.knowledge)
    assert result.scores is not None
    assert ((result.scores >= 0) & (result.scores <= 1)).all()
    assert auc(result.scores, overfit_target.membership) > 0.55
    with pytest.raises(ValueError, match="even"):
        ATTACKS.create("shadow", {"num_models": 3})
