"""Best-of-n wall time, for baselines measured beside a pytest-benchmark run."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_seconds(fn: Callable[[], object], *, repeats: int, warmup: bool = False) -> float:
    """Best wall time of ``fn`` over ``repeats`` runs.

    Args:
        fn: The work to time.
        repeats: Timed runs.
        warmup: Run once untimed first (torch.func and oneDNN set up kernels on the first call,
            which can take seconds).
    """
    if warmup:
        fn()
    best = float("inf")
    for _ in range(repeats):
        tick = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - tick)
    return best
