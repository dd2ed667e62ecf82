"""fedbench.metrics.intervals against closed forms and scipy: Hanley–McNeil's standard error of
an AUC, coverage on scores of known AUC, scipy's Wilson and t intervals, and the ROC-curve
TPR@FPR of fedbench.metrics.mia."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from fedbench.metrics.intervals import (
    bootstrap_mean,
    bootstrap_median,
    mean_interval,
    rank_auc,
    rank_tpr_at_fpr,
    stratified_bootstrap,
    wilson,
)
from fedbench.metrics.mia import tpr_at_fpr


def _scores(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Members ~ N(shift, 1), non-members ~ N(0, 1): AUC = Φ(shift/√2)."""
    members = rng.normal(shift, 1.0, n)
    others = rng.normal(0.0, 1.0, n)
    return np.concatenate([members, others]), np.concatenate([np.ones(n), np.zeros(n)])


def test_rank_auc_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 200).astype(float)  # many ties
    membership = rng.integers(0, 2, 200)
    assert rank_auc(scores, membership) == pytest.approx(roc_auc_score(membership, scores))


@pytest.mark.parametrize("target", [0.001, 0.01, 0.1, 0.5])
def test_rank_tpr_at_fpr_equals_the_roc_curve(target: float) -> None:
    rng = np.random.default_rng(1)
    for trial in range(20):
        scores, membership = _scores(rng, 500, 0.5)
        if trial % 2:
            scores = np.round(scores, 1)  # ties
        assert rank_tpr_at_fpr(scores, membership, target) == pytest.approx(
            tpr_at_fpr(scores, membership, target)
        )


def test_bootstrap_auc_width_matches_hanley_mcneil() -> None:
    rng = np.random.default_rng(2)
    n, shift = 400, 0.8
    scores, membership = _scores(rng, n, shift)
    interval = stratified_bootstrap(rank_auc, scores, membership)
    assert interval is not None
    a = rank_auc(scores, membership)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = math.sqrt((a * (1 - a) + (n - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / (n * n))
    assert (interval.high - interval.low) == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert interval.contains(a)


def test_bootstrap_auc_covers_the_true_auc() -> None:
    rng = np.random.default_rng(3)
    shift = 0.5
    true_auc = float(stats.norm.cdf(shift / math.sqrt(2)))
    covered = 0
    trials = 100
    for _ in range(trials):
        scores, membership = _scores(rng, 150, shift)
        interval = stratified_bootstrap(rank_auc, scores, membership, resamples=300)
        assert interval is not None
        covered += interval.contains(true_auc)
    assert 0.88 <= covered / trials <= 1.0  # nominal 95%; binomial sd over 100 trials ≈ 2%


def test_bootstrap_needs_two_of_each_class() -> None:
    assert stratified_bootstrap(rank_auc, np.arange(3.0), np.array([1, 0, 0])) is None


@pytest.mark.parametrize("successes, trials", [(0, 50), (17, 50), (940, 1000), (1000, 1000)])
def test_wilson_equals_scipy(successes: int, trials: int) -> None:
    interval = wilson(successes, trials)
    reference = stats.binomtest(successes, trials).proportion_ci(method="wilson")
    assert interval is not None
    assert (interval.low, interval.high) == pytest.approx((reference.low, reference.high))


def test_mean_interval_equals_scipy_t() -> None:
    values = np.array([0.55, 0.58, 0.61, 0.57])
    interval = mean_interval(values)
    low, high = stats.t.interval(0.95, 3, loc=values.mean(), scale=stats.sem(values))
    assert interval is not None and (interval.low, interval.high) == pytest.approx((low, high))
    assert mean_interval(values[:1]) is None


def test_bootstrap_mean_and_median_cover_their_statistic() -> None:
    values = np.random.default_rng(4).normal(20.0, 3.0, 64)
    mean = bootstrap_mean(values)
    assert mean is not None and mean.contains(float(values.mean()))
    assert mean.high - mean.low == pytest.approx(2 * 1.96 * values.std(ddof=1) / 8, rel=0.2)
    median = bootstrap_median(values)
    assert median is not None and median.contains(float(np.median(values)))
    # An exact reconstruction (infinite PSNR) has no finite interval.
    assert bootstrap_mean(np.array([30.0, math.inf])) is None


@pytest.mark.parametrize("ours, statistic", [(bootstrap_mean, np.mean),
                                             (bootstrap_median, np.median)])
def test_percentile_bootstraps_agree_with_scipy(ours, statistic) -> None:
    # Different resampling streams: the endpoints agree to Monte-Carlo error, not exactly.
    values = np.random.default_rng(5).normal(25.0, 4.0, 40)
    interval = ours(values, resamples=4000)
    reference = stats.bootstrap((values,), statistic, n_resamples=4000, method="percentile",
                                random_state=1).confidence_interval
    assert interval is not None
    spread = reference.high - reference.low
    assert interval.low == pytest.approx(reference.low, abs=0.1 * spread)
    assert interval.high == pytest.approx(reference.high, abs=0.1 * spread)
