"""Uncertainty of the numbers fedbench reports: a 95% interval for every value that comes from
finitely many examples.

- Membership attacks: a stratified bootstrap over the candidates (members and non-members
  resampled separately, so every resample has both), 1,000 resamples from a fixed seed.
- Accuracy: the Wilson score interval of a proportion over the test examples.
- A mean over seeds: the t interval of the mean.
- PSNR over the reconstructed images, a timing ratio over rounds: a percentile bootstrap.

Tests hold the AUC bootstrap against the Hanley–McNeil standard error and its coverage on
scores of known AUC, and Wilson against scipy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydantic import ConfigDict
from scipy import stats

LEVEL = 0.95
RESAMPLES = 1000


@dataclass(frozen=True)
class Interval:
    """A two-sided interval of a reported value.

    Attributes:
        low: Lower end.
        high: Upper end.
        method: How it was computed (shown in reports).
    """

    # Records validate it as a field (fedbench.harness.schema): an unknown key is refused there.
    __pydantic_config__ = ConfigDict(extra="forbid")

    low: float
    high: float
    method: str

    def overlaps(self, other: Interval) -> bool:
        """Whether the two intervals share a point."""
        return self.low <= other.high and other.low <= self.high

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies inside."""
        return self.low <= value <= self.high


def stratified_bootstrap(
    statistic: Callable[[np.ndarray, np.ndarray], float | None],
    scores: np.ndarray,
    membership: np.ndarray,
    *,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> Interval | None:
    """The percentile interval of ``statistic(scores, membership)`` over resamples that draw
    members and non-members separately with replacement; None when it is not measurable."""
    rng = np.random.default_rng(seed)
    members = np.flatnonzero(membership == 1)
    others = np.flatnonzero(membership == 0)
    if len(members) < 2 or len(others) < 2:
        return None
    values = []
    for _ in range(resamples):
        pick = np.concatenate([rng.choice(members, len(members)), rng.choice(others, len(others))])
        value = statistic(scores[pick], membership[pick])
        if value is not None:
            values.append(value)
    if len(values) < resamples // 2:
        return None
    low, high = np.quantile(values, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Interval(float(low), float(high), f"stratified bootstrap, {resamples} resamples")


def rank_auc(scores: np.ndarray, membership: np.ndarray) -> float:
    """AUC by the Mann–Whitney rank sum (ties counted half), the fast form for resampling."""
    ranks = stats.rankdata(scores)
    positives = membership == 1
    n1, n0 = int(positives.sum()), int((~positives).sum())
    return float((ranks[positives].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def rank_tpr_at_fpr(scores: np.ndarray, membership: np.ndarray, fpr_target: float) -> \
        float | None:
    """The highest TPR at FPR ≤ ``fpr_target`` without building the ROC curve: "member" means
    a score above the (k+1)-th highest non-member score, k = ⌊target·#non-members⌋. Equal to
    :func:`fedbench.metrics.mia.tpr_at_fpr` (tested), fast enough to resample."""
    negatives = np.sort(scores[membership == 0])[::-1]
    positives = scores[membership == 1]
    if fpr_target < 1.0 / len(negatives):
        return None
    allowed = math.floor(fpr_target * len(negatives) + 1e-9)
    if allowed >= len(negatives):
        return 1.0
    return float((positives > negatives[allowed]).mean())


def wilson(successes: int, trials: int) -> Interval | None:
    """The Wilson score interval of a proportion (e.g. accuracy over the test examples)."""
    if trials <= 0:
        return None
    z = stats.norm.ppf((1 + LEVEL) / 2)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    half /= 1 + z * z / trials
    return Interval(max(0.0, centre - half), min(1.0, centre + half), f"Wilson, n={trials}")


def mean_interval(values: np.ndarray) -> Interval | None:
    """The t interval of the mean of ``values`` (e.g. one value per seed)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return None
    mean = float(values.mean())
    half = float(stats.t.ppf((1 + LEVEL) / 2, len(values) - 1) * values.std(ddof=1)
                 / math.sqrt(len(values)))
    return Interval(mean - half, mean + half, f"t interval over {len(values)} seeds")


def bootstrap_median(values: np.ndarray, *, seed: int = 0, resamples: int = RESAMPLES) -> \
        Interval | None:
    """The percentile bootstrap interval of the median of ``values`` (e.g. one timing ratio
    per round: how much the rounds of one run disagree)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or not np.isfinite(values).all():
        return None
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(values, (resamples, len(values))), axis=1)
    low, high = np.quantile(medians, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Interval(float(low), float(high), f"bootstrap median over {len(values)} rounds")


def bootstrap_mean(values: np.ndarray, *, seed: int = 0, resamples: int = RESAMPLES) -> \
        Interval | None:
    """The percentile bootstrap interval of the mean of per-item ``values`` (e.g. PSNR per
    reconstructed image); None for fewer than two items or an infinite one (an exact
    reconstruction has infinite PSNR, and so has the mean)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or not np.isfinite(values).all():
        return None
    rng = np.random.default_rng(seed)
    means = rng.choice(values, (resamples, len(values))).mean(axis=1)
    low, high = np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Interval(float(low), float(high), f"bootstrap over {len(values)} items")
