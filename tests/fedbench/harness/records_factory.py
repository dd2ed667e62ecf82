"""Records for the readers' tests, made by the one writer (RecordWriter) of real cells and read
back through the file, so a change of what is written cannot leave a reader's test behind."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

from fedbench.config import parse_experiment
from fedbench.defense import PrivacyReport
from fedbench.fl.views import ViewKind
from fedbench.harness.records import RecordSet, Row, append_records, read_records
from fedbench.harness.suite import Cell
from fedbench.harness.writer import RecordWriter
from fedbench.metrics.base import Metric, MetricKind
from fedbench.metrics.intervals import Interval
from fedbench.registry import DEFENSES


def make_cell(
    defense: str = "none",
    seed: int = 0,
    *,
    experiment: str = "exp",
    suite: str = "s",
    grid: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> Cell:
    """A real cell: the defense label names a registered defense (or "none"), and the grid
    point is applied to the configuration (on top of ``settings``), so different cells have
    different ids."""
    stack = [] if defense not in DEFENSES else [{"name": defense}]
    config: dict[str, Any] = {
        **copy.deepcopy(settings or {}), "name": f"{experiment}-{defense}", "seed": seed,
        "defenses": stack,
    }
    for key, value in (grid or {}).items():
        section, field = key.split(".")
        config.setdefault(section, {})[field] = value
    return Cell(suite, experiment, defense, seed, parse_experiment(config), dict(grid or {}))


class CellRecords:
    """The rows one run of ``cell`` writes: metric rows, then the cell row."""

    def __init__(self, cell: Cell, *, run: str | None = None) -> None:
        self.writer = RecordWriter(cell, run=run)

    def metric(
        self,
        name: str,
        value: float | None,
        higher_is_better: bool | None = None,
        *,
        source: str = "fl",
        kind: MetricKind = "utility",
        attack: str | None = None,
        view: ViewKind | None = None,
        status: str = "ok",
        note: str = "",
        unit: str = "",
        timing: bool = False,
        privacy: PrivacyReport | None = None,
        path: str | None = None,
        interval: tuple[float, float] | None = None,
    ) -> CellRecords:
        self.writer.metric(
            Metric(name, value, higher_is_better, kind=kind, unit=unit, note=note,
                   timing=timing,
                   interval=None if interval is None else Interval(*interval, "test")),
            source=source, attack=attack, view=view, status=status,  # type: ignore[arg-type]
            privacy=privacy, path=path,
        )
        return self

    def rows(self, *, status: str = "ok", **marks: Any) -> list[Row]:
        return self.writer.finish(
            status=status, started=0.0, duration_s=1.0, **marks  # type: ignore[arg-type]
        )


def read_back(rows: list[Row], folder: Path | None = None) -> RecordSet:
    """``rows`` written with ``append_records`` and read with ``read_records``."""
    if folder is not None:
        append_records(folder / "records.jsonl", rows)
        return read_records(folder / "records.jsonl")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.jsonl"
        append_records(path, rows)
        return read_records(path)
