"""Tests for fedbench.data.embedded."""

from __future__ import annotations

import numpy as np
import pytest

from fedbench.data.embedded import PATCH_SOURCES, cut_patches
from fedbench.registry import DATASETS


def test_digits_shape_and_range() -> None:
    ds = DATASETS.create("digits")
    assert ds.train.x.shape == (1797, 1, 8, 8) and ds.num_classes == 10
    assert float(ds.train.x.min()) == 0.0 and float(ds.train.x.max()) == 1.0


def test_breast_cancer_is_standardised_tabular() -> None:
    ds = DATASETS.create("breast_cancer")
    assert ds.train.x.shape == (569, 30) and ds.kind == "tabular" and ds.num_classes == 2
    np.testing.assert_allclose(ds.train.x.mean(0).numpy(), 0.0, atol=1e-5)


def test_image_patches_include_histology_and_retina() -> None:
    ds = DATASETS.create("image_patches")
    assert ds.input_shape == (3, 32, 32) and ds.train.x.shape[1:] == (3, 32, 32)
    counts = np.bincount(ds.train.labels(), minlength=len(PATCH_SOURCES))
    for source in ("immunohistochemistry", "retina"):
        assert counts[PATCH_SOURCES.index(source)] > 50
    assert float(ds.train.x.min()) >= 0.0 and float(ds.train.x.max()) <= 1.0


def test_image_patches_are_deterministic() -> None:
    a = DATASETS.create("image_patches", {"per_image": 20})
    b = DATASETS.create("image_patches", {"per_image": 20})
    assert np.array_equal(a.train.x.numpy(), b.train.x.numpy())


def test_cut_patches_grid_and_background_filter() -> None:
    image = np.zeros((64, 96, 3), dtype=np.float32)
    image[:32, :32] = np.random.default_rng(0).random((32, 32, 3))  # one textured patch
    patches = cut_patches(image, 32, limit=10)
    assert patches.shape == (1, 32, 32, 3)  # the five flat patches are background
    np.testing.assert_array_equal(patches[0], image[:32, :32])


def test_patch_size_validated() -> None:
    with pytest.raises(ValueError, match="size must be at least 8"):
        DATASETS.create("image_patches", {"size": 4})


def test_mnist5k_is_real_mnist_offline() -> None:
    ds = DATASETS.create("mnist5k")
    assert ds.input_shape == (1, 28, 28) and ds.kind == "image" and ds.num_classes == 10
    assert ds.train.x.shape == (5000, 1, 28, 28)
    x, y = ds.train.x.numpy(), ds.train.labels()
    assert np.bincount(y).tolist() == [500] * 10  # labels 0..9, balanced
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # Digits on a black background (MNIST's mean grey level is ~0.13), and the labels belong
    # to the images: a "1" has about half the ink of a "0".
    assert 0.1 < float(x.mean()) < 0.16
    assert float(x[y == 1].mean()) < 0.6 * float(x[y == 0].mean())
