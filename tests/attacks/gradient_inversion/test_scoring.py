"""Scoring: Hungarian matching, per-pair metrics, multiset label accuracy, LPIPS skipped."""

from __future__ import annotations

import math

import pytest
import torch

from fedbench.attacks.gradient_inversion.scoring import (
    LPIPS_SKIPPED,
    label_accuracy,
    match,
    per_image_psnr,
    score_reconstruction,
)


def by_name(metrics) -> dict:
    return {m.name: m for m in metrics}


def test_matching_undoes_a_shuffle() -> None:
    truth = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    order = torch.tensor([4, 0, 5, 2, 1, 3])
    rows, cols = match(truth[order] + 0.01, truth)
    assert [int(order[r]) for r in rows] == cols.tolist()


def test_metrics_are_averaged_over_matched_pairs() -> None:
    gen = torch.Generator().manual_seed(1)
    truth = torch.rand(3, 3, 8, 8, generator=gen) * 0.8 + 0.1
    errors = torch.tensor([0.01, 0.05, 0.1])
    rec = (truth + errors.view(3, 1, 1, 1))[[2, 0, 1]]  # shuffled, constant offsets
    scores = by_name(score_reconstruction(rec, torch.tensor([3, 1, 2]), truth,
                                          torch.tensor([1, 2, 3]), data_kind="image"))
    expected_psnr = [10 * math.log10(1 / e**2) for e in errors.tolist()]
    assert scores["psnr"].value == pytest.approx(sum(expected_psnr) / 3, rel=1e-6)
    assert scores["psnr_max"].value == pytest.approx(max(expected_psnr), rel=1e-6)
    assert scores["mse"].value == pytest.approx(float((errors**2).mean()), rel=1e-5)
    assert scores["label_accuracy"].value == 1.0
    assert scores["images_matched"].value == 3
    assert scores["lpips"].value is None and scores["lpips"].note == LPIPS_SKIPPED
    # Directions for the defended system.
    assert scores["psnr"].higher_is_better is False and scores["mse"].higher_is_better is True
    assert scores["lpips"].higher_is_better is True


def test_reconstructions_are_clipped_to_the_pixel_range() -> None:
    truth = torch.ones(1, 1, 8, 8)
    scores = by_name(score_reconstruction(truth * 5, None, truth, torch.tensor([0]),
                                          data_kind="image"))
    assert scores["psnr"].value == math.inf
    assert scores["label_accuracy"].value is None


def test_missing_reconstructions_are_noted() -> None:
    truth = torch.rand(3, 1, 8, 8)
    scores = by_name(score_reconstruction(truth[:2], torch.tensor([0, 0]), truth,
                                          torch.tensor([0, 0, 1]), data_kind="image"))
    assert scores["images_matched"].value == 2
    assert "1 true examples had no reconstruction" in scores["psnr"].note
    ordered, values = per_image_psnr(truth[[1]], truth, data_kind="image")
    assert math.isnan(values[0]) and values[1] == math.inf and torch.isnan(ordered[0]).all()


def test_tabular_data_has_no_ssim() -> None:
    truth = torch.randn(2, 30)
    scores = by_name(score_reconstruction(truth + 0.1, torch.tensor([0, 1]), truth,
                                          torch.tensor([1, 0]), data_kind="tabular"))
    assert scores["ssim"].value is None and scores["ssim"].note == "not an image"
    data_range = float(truth.max() - truth.min())
    assert scores["psnr"].value == pytest.approx(10 * math.log10(data_range**2 / 0.01), rel=1e-4)


def test_label_accuracy_counts_multisets() -> None:
    assert label_accuracy(torch.tensor([3, 3, 1]), torch.tensor([1, 3, 3])) == 1.0
    assert label_accuracy(torch.tensor([3, 3, 3]), torch.tensor([1, 3, 2])) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        label_accuracy(torch.tensor([1]), torch.tensor([], dtype=torch.long))


def test_a_diverged_reconstruction_is_scored_not_crashed() -> None:
    truth = torch.rand(2, 1, 8, 8)
    scores = by_name(score_reconstruction(torch.full_like(truth, math.nan), None, truth,
                                          torch.tensor([0, 1]), data_kind="image"))
    zeros = by_name(score_reconstruction(torch.zeros_like(truth), None, truth,
                                         torch.tensor([0, 1]), data_kind="image"))
    assert scores["psnr"].value == pytest.approx(zeros["psnr"].value)


def test_the_failure_baseline_is_the_psnr_of_a_random_image() -> None:
    import math

    from fedbench.attacks.gradient_inversion.scoring import failure_baseline

    # Against a mid-grey image, U(0, 1) noise has MSE E[(u - 1/2)²] = 1/12: 10·log10(12) dB.
    grey = torch.full((6, 3, 32, 32), 0.5)
    baseline = failure_baseline(grey, "image")
    assert baseline.value == pytest.approx(10 * math.log10(12), abs=0.05)
    # Against black, E[u²] = 1/3: 4.77 dB. The measure is no privacy number (no direction).
    assert failure_baseline(torch.zeros(4, 3, 32, 32), "image").value == pytest.approx(
        10 * math.log10(3), abs=0.15)
    assert baseline.higher_is_better is None


def test_psnr_carries_a_bootstrap_interval_over_the_images() -> None:
    truth = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    noisy = (truth + 0.1 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(1)))
    scores = by_name(score_reconstruction(noisy, None, truth, torch.zeros(8), data_kind="image"))
    interval = scores["psnr"].interval
    assert interval is not None and interval.method == "bootstrap over 8 items"
    assert interval.low < scores["psnr"].value < interval.high
    one = by_name(score_reconstruction(noisy[:1], None, truth[:1], torch.zeros(1),
                                       data_kind="image"))
    assert one["psnr"].interval is None  # one image: no spread to measure
