"""The reconstruction grid: a real PNG, two rows, one column per example."""

from __future__ import annotations

import math

import pytest
import torch
from matplotlib.image import imread

from fedbench.attacks.gradient_inversion.figures import MAX_COLUMNS, reconstruction_grid


@pytest.mark.parametrize("channels", [1, 3])
def test_grid_is_a_png_whose_width_grows_with_the_batch(tmp_path, channels: int) -> None:
    truth = torch.rand(4, channels, 8, 8)
    small = reconstruction_grid(truth[:2], truth[:2], [30.0, math.inf], tmp_path / "a.png")
    large = reconstruction_grid(truth, torch.rand_like(truth), [float("nan"), 1.0, 2.0, 3.0],
                                tmp_path / "sub" / "b.png", title="t")
    assert small.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert imread(large).shape[1] > imread(small).shape[1]


def test_large_batches_are_cut(tmp_path) -> None:
    truth = torch.rand(MAX_COLUMNS + 4, 3, 8, 8)
    capped = reconstruction_grid(truth, truth, [1.0] * len(truth), tmp_path / "c.png")
    exact = reconstruction_grid(truth[:MAX_COLUMNS], truth[:MAX_COLUMNS],
                                [1.0] * MAX_COLUMNS, tmp_path / "d.png")
    assert imread(capped).shape == imread(exact).shape


def test_bad_shapes_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="aligned"):
        reconstruction_grid(torch.rand(2, 3, 8, 8), torch.rand(1, 3, 8, 8), [1.0], tmp_path / "x")
    with pytest.raises(ValueError, match="images"):
        reconstruction_grid(torch.rand(2, 30), torch.rand(2, 30), [1.0, 2.0], tmp_path / "x")
