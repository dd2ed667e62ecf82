"""Run the cells of a suite, skipping cells whose records are complete."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from fedbench.config import SuiteConfig
from fedbench.errors import ConfigError, ResultsError
from fedbench.fl.transcript_io import META_FILE
from fedbench.harness.cell import TranscribedCell, transcript_folder, write_files
from fedbench.harness.checks import cell_problems, describe
from fedbench.harness.environment import code_version
from fedbench.harness.executors import Executor, SequentialExecutor
from fedbench.harness.records import RECORDS_FILE, RecordSet, append_records, read_records
from fedbench.harness.schema import CellRecord
from fedbench.harness.suite import Cell, expand


@dataclass
class RunSummary:
    """What a suite run did."""

    folder: Path
    total: int
    skipped: int
    stale: int = 0
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def reusable(
    records: RecordSet, cells: list[Cell], *, any_version: bool = False
) -> tuple[set[str], int]:
    """The cells whose complete records may be reused — from the same expansion (same id and
    label) and the same code version, unless ``any_version`` — and how many complete cells of
    the suite came from another code version (they rerun)."""
    current = code_version()
    done = [c for c in cells if c.id in records.cells and records.cells[c.id].label == c.label]
    same = {c.id for c in done if any_version or records.cells[c.id].code_version == current}
    return same, len(done) - len(same)


def results_folder(results_root: Path, suite_name: str) -> Path:
    """``results_root/<suite>``, refused when it would not be a folder inside the root."""
    if results_root.exists() and not results_root.is_dir():
        raise ResultsError(f"--results-dir {results_root} is a file, not a folder")
    folder = results_root / suite_name
    if not folder.resolve().is_relative_to(results_root.resolve()):
        raise ResultsError(f"suite name {suite_name!r} would write outside {results_root}")
    if folder.exists() and not folder.is_dir():
        raise ResultsError(f"{folder} is a file; the suite's results need a folder there")
    return folder


def run_suite(
    suite: SuiteConfig,
    *,
    results_root: Path,
    executor: Executor | None = None,
    progress: bool = True,
    cells: list[Cell] | None = None,
    resume_any: bool = False,
    on_cell: Callable[[str, str, float], None] | None = None,
    save_transcripts: bool = False,
) -> RunSummary:
    """Run every cell of ``suite`` without complete records under ``results_root/<name>``.

    First every cell's pipeline is built and checked (``fedbench run --dry-run``); if any cell
    cannot run, nothing runs and the ConfigError lists every problem.

    Each finished cell's records are appended atomically as soon as it finishes, so a killed
    run loses at most the cells in flight, and a rerun skips every complete cell of the same
    code version (``resume_any``: of any version); cells of another version rerun, and their
    new records supersede the old ones. ``on_cell(label, status, seconds)`` hears of every
    finished cell. ``save_transcripts`` writes each cell's transcript under
    ``transcripts/<cell folder>/``; a complete cell without one reruns.
    """
    all_cells = cells if cells is not None else expand(suite)
    problems = cell_problems(all_cells, progress=progress)
    if problems:  # refused before anything is written or trained
        raise ConfigError(describe(problems, len(all_cells)))
    folder = results_folder(results_root, suite.name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "suite.yaml").write_text(
        yaml.safe_dump(suite.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
    )
    records = folder / RECORDS_FILE
    existing = read_records(records) if records.exists() else RecordSet()
    complete, stale = reusable(existing, all_cells, any_version=resume_any)
    if save_transcripts:  # a reused cell must have its transcript too
        complete = {c.id for c in all_cells if c.id in complete
                    and (folder / transcript_folder(c) / META_FILE).is_file()}
    todo = [c for c in all_cells if c.id not in complete]
    summary = RunSummary(folder=folder, total=len(all_cells), skipped=len(all_cells) - len(todo),
                         stale=stale)
    executor = executor or SequentialExecutor(progress=progress)
    bar = tqdm(total=len(todo), desc=f"{suite.name} cells", unit="cell", disable=not progress)
    if todo:
        bar.set_postfix_str(f"running {todo[0].label}")
    runs = [TranscribedCell.of(c) for c in todo] if save_transcripts else todo
    for cell, output in executor.run(runs):
        write_files(folder, output.files)  # files first: a record never links a missing file
        append_records(records, output.rows)
        final = output.rows[-1]
        assert isinstance(final, CellRecord)
        if final.status == "ok":
            summary.done.append(cell.id)
        else:
            summary.failed[cell.label] = str(final.error)
        if on_cell is not None:
            on_cell(cell.label, final.status, final.duration_s)
        bar.update(1)
        bar.set_postfix_str(f"finished {cell.label}")
    bar.close()
    return summary
