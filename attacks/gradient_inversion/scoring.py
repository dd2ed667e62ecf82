"""Score reconstructions against the private examples (the only consumer of ground truth).

Reconstructions come back in no particular order, so each is first matched to one true example
with the Hungarian algorithm (``scipy.optimize.linear_sum_assignment`` on the pixel MSE); MSE,
PSNR and SSIM (:mod:`fedbench.metrics.image`) are then averaged over the matched pairs. Labels
are compared as multisets: label recovery finds which classes occur how often, not which image
carries which. LPIPS is reported only when the ``lpips`` package and its AlexNet weights are on
disk; otherwise its value is None and the note says it was skipped.

Attacks that recover some inputs exactly and others not at all (imprint) are matched on the
*log* of each pair's MSE instead (``match(..., cost="log_mse")``, the same as maximising the
summed per-pair PSNR): on the summed MSE, one garbage reconstruction far from every image can
make it cheaper to move an exact recovery onto the wrong image, and the exact recovery is then
not counted. :func:`exact_recovery` scores such attacks by the fraction of inputs recovered
above :data:`EXACT_PSNR` dB.

Example:
    >>> import torch
    >>> truth = torch.rand(3, 1, 8, 8)
    >>> rows, cols = match(truth[[2, 0, 1]], truth)
    >>> cols.tolist()
    [2, 0, 1]
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from fedbench.metrics.base import Metric
from fedbench.metrics.image import ImageMetric, mse, psnr, ssim
from fedbench.metrics.intervals import bootstrap_mean, wilson

LPIPS_SKIPPED = "skipped: LPIPS weights not available offline"
#: A reconstruction above this PSNR (dB) counts as an exact recovery (float rounding only).
EXACT_PSNR = 60.0
#: Per-pair MSE floor: PSNR is capped at 10·log10(1/1e-12) = 120 dB, so an exact recovery (MSE
#: of float rounding, or 0) gets a finite PSNR and means over images stay finite.
MSE_FLOOR = 1e-12

MatchCost = Literal["mse", "log_mse"]


def _flat_pair(
    reconstruction: torch.Tensor, truth: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    rec = reconstruction.detach().cpu().double().flatten(1)
    ref = truth.detach().cpu().double().flatten(1)
    if rec.shape[1] != ref.shape[1]:
        raise ValueError(
            f"reconstructions have {rec.shape[1]} values each, true examples {ref.shape[1]}"
        )
    return rec, ref


def pairwise_mse(reconstruction: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """The (reconstructions × true examples) matrix of per-pair pixel MSE, in float64.

    Exact differences, one reconstruction at a time, not cdist's ‖a‖² + ‖b‖² − 2ab: that
    expansion rounds an exact recovery's MSE to ~1e-16·‖x‖², which a log-MSE cost cannot
    tell apart from a merely good one.
    """
    rec, ref = _flat_pair(reconstruction, truth)
    out = torch.empty(len(rec), len(ref), dtype=torch.float64)
    for i, row in enumerate(rec):
        out[i] = (ref - row).pow(2).mean(1)
    return out.numpy()


def match(
    reconstruction: torch.Tensor, truth: torch.Tensor, *, cost: MatchCost = "mse"
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (reconstruction index, truth index) minimising the total pixel MSE, or with
    ``cost="log_mse"`` the total log-MSE (floored at :data:`MSE_FLOOR`; see the module note).

    With unequal counts only min(len(reconstruction), len(truth)) pairs are formed.
    """
    if cost == "log_mse":
        costs = np.log(np.maximum(pairwise_mse(reconstruction, truth), MSE_FLOOR))
    else:
        rec, ref = _flat_pair(reconstruction, truth)
        costs = torch.cdist(rec, ref).pow(2).numpy() / rec.shape[1]
    rows, cols = linear_sum_assignment(costs)
    return rows, cols


def label_accuracy(recovered: torch.Tensor, truth: torch.Tensor) -> float:
    """Share of the true labels recovered, counted as multisets (order-free)."""
    if len(truth) == 0:
        raise ValueError("no true labels to compare with")
    found = Counter(recovered.tolist())
    wanted = Counter(truth.tolist())
    return sum(min(found[c], n) for c, n in wanted.items()) / len(truth)


def _lpips_weights_present() -> bool:
    if importlib.util.find_spec("lpips") is None:
        return False
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    return any(checkpoints.glob("alexnet-*.pth"))


