"""Run the cells of a suite, skipping cells whose records are complete."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from fedbench.config import SuiteConfig
from fedbench.errors import ConfigError
from fedbench.harness.checks import cell_problems, describe
from fedbench.harness.executors import Executor, SequentialExecutor
from fedbench.harness.records import RECORDS_FILE, append_records, read_records
from fedbench.harness.schema import CellRecord
from fedbench.harness.suite import Cell, expand


@dataclass
class RunSummary:
    """What a suite run did."""

    folder: Path
    total: int
    skipped: int
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def run_suite(
    suite: SuiteConfig,
    *,
    results_root: Path,
    executor: Executor | None = None,
    progress: bool = True,
    cells: list[Cell] | None = None,
) -> RunSummary:
    """Run every cell of ``suite`` without complete records under ``results_root/<name>``.

    First every cell's pipeline is built and checked (``fedbench run --dry-run``); if any cell
    cannot run, nothing runs and the ConfigError lists every problem.

    Each finished cell's records are appended atomically as soon as it finishes, so a killed
    run loses at most the cells in flight, and a rerun skips every complete cell.
    """
    all_cells = cells if cells is not None else expand(suite)
    problems = cell_problems(all_cells, progress=progress)
    if problems:  # refused before anything is written or trained
        raise ConfigError(describe(problems, len(all_cells)))
    folder = results_root / suite.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "suite.yaml").write_text(
        yaml.safe_dump(suite.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
    )
    records = folder / RECORDS_FILE
    complete = set(read_records(records).cells) if records.exists() else set()
    todo = [c for c in all_cells if c.id not in complete]
    summary = RunSummary(folder=folder, total=len(all_cells), skipped=len(all_cells) - len(todo))
    figures = folder / "figures"
    executor = executor or SequentialExecutor(progress=progress)
    bar = tqdm(total=len(todo), desc=f"{suite.name} cells", unit="cell", disable=not progress)
    if todo:
        bar.set_postfix_str(f"running {todo[0].label}")
    for cell, rows in executor.run(todo, figures):
        append_records(records, rows)
        final = rows[-1]
        assert isinstance(final, CellRecord)
        if final.status == "ok":
            summary.done.append(cell.id)
        else:
            summary.failed[cell.label] = str(final.error)
        bar.update(1)
        bar.set_postfix_str(f"finished {cell.label}")
    bar.close()
    if figures.exists() and not any(figures.iterdir()):
        shutil.rmtree(figures)
    return summary
