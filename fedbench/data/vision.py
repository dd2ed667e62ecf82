"""torchvision datasets read from a local ``data_root`` (downloaded only when asked).

MNIST and Fashion-MNIST are read by torchvision from ``<root>/<Name>/raw``. CIFAR-10/100 are read
directly from their python pickle batches (``<root>/cifar-10-batches-py``,
``<root>/cifar-100-python``): torchvision only reports "not found or corrupted" for those, while
reading them here lets an error name the missing or broken file. Downloads go through
torchvision, which verifies checksums.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from fedbench.data.dataset import Dataset
from fedbench.data.tensors import TensorData
from fedbench.errors import DataError
from fedbench.registry import register_dataset

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _root(name: str, data_root: str | None) -> Path:
    root = data_root or os.environ.get("FEDBENCH_DATA_ROOT")
    if not root:
        raise DataError(
            f"dataset '{name}' is read from disk: set its data_root parameter (or the "
            "FEDBENCH_DATA_ROOT environment variable) to the folder that holds it"
        )
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"dataset '{name}': data_root {str(path)!r} is not a directory")
    return path


def _missing(name: str, paths: list[Path]) -> DataError:
    listed = ", ".join(str(p) for p in paths)
    return DataError(
        f"dataset '{name}': missing {listed}; put the files there or set download: true"
    )


def _mnist_like(name: str, folder: str, data_root: str | None, download: bool) -> Dataset:
    from torchvision import datasets

    root = _root(name, data_root)
    raw = root / folder / "raw"
    missing = [raw / f for f in _MNIST_FILES if not (raw / f).exists()]
    if missing and not download:
        raise _missing(name, missing)
    loader = getattr(datasets, folder)
    try:
        train = loader(str(root), train=True, download=download)
        test = loader(str(root), train=False, download=download)
    except (RuntimeError, ValueError, AssertionError) as err:
        raise DataError(f"dataset '{name}': cannot read the files under {raw}: {err}") from err
    x_train = train.data.numpy().astype(np.float32)[:, None] / 255.0
    x_test = test.data.numpy().astype(np.float32)[:, None] / 255.0
    test_data = TensorData.from_arrays(x_test, test.targets.numpy())
    # Global ids continue after the training examples so every example has a unique id.
    test_data = TensorData(test_data.x, test_data.y, test_data.ids + len(x_train))
    return Dataset(
        name=name,
        train=TensorData.from_arrays(x_train, train.targets.numpy()),
        test=test_data,
        num_classes=10,
        input_shape=(1, 28, 28),
        kind="image",
        class_names=tuple(str(c) for c in train.classes),
    )


# What a CIFAR python batch holds: a dict of lists, strings and one numpy array. Unpickling
# may call only these, so a crafted file in data_root cannot run code.
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(
                f"refused to load {module}.{name}: a CIFAR batch holds only arrays and lists"
            )
        return super().find_class(module, name)


def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as handle:
            entry = _CifarUnpickler(handle, encoding="latin1").load()
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError) as err:
        raise DataError(f"cannot read CIFAR batch {path}: {type(err).__name__}: {err}") from err
    if len(data) != len(labels):
        raise DataError(f"CIFAR batch {path}: {len(data)} images but {len(labels)} labels")
    return data, labels


def _cifar(
    name: str,
    folder: str,
    train_files: list[str],
    test_file: str,
    label_key: str,
    num_classes: int,
    data_root: str | None,
    download: bool,
) -> Dataset:
    root = _root(name, data_root)
    base = root / folder
    needed = [base / f for f in [*train_files, test_file]]
    missing = [p for p in needed if not p.exists()]
    if missing and download:
        from torchvision import datasets

        loader = datasets.CIFAR10 if num_classes == 10 else datasets.CIFAR100
        loader(str(root), train=True, download=True)
        missing = [p for p in needed if not p.exists()]
    if missing:
        raise _missing(name, missing)
    parts = [_read_cifar_batch(base / f, label_key) for f in train_files]
    x_train = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    y_train = np.concatenate([p[1] for p in parts])
    x_test_u8, y_test = _read_cifar_batch(base / test_file, label_key)
    bad = np.flatnonzero((y_train < 0) | (y_train >= num_classes))
    if len(bad):
        raise DataError(f"dataset '{name}': label {y_train[bad[0]]} out of range in {base}")
    test_data = TensorData.from_arrays(x_test_u8.astype(np.float32) / 255.0, y_test)
    return Dataset(
        name=name,
        train=TensorData.from_arrays(x_train, y_train),
        test=TensorData(test_data.x, test_data.y, test_data.ids + len(x_train)),
        num_classes=num_classes,
        input_shape=(3, 32, 32),
        kind="image",
        class_names=tuple(str(c) for c in range(num_classes)),
    )


@register_dataset("mnist")
def mnist(*, data_root: str | None = None, download: bool = False) -> Dataset:
    """MNIST from ``<data_root>/MNIST/raw`` (1×28×28, 10 classes).

    Args:
        data_root: Folder holding the data (default: $FEDBENCH_DATA_ROOT).
        download: Download through torchvision when files are missing.
    """
    return _mnist_like("mnist", "MNIST", data_root, download)


@register_dataset("fashion_mnist")
def fashion_mnist(*, data_root: str | None = None, download: bool = False) -> Dataset:
    """Fashion-MNIST from ``<data_root>/FashionMNIST/raw`` (1×28×28, 10 classes)."""
    return _mnist_like("fashion_mnist", "FashionMNIST", data_root, download)


@register_dataset("cifar10")
def cifar10(*, data_root: str | None = None, download: bool = False) -> Dataset:
    """CIFAR-10 from ``<data_root>/cifar-10-batches-py`` (3×32×32, 10 classes)."""
    train = [f"data_batch_{i}" for i in range(1, 6)]
    return _cifar("cifar10", "cifar-10-batches-py", train, "test_batch", "labels", 10,
                  data_root, download)


@register_dataset("cifar100")
def cifar100(*, data_root: str | None = None, download: bool = False) -> Dataset:
    """CIFAR-100 (fine labels) from ``<data_root>/cifar-100-python`` (3×32×32, 100 classes)."""
    return _cifar("cifar100", "cifar-100-python", ["train"], "test", "fine_labels", 100,
                  data_root, download)
