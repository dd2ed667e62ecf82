"""Timing as an observer of the round: named laps, summed over the run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Lap:
    """What one measured block took (set when the block ends).

    Attributes:
        seconds: Wall-clock seconds.
        cpu_seconds: CPU seconds of this process (all its threads; measured only when asked
            for, else 0): unlike wall-clock time,
            another process's load on the machine does not enter it, so a ratio of two CPU
            times is the cost ratio that runs of identical code on differently busy machines
            agree on.
    """

    seconds: float = 0.0
    cpu_seconds: float = 0.0


class Stopwatch:
    """Sums wall-clock seconds by name (and hands each block its CPU seconds too).

    Example:
        >>> watch = Stopwatch()
        >>> with watch.measure("client_training") as lap:
        ...     pass
        >>> watch.totals["client_training"] == lap.seconds
        True
    """

    def __init__(self, *names: str) -> None:
        self.totals: dict[str, float] = dict.fromkeys(names, 0.0)

    def add(self, name: str, seconds: float) -> None:
        """Add ``seconds`` measured by the caller to ``totals[name]``."""
        self.totals[name] = self.totals.get(name, 0.0) + seconds

    @contextmanager
    def measure(self, name: str, *, cpu: bool = False) -> Iterator[Lap]:
        """Time the block and add its seconds to ``totals[name]``; with ``cpu`` the lap also
        gets the block's CPU seconds (a process-clock read costs microseconds, which adds up
        over a thousand clients' per-client laps, so only the laps that need it pay)."""
        lap = Lap()
        tick = time.perf_counter()
        start_cpu = time.process_time() if cpu else 0.0
        try:
            yield lap
        finally:
            lap.seconds = time.perf_counter() - tick
            if cpu:
                lap.cpu_seconds = time.process_time() - start_cpu
            self.totals[name] = self.totals.get(name, 0.0) + lap.seconds
