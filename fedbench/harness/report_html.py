"""report.html: one self-contained page — the main table (pandas Styler, the same bolding and
† marks as the Markdown, sortable), the DP table, every figure embedded, and a section per cell
(configuration, seeds, versions, the views and adversary used, per-round history, its
figures). Nothing links outside the file, so it can be mailed or moved on its own."""

from __future__ import annotations

import base64
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml
from jinja2 import Environment
from markupsafe import Markup

from fedbench.harness.privacy_table import privacy_table
from fedbench.harness.schema import CellRecord
from fedbench.harness.tables import MainTable, display_frame, footnotes, is_best

if TYPE_CHECKING:
    from fedbench.harness.report import Report


def _embedded(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _main_table_html(table: MainTable) -> Markup:
    shown = display_frame(table)
    if shown.empty:
        return Markup("<p>(no complete records)</p>")

    def bold(column: pd.Series) -> list[str]:
        return ["font-weight: bold" if is_best(table, key, str(column.name)) else ""
                for key in table.text.index]

    styler = shown.style.hide(axis="index").format(escape="html").set_uuid("main")
    styler = styler.apply(bold, axis=0, subset=[c for c in shown.columns
                                                     if c in {h for _, h in table.bold}])
    # Styler names the table T_<uuid>: "T_main" is the id the page and its tests use.
    return Markup(styler.to_html(table_attributes='class="sortable"'))


def _frame_html(frame: pd.DataFrame, table_id: str = "") -> Markup:
    if frame.empty:
        return Markup("")
    attributes = f'class="sortable" id="{table_id}"' if table_id else 'class="sortable"'
    html = frame.to_html(index=False, escape=True, na_rep="–", border=0)
    return Markup(html.replace('class="dataframe"', attributes, 1))


def _cell_context(report: Report, cell: CellRecord) -> dict[str, Any]:
    metrics = [m for m in report.records.metrics if m.cell == cell.cell and m.metric != "figure"]
    frame = pd.DataFrame([
        {"source": m.source, "view": m.view.value if m.view else "", "metric": m.metric,
         "value": m.value, "unit": m.unit, "note": m.note}
        for m in metrics
    ])
    used = sorted({f"{m.attack} ({m.view.value})" for m in metrics if m.attack and m.view})
    figures = [
        {"name": Path(m.path).name, "src": _embedded(report.folder / m.path)}
        for m in report.records.metrics
        if m.cell == cell.cell and m.metric == "figure" and m.path
        and (report.folder / m.path).exists()
    ]
    history = pd.DataFrame([r.model_dump() for r in cell.history])
    provenance = {"versions": cell.versions, "host": cell.host, "git_commit": cell.git_commit}
    return {
        "id": cell.cell, "label": cell.label, "status": cell.status, "error": cell.error,
        "adversary": cell.adversary, "executor": cell.executor or "unknown",
        "seconds": f"{cell.duration_s:.1f}", "seeds": cell.seeds,
        "code_version": cell.code_version or cell.git_commit or "unknown",
        "insecure": cell.insecure, "irreproducible": cell.irreproducible,
        "attacks": ", ".join(used), "metrics": _frame_html(frame),
        "history": _frame_html(history), "rounds": len(cell.history), "figures": figures,
        "config": yaml.safe_dump(cell.config, sort_keys=False, allow_unicode=True),
        "provenance": yaml.safe_dump(provenance, sort_keys=False, allow_unicode=True),
    }


def write_html(report: Report) -> Path:
    """Write ``report.html`` next to report.md and return its path."""
    from fedbench.harness.report import command_of

    records = report.records
    cells = [*records.cells.values(), *records.failed.values()]
    versions: dict[str, set[str]] = {}
    for cell in records.cells.values():
        for name, version in cell.versions.items():
            versions.setdefault(name, set()).add(version)
    source = resources.files("fedbench.harness") / "templates" / "report.html.j2"
    template = Environment(autoescape=True).from_string(source.read_text(encoding="utf-8"))
    page = template.render(
        name=report.suite.get("name", report.folder.name),
        description=str(report.suite.get("description", "")).strip(),
        command=command_of(report),
        complete=len(records.cells),
        failed=list(records.failed),
        stale=report.stale,
        codes=sorted({str(c.code_version or c.git_commit) for c in records.cells.values()}),
        versions=", ".join(f"{k} {', '.join(sorted(v))}" for k, v in sorted(versions.items())),
        main_table=_main_table_html(report.table),
        footnotes=footnotes(report.table),
        privacy_table=_frame_html(privacy_table(records), "dp"),
        figures=[{"name": p.stem, "src": _embedded(p)} for p in report.files
                 if p.suffix == ".png"],
        cells=[_cell_context(report, cell) for cell in cells],
        problems=report.problems,
    )
    path = report.html
    path.write_text(page, encoding="utf-8")
    return path
