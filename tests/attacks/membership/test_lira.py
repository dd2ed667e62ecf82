"""LiRA: the Gaussian likelihood-ratio maths, and the attack against an overfitted target."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from membership_target import Target
from scipy import stats

from fedbench.attacks.membership.lira import gaussian_fit, lira_scores
from fedbench.metrics.mia import auc, tpr_at_fpr
from fedbench.registry import ATTACKS


def test_gaussian_fit_per_example_and_pooled() -> None:
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(6, 4, 1))
    mask = np.ones((6, 4), dtype=bool)
    mask[:3, 0] = False  # example 0 has three samples
    mean, std = gaussian_fit(samples, mask, fixed_variance=False)
    np.testing.assert_allclose(mean[0, 0], samples[3:, 0, 0].mean())
    np.testing.assert_allclose(std[0, 0], samples[3:, 0, 0].std(ddof=1))
    np.testing.assert_allclose(std[1, 0], samples[:, 1, 0].std(ddof=1))
    _, pooled = gaussian_fit(samples, mask, fixed_variance=True)
    deviations = [samples[mask[:, i], i, 0] - mean[i, 0] for i in range(4)]
    expected = np.sqrt(sum((d**2).sum() for d in deviations) / sum(len(d) - 1 for d in deviations))
    np.testing.assert_allclose(pooled[:, 0], expected)


def test_online_score_is_the_gaussian_log_likelihood_ratio() -> None:
    rng = np.random.default_rng(1)
    k, n = 8, 5
    reference = rng.normal(size=(k, n, 1))
    in_mask = np.zeros((k, n), dtype=bool)
    in_mask[: k // 2] = True
    reference[in_mask] += 3.0  # IN models are more confident
    target = rng.normal(size=(n, 1)) + 1.5
    scores = lira_scores(target, reference, in_mask, online=True, fixed_variance=False)
    for i in range(n):
        inside, outside = reference[in_mask[:, i], i, 0], reference[~in_mask[:, i], i, 0]
        expected = (stats.norm.logpdf(target[i, 0], inside.mean(), inside.std(ddof=1))
                    - stats.norm.logpdf(target[i, 0], outside.mean(), outside.std(ddof=1)))
        assert scores[i] == pytest.approx(expected)
    offline = lira_scores(target, reference, in_mask, online=False, fixed_variance=False)
    for i in range(n):
        outside = reference[~in_mask[:, i], i, 0]
        assert offline[i] == pytest.approx(
            stats.norm.logcdf(target[i, 0], outside.mean(), outside.std(ddof=1))
        )


def test_examples_without_in_models_borrow_the_average_gap() -> None:
    reference = np.zeros((4, 3, 1))
    reference[:2, :2] = 2.0  # examples 0 and 1: IN models at 2, OUT at 0
    in_mask = np.zeros((4, 3), dtype=bool)
    in_mask[:2, :2] = True  # example 2 is IN nowhere
    reference += np.random.default_rng(0).normal(scale=0.1, size=reference.shape)
    target = np.array([[2.0], [0.0], [2.0]])
    scores = lira_scores(target, reference, in_mask, online=True, fixed_variance=True)
    assert scores[0] > 0 > scores[1]
    assert scores[2] > 0  # its IN mean was estimated as OUT mean + 2


def test_lira_beats_the_loss_threshold_at_low_fpr(overfit_target: Target) -> None:
    view = overfit_target.sim.transcript.final_model_view()
    membership = overfit_target.membership
    lira = ATTACKS.create("lira", {"num_models": 8}).run(view, overfit_target.knowledge)
    loss = ATTACKS.create("loss_threshold").run(view, overfit_target.knowledge)
    assert lira.scores is not None and loss.scores is not None
    assert lira.extras["reference_engine"] in ("vectorized", "cache")
    for fpr in (0.01, 0.02):
        lira_tpr = tpr_at_fpr(lira.scores, membership, fpr)
        loss_tpr = tpr_at_fpr(loss.scores, membership, fpr)
        assert lira_tpr is not None and loss_tpr is not None
        assert lira_tpr > loss_tpr + 0.02, fpr
    assert auc(lira.scores, membership) > auc(loss.scores, membership)


def test_lira_offline_and_mirror_queries_run(overfit_target: Target) -> None:
    view = overfit_target.sim.transcript.final_model_view()
    offline = ATTACKS.create("lira", {"num_models": 4, "online": False, "augment": True})
    result = offline.run(view, overfit_target.knowledge)
    assert result.extras["queries"] == 2
    assert result.scores is not None and np.isfinite(result.scores).all()
    assert auc(result.scores, overfit_target.membership) > 0.55


def test_lira_on_a_target_that_never_saw_the_candidates_is_chance(
    overfit_target: Target,
) -> None:
    # Null control: candidates drawn only from the test split (nobody trained on them), with
    # arbitrary "member" labels. Online LiRA trains its reference models on these candidates,
    # so any leak from its own IN/OUT design into the scores would show up here.
    test = overfit_target.data.test
    rng = np.random.default_rng(0)
    chosen = test.subset(rng.permutation(len(test))[:240])
    knowledge = dataclasses.replace(overfit_target.knowledge, candidates=chosen)
    fake = np.repeat([0, 1], 120)
    view = overfit_target.sim.transcript.final_model_view()
    scores = ATTACKS.create("lira", {"num_models": 8}).run(view, knowledge).scores
    assert scores is not None
    assert abs(auc(scores, fake) - 0.5) < 0.1  # 0.1 ≈ 2.7 standard errors at 120/120


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="even"):
        ATTACKS.create("lira", {"num_models": 3})
    with pytest.raises(ValueError, match="'num_models' = 0: Input should be greater than or"):
        ATTACKS.create("lira", {"num_models": 0, "online": False})
