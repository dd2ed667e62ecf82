"""Where cells run: in this process, on a local process pool, or on a Ray cluster.

Every executor runs the same function (:func:`fedbench.harness.cell.run_cell`) and hands back
each cell's records as soon as the cell finishes; only the calling process writes records, so
the results file never sees interleaved writers. Seeds are part of each cell's configuration, so
the records are the same whichever executor ran them.
"""

from __future__ import annotations

import multiprocessing
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from fedbench.errors import ConfigError
from fedbench.harness.cell import run_cell
from fedbench.harness.records import Row
from fedbench.harness.suite import Cell

Rows = list[Row]


class Executor(ABC):
    """Runs cells and yields ``(cell, rows)`` in completion order."""

    @abstractmethod
    def run(self, cells: Iterable[Cell], figures_dir: Path | None) -> Iterator[tuple[Cell, Rows]]:
        """Run ``cells``; yield each one's records when it finishes."""


class SequentialExecutor(Executor):
    """One cell after the other in this process (the default; shows per-round progress)."""

    def __init__(self, *, progress: bool = False) -> None:
        self.progress = progress

    def run(self, cells: Iterable[Cell], figures_dir: Path | None) -> Iterator[tuple[Cell, Rows]]:
        for cell in cells:
            yield cell, run_cell(cell, figures_dir=figures_dir, progress=self.progress)


def _run_cell_positional(cell: Cell, figures_dir: Path | None) -> Rows:
    return run_cell(cell, figures_dir=figures_dir)


class LocalPoolExecutor(Executor):
    """A local process pool of ``jobs`` workers (spawned, so no forked torch state).

    Each cell sets its own torch thread count (``threads`` in its configuration), so results
    do not depend on how many workers share the machine.

    Args:
        jobs: Number of worker processes (≥ 1).
    """

    def __init__(self, *, jobs: int) -> None:
        if jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {jobs}")
        self.jobs = jobs

    def run(self, cells: Iterable[Cell], figures_dir: Path | None) -> Iterator[tuple[Cell, Rows]]:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=self.jobs, mp_context=context) as pool:
            pending: dict[Future[Rows], Cell] = {
                pool.submit(run_cell, cell, figures_dir=figures_dir): cell for cell in cells
            }
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), future.result()


class RayExecutor(Executor):
    """Cells as Ray tasks on a cluster (``address``) or a local Ray instance (``None``).

    Needs the ``ray`` extra (``pip install 'fedbench[ray]'``). The workers must be able to
    import fedbench and reach the same datasets (``data_root``).

    Args:
        address: Ray cluster address (``ray://host:10001`` or ``auto``); None starts Ray locally.
        num_cpus: CPUs each cell reserves.
    """

    def __init__(self, *, address: str | None = None, num_cpus: float = 1.0) -> None:
        try:
            import ray  # noqa: F401
        except ImportError as err:
            raise ConfigError(
                "--executor ray needs Ray: pip install 'fedbench[ray]'"
            ) from err
        self.address = address
        self.num_cpus = num_cpus

    def run(self, cells: Iterable[Cell], figures_dir: Path | None) -> Iterator[tuple[Cell, Rows]]:
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.address, ignore_reinit_error=True, log_to_driver=False)
        try:
            remote = ray.remote(num_cpus=self.num_cpus)(_run_cell_positional)
            pending = {remote.remote(cell, figures_dir): cell for cell in cells}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    yield pending.pop(ref), ray.get(ref)
        finally:
            if started_here:
                ray.shutdown()


def make_executor(
    kind: str, *, jobs: int = 1, address: str | None = None, progress: bool = False
) -> Executor:
    """The executor named on the command line: ``local`` (with ``jobs``) or ``ray``."""
    if kind == "ray":
        return RayExecutor(address=address)
    if kind != "local":
        raise ConfigError(f"--executor must be 'local' or 'ray', got {kind!r}")
    if address is not None:
        raise ConfigError("--address is only used with --executor ray")
    return SequentialExecutor(progress=progress) if jobs == 1 else LocalPoolExecutor(jobs=jobs)
