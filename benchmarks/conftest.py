"""Shared set-up for the benchmarks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run every benchmark on one intra-op thread, as every cell does by default (``threads``).

    Torch's thread count changes both speed and float reductions; with two threads on a 2-core
    machine, small training steps run several times slower and vary with whatever else runs, so
    ratios measured under the default would describe neither the suite nor a quiet machine.
    A benchmark that studies threads sets its own count inside the test.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
