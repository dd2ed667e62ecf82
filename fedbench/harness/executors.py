"""Where cells run: in this process, on a local process pool, or on a Ray cluster.

Every executor runs the same function (:func:`fedbench.harness.cell.execute_cell`) and hands
back each cell's records and figures as soon as the cell finishes; only the calling process
writes them, so the results folder never sees interleaved writers and a cell on a remote worker
loses no figure. Seeds and the torch thread count are part of each cell's configuration, so the
records are the same whichever executor ran them; each record names its executor.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from fedbench.errors import ConfigError
from fedbench.harness.cell import CellOutput, execute_cell
from fedbench.harness.suite import Cell


class Executor(ABC):
    """Runs cells and yields ``(cell, output)`` in completion order.

    Attributes:
        name: Recorded in every cell record (``executor``).
    """

    name: str = "executor"

    @abstractmethod
    def run(self, cells: Iterable[Cell]) -> Iterator[tuple[Cell, CellOutput]]:
        """Run ``cells``; yield each one's records and figures when it finishes."""


class SequentialExecutor(Executor):
    """One cell after the other in this process (the default; shows per-round progress)."""

    name = "local"

    def __init__(self, *, progress: bool = False) -> None:
        self.progress = progress

    def run(self, cells: Iterable[Cell]) -> Iterator[tuple[Cell, CellOutput]]:
        for cell in cells:
            yield cell, execute_cell(cell, progress=self.progress, executor=self.name)


def _die_with_parent(parent: int) -> None:
    """Pool-worker initializer: a worker whose parent is killed (even by SIGKILL, which runs no
    clean-up) exits instead of blocking forever on its task queue."""
    try:  # Linux: the kernel signals us when the parent thread dies
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass

    def watch() -> None:  # everywhere else (and as a second line): poll the parent's pid
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _execute_positional(cell: Cell, executor: str) -> CellOutput:
    return execute_cell(cell, executor=executor)


class LocalPoolExecutor(Executor):
    """A local process pool of ``jobs`` workers (spawned, so no forked torch state).

    Args:
        jobs: Number of worker processes (≥ 1).
    """

    name = "local-pool"

    def __init__(self, *, jobs: int) -> None:
        if jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {jobs}")
        self.jobs = jobs

    def run(self, cells: Iterable[Cell]) -> Iterator[tuple[Cell, CellOutput]]:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=self.jobs, mp_context=context, initializer=_die_with_parent,
            initargs=(os.getpid(),),
        ) as pool:
            pending: dict[Future[CellOutput], Cell] = {
                pool.submit(_execute_positional, cell, self.name): cell for cell in cells
            }
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), future.result()


def _warm_up() -> bool:
    """Import what a cell uses, so that a cold worker's start-up is not inside a cell's timings
    (it once turned a plaintext aggregation ratio of 2.1 into 217). Listing the registries
    imports every registered attack and defense."""
    from fedbench.registry import ATTACKS, DEFENSES

    return bool(ATTACKS.names() and DEFENSES.names())


class RayExecutor(Executor):
    """Cells as Ray tasks on a cluster (``address``) or a local Ray instance (``None``).

    Needs the ``ray`` extra (``pip install 'fedbench[ray]'``). The workers must be able to
    import fedbench and reach the same datasets (``data_root``). A cell whose ``device`` is
    CUDA reserves a GPU.

    Args:
        address: Ray cluster address (``ray://host:10001`` or ``auto``); None starts Ray locally.
        num_cpus: CPUs each cell reserves.
    """

    name = "ray"

    def __init__(self, *, address: str | None = None, num_cpus: float = 1.0) -> None:
        try:
            import ray  # noqa: F401
        except ImportError as err:
            raise ConfigError(
                "--executor ray needs Ray: pip install 'fedbench[ray]'"
            ) from err
        self.address = address
        self.num_cpus = num_cpus

    def run(self, cells: Iterable[Cell]) -> Iterator[tuple[Cell, CellOutput]]:
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.address, ignore_reinit_error=True, log_to_driver=False,
                     include_dashboard=False)
        try:
            yield from self._run(ray, list(cells))
        finally:
            if started_here:
                ray.shutdown()

    def _run(self, ray: Any, cells: list[Cell]) -> Iterator[tuple[Cell, CellOutput]]:
        warm = ray.remote(num_cpus=self.num_cpus)(_warm_up)
        ray.get([warm.remote() for _ in range(min(len(cells), self._slots(ray)))])
        execute = ray.remote(_execute_positional)
        pending = {}
        for cell in cells:
            gpus = 1 if cell.config.device.startswith("cuda") else 0
            task = execute.options(num_cpus=self.num_cpus, num_gpus=gpus)
            pending[task.remote(cell, self.name)] = cell
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)

    def _slots(self, ray: Any) -> int:
        return max(1, int(ray.cluster_resources().get("CPU", 1) // self.num_cpus))


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