def lpips_metric(reconstruction: torch.Tensor, truth: torch.Tensor) -> Metric:
    """Mean LPIPS (AlexNet) over matched pairs, or None with a note when weights are absent."""
    if not _lpips_weights_present():
        return Metric("lpips", None, True, kind="privacy", note=LPIPS_SKIPPED)
    if reconstruction.dim() != 4 or reconstruction.shape[1] != 3:
        return Metric("lpips", None, True, kind="privacy", note="skipped: LPIPS needs RGB images")
    import lpips  # optional; only imported when its weights are on disk

    net = lpips.LPIPS(net="alex", verbose=False)
    with torch.no_grad():  # LPIPS expects images in [-1, 1]
        value = net(reconstruction.float() * 2 - 1, truth.float() * 2 - 1).mean()
    return Metric("lpips", float(value), True, kind="privacy")


def _prepared(
    reconstruction: torch.Tensor, truth_x: torch.Tensor, data_kind: str
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Both as CPU float64; images clipped to [0, 1]; NaNs (a diverged attack) scored as 0."""
    rec = torch.nan_to_num(reconstruction.detach().cpu().double(), nan=0.0)
    ref = truth_x.detach().cpu().double()
    if data_kind == "image":
        return rec.clamp(0, 1), ref, 1.0
    return rec, ref, float(ref.max() - ref.min()) or 1.0


def _mean_over_pairs(
    measure: ImageMetric, rec: torch.Tensor, ref: torch.Tensor, data_range: float
) -> float:
    values = [measure(r, t, data_range=data_range) for r, t in zip(rec, ref, strict=True)]
    return float(np.mean(values))


def score_reconstruction(
    reconstruction: torch.Tensor,
    labels: torch.Tensor | None,
    truth_x: torch.Tensor,
    truth_y: torch.Tensor,
    *,
    data_kind: str,
) -> list[Metric]:
    """Privacy metrics of a reconstruction against the private examples.

    Args:
        reconstruction: Reconstructed inputs (N, ...), any order.
        labels: Recovered labels (N,), or None when the attack recovers none.
        truth_x: The private inputs behind the attacked update (M, ...).
        truth_y: Their labels (M,).
        data_kind: "image" (values in [0, 1]; reconstructions are clipped to it) or "tabular"
            (PSNR uses the range of the true values; SSIM is not defined).

    Returns:
        mse, psnr (mean over matched pairs), psnr_max (best single image), ssim, label_accuracy,
        lpips, images_matched.
    """
    rec, ref, data_range = _prepared(reconstruction, truth_x, data_kind)
    rows, cols = match(rec, ref)
    rec, ref = rec[rows], ref[cols]
    per_image_psnr = [psnr(r, t, data_range=data_range) for r, t in zip(rec, ref, strict=True)]
    missing = len(truth_x) - len(rows)
    note = f"{missing} true examples had no reconstruction" if missing else ""
    metrics = [
        mse.metric(_mean_over_pairs(mse, rec, ref, data_range), note=note),
        psnr.metric(float(np.mean(per_image_psnr)), note=note,
                    interval=bootstrap_mean(np.array(per_image_psnr))),
        Metric("psnr_max", float(np.max(per_image_psnr)), False, kind="privacy", unit="dB",
               note="best-recovered single example"),
    ]
    if data_kind == "image":
        metrics.append(ssim.metric(_mean_over_pairs(ssim, rec, ref, data_range), note=note))
        metrics.append(lpips_metric(rec.float(), ref.float()))
    else:
        metrics.append(ssim.metric(None, note="not an image"))
        metrics.append(Metric("lpips", None, True, kind="privacy", note="skipped: not an image"))
    if labels is None:
        metrics.append(Metric("label_accuracy", None, False, kind="privacy",
                              note="the attack recovers no labels"))
    else:
        metrics.append(Metric("label_accuracy", label_accuracy(labels, truth_y), False,
                              kind="privacy", note="multiset overlap with the true labels"))
    metrics.append(Metric("images_matched", float(len(rows)), None, kind="info"))
    metrics.append(failure_baseline(truth_x, data_kind))
    return metrics


def failure_baseline(truth_x: torch.Tensor, data_kind: str) -> Metric:
    """The PSNR a reconstruction that learnt nothing gets: a seeded uniform-random input
    against each true example (the mean). A PSNR near it is a failed attack, not a number to
    compare; figures draw it as the "attack fails" line."""
    _, ref, data_range = _prepared(truth_x, truth_x, data_kind)
    low = ref.amin() if data_kind != "image" else torch.zeros(())
    noise = low + data_range * torch.rand(ref.shape, generator=torch.Generator().manual_seed(0),
                                          dtype=ref.dtype)
    values = [psnr(r, t, data_range=data_range) for r, t in zip(noise, ref, strict=True)]
    return Metric("psnr_failure_baseline", float(np.mean(values)), None, kind="info",
                  unit="dB", note="a uniform-random input against the true examples")


def per_image_psnr(
    reconstruction: torch.Tensor, truth_x: torch.Tensor, *, data_kind: str,
    cost: MatchCost = "mse",
) -> tuple[torch.Tensor, list[float]]:
    """Reconstructions reordered to match ``truth_x``, and each one's PSNR.

    Used by the figures: row i of the result sits under true example i. True examples without a
    reconstruction get a NaN image and a NaN PSNR. ``cost`` as in :func:`match`.
    """
    rec, ref, data_range = _prepared(reconstruction, truth_x, data_kind)
    rows, cols = match(rec, ref, cost=cost)
    ordered = torch.full_like(ref, float("nan"))
    values = [float("nan")] * len(ref)
    for r, c in zip(rows, cols, strict=True):
        ordered[c] = rec[r]
        values[c] = psnr(rec[r], ref[c], data_range=data_range)
    return ordered, values


@dataclass(frozen=True)
class ExactRecovery:
    """Per-input PSNR of an assignment on log-MSE, and which inputs were recovered exactly.

    Attributes:
        psnr: One value per true input (dB, capped at 120), NaN where no reconstruction was
            assigned to it (fewer reconstructions than inputs).
        exact: Whether each true input's reconstruction exceeds the threshold.
        reconstructions: How many reconstructions there were.
        threshold_db: The PSNR above which a recovery counts as exact.
    """

    psnr: np.ndarray
    exact: np.ndarray
    reconstructions: int
    threshold_db: float = EXACT_PSNR

    @property
    def fraction(self) -> float:
        """Share of the true inputs recovered exactly."""
        return float(self.exact.mean()) if len(self.exact) else 0.0


def exact_recovery(
    reconstruction: torch.Tensor,
    truth_x: torch.Tensor,
    *,
    data_kind: str = "image",
    threshold_db: float = EXACT_PSNR,
) -> ExactRecovery:
    """Match on log-MSE and count the inputs whose reconstruction is above ``threshold_db``.

    Every true input is counted once: an input without a reconstruction, or whose assigned one
    is below the threshold, is not recovered.
    """
    rec, ref, data_range = _prepared(reconstruction, truth_x, data_kind)
    values = np.full(len(ref), np.nan)
    if len(rec):
        errors = np.maximum(pairwise_mse(rec, ref), MSE_FLOOR)
        rows, cols = linear_sum_assignment(np.log(errors))
        values[cols] = 10 * np.log10(data_range**2 / errors[rows, cols])
    exact = np.nan_to_num(values, nan=-np.inf) > threshold_db
    return ExactRecovery(psnr=values, exact=exact, reconstructions=len(rec),
                         threshold_db=threshold_db)


def exact_recovery_metrics(recovery: ExactRecovery, *, note: str = "") -> list[Metric]:
    """exact_recovery (share of inputs above the threshold, Wilson interval), psnr (mean
    over the inputs that got a reconstruction, capped per input at 120 dB, bootstrap interval),
    psnr_max, and the counts."""
    matched = recovery.psnr[~np.isnan(recovery.psnr)]
    inputs = len(recovery.exact)
    missing = inputs - len(matched)
    psnr_note = "; ".join(p for p in (
        note, f"{missing} true examples had no reconstruction" if missing else "",
        "per input capped at 120 dB",
    ) if p)
    return [
        Metric("exact_recovery", recovery.fraction, False, kind="privacy",
               note=f"share of inputs above {recovery.threshold_db:g} dB (log-MSE "
                    "assignment; Wilson treats the inputs as independent)",
               interval=wilson(int(recovery.exact.sum()), inputs)),
        psnr.metric(float(matched.mean()) if len(matched) else None,
                    note=psnr_note if len(matched) else "no reconstruction",
                    interval=bootstrap_mean(matched)),
        Metric("psnr_max", float(matched.max()) if len(matched) else None, False,
               kind="privacy", unit="dB", note="best-recovered single example"),
        Metric("images_recovered", float(recovery.exact.sum()), None, kind="info"),
        Metric("images_matched", float(len(matched)), None, kind="info"),
        Metric("reconstructions", float(recovery.reconstructions), None, kind="info"),
    ]
