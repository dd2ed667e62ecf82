"""The one writer of result records: every row a cell produces is built here (see
:mod:`fedbench.harness.schema`). Readers' tests build their records with it too, so a change
of what is written cannot leave a reader behind."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fedbench.adversary import HONEST_BUT_CURIOUS
from fedbench.defense import PrivacyReport
from fedbench.fl.views import ViewKind
from fedbench.harness.environment import code_version, git_commit, host, versions
from fedbench.harness.schema import CellRecord, MetricRecord, RoundRow
from fedbench.harness.suite import Cell
from fedbench.metrics.base import Metric


class RecordWriter:
    """The records of one run of one cell: metric rows as they come, the cell row at the end.

    Args:
        cell: The cell.
        run: The run id (a fresh one by default).
        adversary: The adversary the cell runs against.
    """

    def __init__(
        self, cell: Cell, *, run: str | None = None, adversary: str = HONEST_BUT_CURIOUS
    ) -> None:
        self.cell = cell
        self.run = run or uuid.uuid4().hex
        self.adversary = adversary
        self.metrics: list[MetricRecord] = []

    def _keys(self) -> dict[str, Any]:
        return {"run": self.run, **self.cell.keys()}

    def metric(
        self,
        metric: Metric,
        *,
        source: str,
        attack: str | None = None,
        view: ViewKind | None = None,
        status: Literal["ok", "not_applicable"] = "ok",
        privacy: PrivacyReport | None = None,
        path: str | None = None,
    ) -> MetricRecord:
        """Add one metric row (``privacy``: the report an ε row states the terms of)."""
        terms: dict[str, Any] = {}
        if privacy is not None:
            terms = {
                "delta": privacy.delta, "level": privacy.level,
                "accountant": privacy.accountant, "secure_mode": privacy.secure_mode,
            }
        row = MetricRecord(
            **self._keys(),
            source=source,
            attack=attack,
            view=view,
            adversary=self.adversary,
            metric=metric.name,
            value=None if metric.value is None else float(metric.value),
            higher_is_better=metric.higher_is_better,
            kind=metric.kind,
            unit=metric.unit,
            note=metric.note,
            timing=metric.timing,
            interval=metric.interval,
            status=status,
            path=path,
            **terms,
        )
        self.metrics.append(row)
        return row

    def finish(
        self,
        *,
        status: Literal["ok", "failed"],
        started: float,
        duration_s: float,
        error: str | None = None,
        traceback: str | None = None,
        insecure: str | None = None,
        irreproducible: str | None = None,
        executor: str | None = None,
        engine: Literal["loop", "vectorized"] | None = None,
        history: list[RoundRow] | None = None,
    ) -> list[MetricRecord | CellRecord]:
        """All rows of the run: the metric rows (none for a failed cell) and the cell row."""
        marks = {"insecure": insecure, "irreproducible": irreproducible}
        metrics = [m.model_copy(update=marks) for m in self.metrics] if status == "ok" else []
        cell = CellRecord(
            **self._keys(),
            label=self.cell.label,
            status=status,
            error=error,
            traceback=traceback,
            adversary=self.adversary,
            config=self.cell.config.model_dump(mode="json"),
            seeds={"seed": self.cell.config.seed},
            versions=versions(),
            git_commit=git_commit(),
            code_version=code_version(),
            history=history or [],
            host=host(),
            executor=executor,
            engine=engine,
            started=started,
            duration_s=duration_s,
            **marks,
        )
        return [*metrics, cell]
