"""Timing as an observer of the round: named laps, summed over the run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Lap:
    """The seconds one measured block took (set when the block ends)."""

    seconds: float = 0.0


class Stopwatch:
    """Sums wall-clock seconds by name.

    Example:
        >>> watch = Stopwatch()
        >>> with watch.measure("client_training") as lap:
        ...     pass
        >>> watch.totals["client_training"] == lap.seconds
        True
    """

    def __init__(self, *names: str) -> None:
        self.totals: dict[str, float] = dict.fromkeys(names, 0.0)

    @contextmanager
    def measure(self, name: str) -> Iterator[Lap]:
        """Time the block and add its seconds to ``totals[name]``."""
        lap = Lap()
        tick = time.perf_counter()
        try:
            yield lap
        finally:
            lap.seconds = time.perf_counter() - tick
            self.totals[name] = self.totals.get(name, 0.0) + lap.seconds
