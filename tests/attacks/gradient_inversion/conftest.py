"""Fixtures for the gradient-inversion tests (helpers live in helpers.py)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fedbench.data.tensors import TensorData
from fedbench.registry import DATASETS


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    # The test machine is shared; one thread per test keeps timings stable (tests only).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def patches() -> TensorData:
    """image_patches (3×32×32, 10 classes, values in [0, 1])."""
    return DATASETS.create("image_patches", {}).train


@pytest.fixture(scope="session")
def digits() -> TensorData:
    """digits (1×8×8, 10 classes, values in [0, 1])."""
    return DATASETS.create("digits", {}).train
