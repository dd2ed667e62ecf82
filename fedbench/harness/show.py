"""``fedbench show``: one cell's summary in the terminal."""

from __future__ import annotations

import pandas as pd
import yaml

from fedbench.errors import ResultsError
from fedbench.harness.records import RecordSet
from fedbench.harness.schema import CellRecord


def find_cell(records: RecordSet, key: str) -> CellRecord:
    """The cell whose id starts with ``key`` or whose label is ``key`` (complete or failed)."""
    cells = [*records.cells.values(), *records.failed.values()]
    found = [c for c in cells if c.label == key or c.cell.startswith(key)]
    if len(found) == 1:
        return found[0]
    if not found:
        sample = ", ".join(f"{c.cell[:8]} ({c.label})" for c in cells[:5])
        raise ResultsError(f"no cell '{key}' in these records; e.g. {sample or 'none at all'}")
    raise ResultsError(f"'{key}' names {len(found)} cells: use more of the id")


def cell_summary(records: RecordSet, cell: CellRecord) -> str:
    """The cell's status, provenance, metrics and per-round history, as text."""
    lines = [
        f"{cell.label}  [{cell.cell}]",
        f"status: {cell.status}" + (f" — {cell.error}" if cell.error else ""),
        f"adversary: {cell.adversary}; executor: {cell.executor or 'unknown'}; "
        f"engine: {cell.engine or 'n/a'}; {cell.duration_s:.1f} s; seeds {cell.seeds}",
        f"code: {cell.code_version or cell.git_commit or 'unknown'}; "
        + ", ".join(f"{k} {v}" for k, v in cell.versions.items()),
    ]
    if cell.insecure:
        lines.append(f"insecure: {cell.insecure}")
    if cell.irreproducible:
        lines.append(f"irreproducible: {cell.irreproducible}")
    metrics = pd.DataFrame([
        {"source": m.source, "view": m.view.value if m.view else "", "metric": m.metric,
         "value": m.value if m.metric != "figure" else m.path, "unit": m.unit}
        for m in records.metrics if m.cell == cell.cell
    ])
    if not metrics.empty:
        lines += ["", metrics.to_string(index=False)]
    if cell.history:
        history = pd.DataFrame([r.model_dump(exclude={"rejected"}) for r in cell.history])
        lines += ["", "per round:", history.to_string(index=False)]
    rejected = [(r.round, c, why) for r in cell.history for c, why in r.rejected.items()]
    lines += [f"round {t}: client {c} {why}" for t, c, why in rejected]
    lines += ["", "configuration:", yaml.safe_dump(cell.config, sort_keys=False).rstrip()]
    return "\n".join(lines)
