"""Image metrics against independent references: numpy MSE, the PSNR formula, a direct SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from fedbench.metrics.image import mse, psnr, ssim


def reference_ssim(a: np.ndarray, b: np.ndarray, *, data_range: float, window: int = 7) -> float:
    """SSIM of Wang et al. (2004) computed window by window, channels averaged.

    Uniform window, sample (co)variances, K1 = 0.01, K2 = 0.03, mean over the windows that fit
    inside the image: the conventions scikit-image documents for its defaults.
    """
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for ca, cb in zip(a, b, strict=True):
        wa = sliding_window_view(ca, (window, window)).reshape(-1, window * window)
        wb = sliding_window_view(cb, (window, window)).reshape(-1, window * window)
        mu_a, mu_b = wa.mean(1), wb.mean(1)
        var_a, var_b = wa.var(1, ddof=1), wb.var(1, ddof=1)
        cov = ((wa - mu_a[:, None]) * (wb - mu_b[:, None])).sum(1) / (window * window - 1)
        s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
            (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
        )
        values.append(s.mean())
    return float(np.mean(values))


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    truth = rng.random((3, 16, 16))
    return np.clip(truth + rng.normal(0, 0.1, truth.shape), 0, 1), truth


def test_mse_is_the_mean_squared_difference(pair: tuple[np.ndarray, np.ndarray]) -> None:
    rec, truth = pair
    assert mse(rec, truth) == pytest.approx(((rec - truth) ** 2).mean(), rel=1e-12)


def test_psnr_follows_its_definition(pair: tuple[np.ndarray, np.ndarray]) -> None:
    rec, truth = pair
    expected = 10 * math.log10(1.0 / ((rec - truth) ** 2).mean())
    assert psnr(rec, truth) == pytest.approx(expected, rel=1e-12)
    # data_range 255 on the same values scales the numerator by 255².
    assert psnr(rec, truth, data_range=255.0) == pytest.approx(
        expected + 20 * math.log10(255.0), rel=1e-12
    )


def test_psnr_of_identical_images_is_infinite() -> None:
    image = torch.rand(3, 8, 8)
    assert psnr(image, image.clone()) == math.inf


def test_ssim_matches_a_direct_implementation(pair: tuple[np.ndarray, np.ndarray]) -> None:
    rec, truth = pair
    assert ssim(rec, truth) == pytest.approx(reference_ssim(rec, truth, data_range=1.0), abs=1e-9)


def test_ssim_of_constant_images_has_a_closed_form() -> None:
    # Zero variances leave only the luminance term (2ab + C1) / (a² + b² + C1).
    a, b, c1 = 0.2, 0.6, 0.01**2
    value = ssim(np.full((1, 8, 8), a), np.full((1, 8, 8), b))
    assert value == pytest.approx((2 * a * b + c1) / (a**2 + b**2 + c1), rel=1e-9)


def test_ssim_shrinks_its_window_for_small_images() -> None:
    rng = np.random.default_rng(1)
    small = rng.random((1, 5, 5))
    noisy = np.clip(small + rng.normal(0, 0.2, small.shape), 0, 1)
    assert ssim(noisy, small) == pytest.approx(
        reference_ssim(noisy, small, data_range=1.0, window=5), abs=1e-9
    )
    with pytest.raises(ValueError, match="at least 3×3"):
        ssim(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)))


def test_ssim_decreases_with_noise() -> None:
    rng = np.random.default_rng(2)
    truth = rng.random((3, 32, 32))
    values = [ssim(np.clip(truth + rng.normal(0, s, truth.shape), 0, 1), truth)
              for s in (0.01, 0.1, 0.3)]
    assert values[0] > values[1] > values[2]
    assert ssim(truth, truth) == pytest.approx(1.0)


def test_directions_are_those_of_the_defended_system() -> None:
    # A closer reconstruction is worse for the defense.
    assert mse.higher_is_better is True
    assert psnr.higher_is_better is False
    assert ssim.higher_is_better is False
    metric = psnr.metric(21.5)
    assert (metric.name, metric.value, metric.unit, metric.kind) == ("psnr", 21.5, "dB", "privacy")


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        mse(np.zeros((1, 4, 4)), np.zeros((1, 4, 5)))
    with pytest.raises(ValueError, match="data_range"):
        psnr(np.zeros(4), np.ones(4), data_range=0)
