"""Long-format result records in JSON Lines, appended atomically (schema: :mod:`.schema`).

A finished cell writes its metric rows followed by one ``cell`` row, all in a single ``write``
on a file opened for appending, then ``fsync``. Every row carries the cell's ``run`` id. When
reading, metric rows count only if the ``cell`` row of the same run is present and says ``ok``,
so a run killed mid-write leaves no half cell behind (its rows are ignored and the cell reruns),
and a cell written several times counts once: its latest complete run (a cell rerun after a
code change supersedes the old run). Rows of schema 1 are migrated on read (:mod:`.migrate`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from fedbench.errors import ResultsError
from fedbench.harness.migrate import migrate_rows
from fedbench.harness.schema import RECORD, CellRecord, MetricRecord

RECORDS_FILE = "records.jsonl"
Row = MetricRecord | CellRecord


def append_records(path: Path, rows: Sequence[Row]) -> None:
    """Append ``rows`` to ``path`` in one write (creating folders as needed).

    If an earlier writer was killed mid-line, the partial line is first terminated so that it
    stays one (skipped) corrupted line instead of swallowing the first new row.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = "".join(
        json.dumps(row.model_dump(mode="json"), sort_keys=True) + "\n" for row in rows
    ).encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            blob = b"\n" + blob
        written = os.write(fd, blob)
        if written != len(blob):
            raise OSError(f"short write to {path}: {written} of {len(blob)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class RecordSet:
    """The valid records of one or more record files.

    Attributes:
        metrics: Metric rows of complete cells.
        cells: Complete cell rows (status ok), by cell id.
        failed: Cell rows with status failed (latest per cell), by cell id.
        problems: One line per skipped line: file, line number and reason.
    """

    metrics: list[MetricRecord] = field(default_factory=list)
    cells: dict[str, CellRecord] = field(default_factory=dict)
    failed: dict[str, CellRecord] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        """Metric rows as a DataFrame (one row per cell × metric, one column per field)."""
        return pd.DataFrame([m.model_dump(mode="json") for m in self.metrics])

    def restricted(self, cells: Mapping[str, str]) -> tuple[RecordSet, list[str]]:
        """The records of exactly these cells (id -> label, e.g. what the current suite
        expands to), and the labels of the other complete cells in the file (stale: from an
        edited suite, or a defense stack renamed)."""
        keep = {c for c, label in cells.items() if c in self.cells
                and self.cells[c].label == label}
        stale = sorted(r.label for c, r in self.cells.items() if c not in keep)
        return RecordSet(
            metrics=[m for m in self.metrics if m.cell in keep],
            cells={c: r for c, r in self.cells.items() if c in keep},
            failed={c: r for c, r in self.failed.items() if c in cells},
            problems=list(self.problems),
        ), stale


def _json_lines(path: Path, problems: list[str]) -> Iterable[tuple[str, dict[str, Any]]]:
    """(where, object) for every JSON object line of ``path``; other lines become problems."""
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                problems.append(f"{where}: not valid JSON ({err.msg}); line skipped")
                continue
            if not isinstance(row, dict) or row.get("type") not in ("metric", "cell"):
                problems.append(f"{where}: not a fedbench record; line skipped")
                continue
            if not row.get("run") or not row.get("cell"):
                problems.append(f"{where}: record without cell/run id; line skipped")
                continue
            yield where, row


def _validated(raw: list[tuple[str, dict[str, Any]]], problems: list[str]) -> list[Row]:
    rows: list[Row] = []
    for where, row in migrate_rows(raw, problems):
        try:
            rows.append(RECORD.validate_python(row))
        except ValidationError as err:
            first = err.errors()[0]
            name = ".".join(str(p) for p in first["loc"][1:]) or "(row)"
            problems.append(f"{where}: field '{name}': {first['msg']}; line skipped")
    return rows


def read_records(paths: Path | Iterable[Path]) -> RecordSet:
    """Read record files, skipping (and reporting) corrupted, foreign or truncated lines."""
    files = [paths] if isinstance(paths, Path) else list(paths)
    problems: list[str] = []
    raw = [item for path in files for item in _json_lines(path, problems)]
    rows = _validated(raw, problems)
    result = RecordSet(problems=problems)
    complete_runs: dict[str, str] = {}  # cell -> the run that counts: its latest complete one
    for row in rows:
        if not isinstance(row, CellRecord):
            continue
        if row.status == "ok":
            complete_runs[row.cell] = row.run
            result.cells[row.cell] = row
            result.failed.pop(row.cell, None)
        else:
            result.failed[row.cell] = row
    counted = set(complete_runs.values())
    result.metrics = [r for r in rows if isinstance(r, MetricRecord) and r.run in counted]
    return result


def read_results_dir(folder: Path) -> RecordSet:
    """Read ``folder/records.jsonl``, explaining what was expected if it is not there."""
    if not folder.exists():
        raise ResultsError(f"results folder {folder} does not exist")
    if not folder.is_dir():
        raise ResultsError(f"{folder} is a file; expected the folder `fedbench run` wrote")
    path = folder / RECORDS_FILE
    if not path.exists():
        found = ", ".join(sorted(p.name for p in folder.iterdir())[:10]) or "nothing"
        raise ResultsError(
            f"{folder} holds no {RECORDS_FILE} (found: {found}); expected the folder that "
            "`fedbench run` wrote, e.g. results/quick"
        )
    return read_records(path)
