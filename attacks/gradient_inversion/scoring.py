"""Score reconstructions against the private examples (the only consumer of ground truth).

Reconstructions come back in no particular order, so each is first matched to one true example
with the Hungarian algorithm (``scipy.optimize.linear_sum_assignment`` on the pixel MSE); MSE,
PSNR and SSIM (:mod:`fedbench.metrics.image`) are then averaged over the matched pairs. Labels
are compared as multisets: label recovery finds which classes occur how often, not which image
carries which. LPIPS is reported only when the ``lpips`` package and its AlexNet weights are on
disk; otherwise its value is None and the note says it was skipped.

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
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from fedbench.metrics.base import Metric
from fedbench.metrics.image import ImageMetric, mse, psnr, ssim
from fedbench.metrics.intervals import bootstrap_mean

LPIPS_SKIPPED = "skipped: LPIPS weights not available offline"


def match(reconstruction: torch.Tensor, truth: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (reconstruction index, truth index) minimising the total pixel MSE.

    With unequal counts only min(len(reconstruction), len(truth)) pairs are formed.
    """
    rec = reconstruction.detach().cpu().double().flatten(1)
    ref = truth.detach().cpu().double().flatten(1)
    if rec.shape[1] != ref.shape[1]:
        raise ValueError(
            f"reconstructions have {rec.shape[1]} values each, true examples {ref.shape[1]}"
        )
    cost = torch.cdist(rec, ref).pow(2).numpy() / rec.shape[1]
    rows, cols = linear_sum_assignment(cost)
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
    reconstruction: torch.Tensor, truth_x: torch.Tensor, *, data_kind: str
) -> tuple[torch.Tensor, list[float]]:
    """Reconstructions reordered to match ``truth_x``, and each one's PSNR.

    Used by the figures: row i of the result sits under true example i. True examples without a
    reconstruction get a NaN image and a NaN PSNR.
    """
    rec, ref, data_range = _prepared(reconstruction, truth_x, data_kind)
    rows, cols = match(rec, ref)
    ordered = torch.full_like(ref, float("nan"))
    values = [float("nan")] * len(ref)
    for r, c in zip(rows, cols, strict=True):
        ordered[c] = rec[r]
        values[c] = psnr(rec[r], ref[c], data_range=data_range)
    return ordered, values
