"""Membership-inference metrics from membership scores (higher score = "member").

Thin wrappers over scikit-learn's ROC utilities. A TPR at an FPR below 1/#non-members cannot be
measured from the sample and is reported as missing, not as a number.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from fedbench.metrics.base import Metric


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


def auc(scores: np.ndarray, membership: np.ndarray) -> float:
    """Area under the ROC curve."""
    s, m = _check(scores, membership)
    return float(roc_auc_score(m, s))


def advantage(scores: np.ndarray, membership: np.ndarray) -> float:
    """Membership advantage max_t (TPR − FPR) (Yeom et al. 2018)."""
    s, m = _check(scores, membership)
    fpr, tpr, _ = roc_curve(m, s)
    return float(np.max(tpr - fpr))


def tpr_at_fpr(scores: np.ndarray, membership: np.ndarray, fpr_target: float) -> float | None:
    """Highest TPR with FPR ≤ ``fpr_target``; None if the target is below 1/#non-members."""
    s, m = _check(scores, membership)
    negatives = int((m == 0).sum())
    if fpr_target < 1.0 / negatives:
        return None
    fpr, tpr, _ = roc_curve(m, s)
    return float(np.max(tpr[fpr <= fpr_target]))


def membership_metrics(scores: np.ndarray, membership: np.ndarray) -> list[Metric]:
    """The standard set: AUC, advantage, TPR at 0.1% and 1% FPR (attack success, so lower is
    better for the defended system)."""
    negatives = int((np.asarray(membership) == 0).sum())
    metrics = [
        Metric("mia_auc", auc(scores, membership), higher_is_better=False, kind="privacy"),
        Metric("mia_advantage", advantage(scores, membership), higher_is_better=False,
               kind="privacy"),
    ]
    for target, label in ((0.001, "0.1%"), (0.01, "1%")):
        value = tpr_at_fpr(scores, membership, target)
        note = (
            f"{negatives} non-members" if value is not None
            else f"not measurable: FPR {label} < 1/{negatives} non-members"
        )
        name = f"mia_tpr_at_{label.replace('%', 'pct').replace('.', '_')}_fpr"
        metrics.append(Metric(name, value, higher_is_better=False, kind="privacy", note=note))
    return metrics
