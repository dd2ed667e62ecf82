"""Reconstruction grid: true images on top, their matched reconstructions below, PSNR under each.

Drawn with matplotlib's object API on an Agg canvas, so no global backend is switched.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> truth = torch.rand(2, 3, 8, 8)
    >>> path = reconstruction_grid(truth, truth.clone(), [float("inf")] * 2,
    ...                            Path(tempfile.mkdtemp()) / "grid.png", title="demo")
    >>> path.suffix
    '.png'
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MAX_COLUMNS = 16  # larger batches show their first 16 examples


def _as_picture(image: torch.Tensor) -> np.ndarray:
    array = image.detach().cpu().float().clamp(0, 1).numpy()
    array = np.nan_to_num(array, nan=0.0)
    picture: np.ndarray = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    return picture


def _psnr_label(value: float) -> str:
    if math.isnan(value):
        return "no match"
    return "∞ dB" if math.isinf(value) else f"{value:.1f} dB"


def reconstruction_grid(
    truth: torch.Tensor,
    reconstruction: torch.Tensor,
    psnrs: list[float],
    path: Path,
    *,
    title: str = "",
) -> Path:
    """Write the grid PNG and return its path.

    Args:
        truth: True images (N, C, H, W) in [0, 1], C = 1 or 3.
        reconstruction: Reconstructions aligned with ``truth`` (row i matches truth i).
        psnrs: PSNR of each aligned pair (NaN where a true image has no reconstruction).
        path: Output file (parents are created).
        title: Figure title.
    """
    if truth.dim() != 4 or truth.shape[1] not in (1, 3):
        raise ValueError(f"grid needs images shaped (N, 1|3, H, W), got {tuple(truth.shape)}")
    if reconstruction.shape != truth.shape or len(psnrs) != len(truth):
        raise ValueError("truth, reconstruction and psnrs must be aligned")
    count = min(len(truth), MAX_COLUMNS)
    figure = Figure(figsize=(1.3 * count + 0.8, 3.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, count, squeeze=False)
    for i in range(count):
        for row, image in enumerate((truth[i], reconstruction[i])):
            ax = axes[row][i]
            ax.imshow(_as_picture(image), cmap="gray" if image.shape[0] == 1 else None,
                      vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[1][i].set_xlabel(_psnr_label(psnrs[i]), fontsize=8)
    axes[0][0].set_ylabel("true", fontsize=9)
    axes[1][0].set_ylabel("reconstructed", fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
