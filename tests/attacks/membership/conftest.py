"""Fixtures of the membership-attack tests: one overfitted FL target per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from membership_target import OVERFIT, Target, build_target


@pytest.fixture(scope="session")
def overfit_target() -> Target:
    """The shared overfitted digits target (trained once per session)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_target(OVERFIT)
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Small tensors: a second intra-op thread costs more than it gains on a shared 2-core box.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
