"""Tests for fedbench.data.vision on small files written in the real on-disk formats."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from fedbench.errors import DataError
from fedbench.registry import DATASETS


def _write_idx(path: Path, array: np.ndarray) -> None:
    # IDX: two zero bytes, type code 0x08 (ubyte), number of dims, big-endian dims, data.
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _mnist_files(
    root: Path, folder: str, n_train: int = 12, n_test: int = 5
) -> dict[str, np.ndarray]:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, array in arrays.items():
        _write_idx(raw / name, array)
    return arrays


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_reads_idx_files(tmp_path: Path, name: str, folder: str) -> None:
    arrays = _mnist_files(tmp_path, folder)
    ds = DATASETS.create(name, {"data_root": str(tmp_path)})
    assert ds.train.x.shape == (12, 1, 28, 28) and ds.test is not None and len(ds.test) == 5
    np.testing.assert_allclose(ds.train.x[3, 0].numpy() * 255, arrays["train-images-idx3-ubyte"][3])
    assert ds.test.y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert set(ds.train.ids.tolist()).isdisjoint(ds.test.ids.tolist())


def _cifar_batch(path: Path, n: int, label_key: str, classes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    with path.open("wb") as handle:
        pickle.dump({"data": data, label_key: rng.integers(0, classes, n).tolist()}, handle)
    return data


def test_cifar10_reads_pickled_batches(tmp_path: Path) -> None:
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    first = _cifar_batch(base / "data_batch_1", 4, "labels", 10, 0)
    for i in range(2, 6):
        _cifar_batch(base / f"data_batch_{i}", 4, "labels", 10, i)
    _cifar_batch(base / "test_batch", 3, "labels", 10, 9)
    ds = DATASETS.create("cifar10", {"data_root": str(tmp_path)})
    assert ds.train.x.shape == (20, 3, 32, 32) and ds.test is not None and len(ds.test) == 3
    # Channel-major layout: the first 1024 bytes are the red plane.
    np.testing.assert_allclose(ds.train.x[0, 0].numpy().ravel() * 255, first[0, :1024], atol=1e-3)


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    _cifar_batch(base / "train", 6, "fine_labels", 100, 0)
    _cifar_batch(base / "test", 2, "fine_labels", 100, 1)
    ds = DATASETS.create("cifar100", {"data_root": str(tmp_path)})
    assert ds.num_classes == 100 and len(ds.train) == 6


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"missing .*MNIST/raw/train-images-idx3-ubyte.*download: true"
    ):
        DATASETS.create("mnist", {"data_root": str(tmp_path)})


def test_missing_data_root(monkeypatch) -> None:
    monkeypatch.delenv("FEDBENCH_DATA_ROOT", raising=False)
    with pytest.raises(DataError, match="set its data_root"):
        DATASETS.create("cifar10")
    with pytest.raises(DataError, match="is not a directory"):
        DATASETS.create("cifar10", {"data_root": "/nonexistent/fedbench"})


def test_corrupted_cifar_batch_names_file(tmp_path: Path) -> None:
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        _cifar_batch(base / name, 2, "labels", 10, 0)
    (base / "data_batch_3").write_bytes(b"\x80\x04truncated")
    with pytest.raises(DataError, match=r"cannot read CIFAR batch .*data_batch_3"):
        DATASETS.create("cifar10", {"data_root": str(tmp_path)})


class _Payload:
    """Unpickling this calls os.system: what a crafted CIFAR batch could do to pickle.load."""

    def __reduce__(self) -> tuple:
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_a_cifar_batch_that_would_run_code_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        _cifar_batch(base / name, 2, "labels", 10, 0)
    with (base / "data_batch_2").open("wb") as handle:
        pickle.dump({"data": _Payload(), "labels": [0]}, handle)
    with pytest.raises(DataError, match=r"data_batch_2.*refused to load (posix|os)\.system"):
        DATASETS.create("cifar10", {"data_root": str(tmp_path)})
