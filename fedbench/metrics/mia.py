"""Membership-inference metrics from membership scores (higher score = "member").

Thin wrappers over scikit-learn's ROC utilities. A TPR at an FPR below 1/#non-members cannot be
measured from the sample and is reported as missing, not as a number.

Example:
    >>> import numpy as np
    >>> scores = np.array([0.9, 0.8, 0.3, 0.1])
    >>> membership = np.array([1, 0, 1, 0])
    >>> auc(scores, membership), balanced_accuracy(scores, membership)
    (0.75, 0.75)
    >>> tpr_at_fpr(scores, membership, 0.001) is None  # 2 non-members: below 1/2 unmeasurable
    True
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from fedbench.metrics.base import Metric
from fedbench.metrics.intervals import rank_auc, rank_tpr_at_fpr, stratified_bootstrap


@dataclass(frozen=True)
class RocCurve:
    """An ROC curve as scikit-learn computes it (thresholds in decreasing order).

    Attributes:
        fpr: False-positive rates, from 0 to 1.
        tpr: True-positive rates, from 0 to 1.
        thresholds: Score thresholds (``score >= threshold`` means "member").
        negatives: Number of non-members (the FPR resolution is 1/negatives).
        positives: Number of members.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    negatives: int
    positives: int


def _check(scores: np.ndarray, membership: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    membership = np.asarray(membership).astype(int)
    if scores.shape != membership.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and membership {membership.shape} must be 1-D")
    if not np.isfinite(scores).all():
        raise ValueError("membership scores contain NaN or Inf")
    if set(np.unique(membership)) != {0, 1}:
        raise ValueError("membership must contain both members (1) and non-members (0)")
    return scores, membership


def roc(scores: np.ndarray, membership: np.ndarray) -> RocCurve:
    """The full ROC curve (every threshold kept, so low-FPR points are exact)."""
    s, m = _check(scores, membership)
    fpr, tpr, thresholds = roc_curve(m, s, drop_intermediate=False)
    return RocCurve(fpr, tpr, thresholds, int((m == 0).sum()), int((m == 1).sum()))


def auc(scores: np.ndarray, membership: np.ndarray) -> float:
    """Area under the ROC curve."""
    s, m = _check(scores, membership)
    return float(roc_auc_score(m, s))


def advantage(scores: np.ndarray, membership: np.ndarray) -> float:
    """Membership advantage max_t (TPR − FPR) (Yeom et al. 2018)."""
    curve = roc(scores, membership)
    return float(np.max(curve.tpr - curve.fpr))


def balanced_accuracy(scores: np.ndarray, membership: np.ndarray) -> float:
    """Best balanced accuracy (TPR + TNR)/2 over all thresholds, i.e. (1 + advantage)/2.

    Balanced accuracy is what scikit-learn's ``balanced_accuracy_score`` gives for the
    predictions ``score >= t``; the attack is credited with its best threshold, as is usual.
    """
    return 0.5 * (1.0 + advantage(scores, membership))


def tpr_at_fpr(scores: np.ndarray, membership: np.ndarray, fpr_target: float) -> float | None:
    """Highest TPR with FPR ≤ ``fpr_target``; None if the target is below 1/#non-members."""
    curve = roc(scores, membership)
    if fpr_target < 1.0 / curve.negatives:
        return None
    return float(np.max(curve.tpr[curve.fpr <= fpr_target]))


def membership_metrics(scores: np.ndarray, membership: np.ndarray) -> list[Metric]:
    """The standard set: AUC, advantage, balanced accuracy, TPR at 0.1% and 1% FPR (attack
    success, so lower is better for the defended system); AUC and the TPRs with their 95%
    stratified-bootstrap intervals over the candidates."""
    s, m = _check(scores, membership)
    negatives = int((m == 0).sum())
    metrics = [
        Metric("mia_auc", auc(scores, membership), higher_is_better=False, kind="privacy",
               interval=stratified_bootstrap(rank_auc, s, m)),
        Metric("mia_advantage", advantage(scores, membership), higher_is_better=False,
               kind="privacy"),
        Metric("mia_balanced_accuracy", balanced_accuracy(scores, membership),
               higher_is_better=False, kind="privacy", note="best threshold"),
    ]
    for target, label in ((0.001, "0.1%"), (0.01, "1%")):
        value = tpr_at_fpr(scores, membership, target)
        note = (
            f"{negatives} non-members" if value is not None
            else f"not measurable: FPR {label} < 1/{negatives} non-members"
        )
        name = f"mia_tpr_at_{label.replace('%', 'pct').replace('.', '_')}_fpr"
        interval = None if value is None else stratified_bootstrap(
            functools.partial(rank_tpr_at_fpr, fpr_target=target), s, m
        )
        metrics.append(Metric(name, value, higher_is_better=False, kind="privacy", note=note,
                              interval=interval))
    return metrics


def plot_roc(curves: Mapping[str, RocCurve], path: Path, *, title: str = "") -> Path:
    """Write ROC curves on log-log axes (the low-FPR regime LiRA argues for) as a PNG.

    The x axis starts at the smallest measurable FPR, 1/#non-members; the dotted diagonal is
    random guessing.

    Args:
        curves: Label -> ROC curve.
        path: Where to write the PNG (parent folders are created).
        title: Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("plot_roc needs at least one curve")
    floor = min(1.0 / c.negatives for c in curves.values())
    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=120)
    for label, curve in curves.items():
        # Points with FPR or TPR 0 cannot be drawn on log axes; clip to the resolution floor.
        ax.plot(np.maximum(curve.fpr, floor), np.maximum(curve.tpr, floor), label=label, lw=1.4)
    ax.plot([floor, 1], [floor, 1], ls=":", color="grey", lw=1, label="chance")
    ax.set(xscale="log", yscale="log", xlim=(floor, 1), ylim=(floor, 1.05),
           xlabel="false-positive rate", ylabel="true-positive rate", title=title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
