"""MIA metrics against independent references: scipy's Mann–Whitney U, scikit-learn's
balanced accuracy, and brute-force threshold sweeps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import mannwhitneyu
from sklearn.metrics import balanced_accuracy_score

from fedbench.metrics.mia import (
    advantage,
    auc,
    balanced_accuracy,
    membership_metrics,
    plot_roc,
    roc,
    tpr_at_fpr,
)


def _random_case(seed: int, n: int = 300, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    membership = rng.integers(0, 2, n)
    membership[:2] = [0, 1]
    scores = rng.normal(size=n) + 0.7 * membership
    if ties:
        scores = np.round(scores, 1)  # many equal scores
    return scores, membership


def _sweep(scores: np.ndarray, membership: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(TPR, FPR) of "score >= t" for every threshold t, by brute force."""
    thresholds = np.concatenate([np.unique(scores), [np.inf]])
    tpr = np.array([(scores[membership == 1] >= t).mean() for t in thresholds])
    fpr = np.array([(scores[membership == 0] >= t).mean() for t in thresholds])
    return tpr, fpr


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_auc_is_the_mann_whitney_statistic(seed: int, ties: bool) -> None:
    scores, membership = _random_case(seed, ties=ties)
    members, non = scores[membership == 1], scores[membership == 0]
    u = mannwhitneyu(members, non).statistic
    assert auc(scores, membership) == pytest.approx(u / (len(members) * len(non)), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_rates_match_a_brute_force_threshold_sweep(seed: int, ties: bool) -> None:
    scores, membership = _random_case(seed, ties=ties)
    tpr, fpr = _sweep(scores, membership)
    assert advantage(scores, membership) == pytest.approx(np.max(tpr - fpr), abs=1e-12)
    for target in (0.01, 0.05, 0.2):
        assert tpr_at_fpr(scores, membership, target) == pytest.approx(
            np.max(tpr[fpr <= target]), abs=1e-12
        )
    best = max(balanced_accuracy_score(membership, scores >= t) for t in np.unique(scores))
    assert balanced_accuracy(scores, membership) == pytest.approx(best, abs=1e-12)


def test_roc_curve_keeps_every_threshold() -> None:
    scores, membership = _random_case(0)
    curve = roc(scores, membership)
    assert curve.negatives == int((membership == 0).sum())
    assert curve.positives == int((membership == 1).sum())
    assert curve.fpr[0] == 0 and curve.fpr[-1] == 1 and curve.tpr[-1] == 1
    assert np.all(np.diff(curve.fpr) >= 0) and np.all(np.diff(curve.tpr) >= 0)
    assert len(curve.thresholds) == len(np.unique(scores)) + 1


def test_tpr_below_one_over_non_members_is_refused() -> None:
    scores, membership = _random_case(1, n=100)
    negatives = int((membership == 0).sum())
    assert 1 / negatives > 0.01  # so both 0.1% and 1% are below the resolution
    assert tpr_at_fpr(scores, membership, 0.001) is None
    assert tpr_at_fpr(scores, membership, 0.01) is None
    assert tpr_at_fpr(scores, membership, 1.0 / negatives) is not None
    by_name = {m.name: m for m in membership_metrics(scores, membership)}
    for name in ("mia_tpr_at_0_1pct_fpr", "mia_tpr_at_1pct_fpr"):
        assert by_name[name].value is None
        assert by_name[name].note.startswith("not measurable")
        assert str(negatives) in by_name[name].note


def test_membership_metrics_are_attack_success() -> None:
    scores, membership = _random_case(2, n=2000)
    metrics = membership_metrics(scores, membership)
    assert {m.name for m in metrics} == {
        "mia_auc", "mia_advantage", "mia_balanced_accuracy", "mia_tpr_at_0_1pct_fpr",
        "mia_tpr_at_1pct_fpr",
    }
    assert all(m.higher_is_better is False and m.kind == "privacy" for m in metrics)
    by_name = {m.name: m.value for m in metrics}
    assert by_name["mia_balanced_accuracy"] == pytest.approx(
        (1 + float(by_name["mia_advantage"] or 0)) / 2
    )
    assert by_name["mia_tpr_at_0_1pct_fpr"] is not None  # ~1000 non-members resolve 0.1%


@pytest.mark.parametrize(
    ("scores", "membership", "message"),
    [
        ([0.1, np.nan], [0, 1], "NaN"),
        ([0.1, 0.2], [1, 1], "both"),
        ([0.1, 0.2, 0.3], [0, 1], "1-D"),
    ],
)
def test_bad_input_is_refused(scores: list[float], membership: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        auc(np.array(scores), np.array(membership))


def test_plot_roc_writes_a_png(tmp_path: Path) -> None:
    scores, membership = _random_case(3)
    path = plot_roc({"a": roc(scores, membership), "b": roc(-scores, membership)},
                    tmp_path / "sub" / "roc.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000
    with pytest.raises(ValueError, match="at least one"):
        plot_roc({}, tmp_path / "none.png")
