"""The loss threshold, and what every membership attack inherits (scoring, figures, errors)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from membership_target import Target
from torch.nn import functional as F

from fedbench.attack import GroundTruth
from fedbench.fl.params import set_flat
from fedbench.metrics.mia import auc
from fedbench.registry import ATTACKS


def test_scores_are_minus_the_cross_entropy(overfit_target: Target) -> None:
    knowledge = overfit_target.knowledge
    view = overfit_target.sim.transcript.final_model_view()
    scores = ATTACKS.create("loss_threshold").run(view, knowledge).scores
    assert scores is not None
    model = knowledge.model_factory()
    set_flat(model, view.params)
    assert knowledge.candidates is not None
    with torch.no_grad():
        losses = F.cross_entropy(model(knowledge.candidates.x), knowledge.candidates.y,
                                 reduction="none")
    np.testing.assert_allclose(scores, -losses.numpy(), rtol=1e-5, atol=1e-7)
    assert auc(scores, overfit_target.membership) > 0.55


def test_shuffled_membership_gives_chance_auc(overfit_target: Target) -> None:
    view = overfit_target.sim.transcript.final_model_view()
    rng = np.random.default_rng(0)
    for name, params in (("loss_threshold", {}), ("rmia", {"num_models": 1})):
        scores = ATTACKS.create(name, params).run(view, overfit_target.knowledge).scores
        assert scores is not None
        shuffled = [auc(scores, rng.permutation(overfit_target.membership)) for _ in range(50)]
        # Mean of 50 shuffles: standard error ≈ 0.037/√50 ≈ 0.005.
        assert abs(np.mean(shuffled) - 0.5) < 0.02, name
        assert auc(scores, overfit_target.membership) > max(shuffled)


def test_score_reports_metrics_and_figures_draw_the_roc(
    overfit_target: Target, tmp_path: Path
) -> None:
    attack = ATTACKS.create("loss_threshold")
    view = overfit_target.sim.transcript.final_model_view()
    result = attack.run(view, overfit_target.knowledge)
    assert result.scores is not None
    truth = GroundTruth(membership=overfit_target.membership)
    metrics = {m.name: m for m in attack.score(result, truth)}
    assert metrics["mia_auc"].value == pytest.approx(auc(result.scores, overfit_target.membership))
    assert metrics["mia_tpr_at_0_1pct_fpr"].value is None  # 120 non-members cannot resolve it
    assert metrics["mia_tpr_at_1pct_fpr"].value is not None
    paths = attack.figures(result, truth, tmp_path)
    assert len(paths) == 1 and paths[0].suffix == ".png"
    assert paths[0].read_bytes()[:4] == b"\x89PNG"


def test_attacks_need_their_view_and_candidates(overfit_target: Target) -> None:
    attack = ATTACKS.create("loss_threshold")
    with pytest.raises(TypeError, match="final_model"):
        attack.run(overfit_target.sim.transcript.model_sequence_view(), overfit_target.knowledge)
    bare = dataclasses.replace(overfit_target.knowledge, candidates=None)
    with pytest.raises(ValueError, match="candidate"):
        attack.run(overfit_target.sim.transcript.final_model_view(), bare)
    with pytest.raises(ValueError, match="membership"):
        attack.score(attack.run(overfit_target.sim.transcript.final_model_view(),
                                overfit_target.knowledge), GroundTruth())
