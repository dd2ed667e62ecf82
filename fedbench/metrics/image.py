"""Image similarity for scoring reconstructions: thin wrappers over scikit-image.

Each metric is a callable on one pair of arrays shaped (C, H, W) (or any shape for ``mse`` and
``psnr``) and states ``higher_is_better`` **for the defended system** (see
:class:`fedbench.metrics.base.Metric`): a reconstruction close to the private image is bad news
for the defense, so a high PSNR or SSIM is worse and a high MSE is better.

Example:
    >>> import numpy as np
    >>> truth = np.full((1, 8, 8), 0.5)
    >>> round(psnr(truth + 0.1, truth), 6), psnr.higher_is_better
    (20.0, False)
    >>> mse.metric(0.01).higher_is_better
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from fedbench.metrics.base import Metric
from fedbench.metrics.intervals import Interval

ArrayLike = np.ndarray | torch.Tensor


def _as_array(value: ArrayLike) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def _pair(reconstruction: ArrayLike, truth: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    rec, ref = _as_array(reconstruction), _as_array(truth)
    if rec.shape != ref.shape:
        raise ValueError(f"reconstruction has shape {rec.shape}, truth has shape {ref.shape}")
    return rec, ref


def _mse(rec: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    return float(mean_squared_error(ref, rec))


def _psnr(rec: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    if np.array_equal(rec, ref):
        return float("inf")  # skimage warns and divides by zero; the limit is +inf
    return float(peak_signal_noise_ratio(ref, rec, data_range=data_range))


def _ssim(rec: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    if rec.ndim != 3:
        raise ValueError(f"ssim needs one (C, H, W) image, got shape {rec.shape}")
    side = min(rec.shape[1:])
    if side < 3:
        raise ValueError(f"ssim needs images of at least 3×3 pixels, got {rec.shape[1:]}")
    # scikit-image's default 7×7 window, shrunk (odd) for images smaller than that.
    window = min(7, side if side % 2 else side - 1)
    return float(
        structural_similarity(ref, rec, data_range=data_range, channel_axis=0, win_size=window)
    )


@dataclass(frozen=True)
class ImageMetric:
    """One similarity measure between a reconstruction and the true image.

    Attributes:
        name: Metric name in records.
        higher_is_better: For the defended system (a closer reconstruction is worse).
        unit: Display unit.
        compute: (reconstruction, truth, data_range) -> value, on float64 arrays.
    """

    name: str
    higher_is_better: bool
    unit: str
    compute: Callable[[np.ndarray, np.ndarray, float], float]

    def __call__(
        self, reconstruction: ArrayLike, truth: ArrayLike, *, data_range: float = 1.0
    ) -> float:
        """The metric of one reconstruction against its truth (values span ``data_range``)."""
        if data_range <= 0:
            raise ValueError(f"{self.name}: data_range must be positive, got {data_range}")
        rec, ref = _pair(reconstruction, truth)
        return self.compute(rec, ref, data_range)

    def metric(
        self, value: float | None, *, note: str = "", interval: Interval | None = None
    ) -> Metric:
        """Wrap a value as a privacy :class:`Metric` with this measure's direction."""
        return Metric(self.name, value, self.higher_is_better, kind="privacy", unit=self.unit,
                      note=note, interval=interval)


#: Mean squared error (scikit-image); higher is better for the defense.
mse = ImageMetric("mse", True, "", _mse)
#: Peak signal-to-noise ratio 10·log10(range²/MSE) in dB (scikit-image); +inf for identical images.
psnr = ImageMetric("psnr", False, "dB", _psnr)
#: Structural similarity (scikit-image, 7×7 window, channels averaged).
ssim = ImageMetric("ssim", False, "", _ssim)
