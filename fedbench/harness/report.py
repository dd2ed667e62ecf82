"""``fedbench report``: tables, figures, report.md and a self-contained report.html, from the
records alone.

The tables come from the cells the folder's suite (``suite.yaml``, written by the run) expands
to; complete records of other cells (an edited suite, a renamed defense stack) are listed as
stale instead of being merged into rows. Every link is relative to the report file, so a copied
or moved results folder keeps working.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedbench.errors import ConfigError, ResultsError
from fedbench.harness.figures import (
    attack_success,
    attack_vs_defense_sweep,
    inversion_vs_clients,
    privacy_utility,
)
from fedbench.harness.privacy_table import privacy_markdown, privacy_table
from fedbench.harness.records import RecordSet, read_results_dir
from fedbench.harness.report_html import write_html
from fedbench.harness.suite import Cell, expand
from fedbench.harness.tables import (
    MainTable,
    main_table,
    sweep_label,
    to_csv,
    to_latex,
    to_markdown,
)

COMMAND_FILE = "command.txt"
SUITE_FILE = "suite.yaml"


@dataclass
class Report:
    """What ``write_report`` produced."""

    folder: Path
    out: Path
    table: MainTable
    markdown: str
    records: RecordSet
    suite: dict[str, Any] = field(default_factory=dict)
    stale: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def html(self) -> Path:
        """The self-contained HTML report."""
        return self.out / "report.html"

    def link(self, path_in_folder: str) -> str:
        """A link from the report to a file of the results folder, relative to the report."""
        return Path(os.path.relpath(self.folder / path_in_folder, self.out)).as_posix()


def read_suite(folder: Path) -> dict[str, Any]:
    """The suite a run wrote into its folder ({} when there is none)."""
    path = folder / SUITE_FILE
    if not path.exists():
        return {}
    try:
        suite = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ResultsError(f"{path} is not valid YAML ({err}); rerun the suite to rewrite it") \
            from None
    if not isinstance(suite, dict):
        raise ResultsError(f"{path} does not hold a suite (found {type(suite).__name__})")
    return suite


def suite_cells(suite: dict[str, Any]) -> list[Cell] | None:
    """The cells ``suite`` expands to today, or None when it no longer expands."""
    from fedbench.config import parse_suite

    try:
        return expand(parse_suite(suite, source="suite.yaml")) if suite else None
    except (ConfigError, TypeError):
        return None


def _current(
    records: RecordSet, cells: list[Cell] | None, problems: list[str]
) -> tuple[RecordSet, list[str]]:
    if cells is None:
        problems.append("suite.yaml is missing or no longer expands: tables show every record")
        return records, []
    return records.restricted({c.id: c.label for c in cells})


def write_report(folder: Path, *, out: Path | None = None) -> Report:
    """Rebuild every table and figure of ``folder``, its report.md and report.html (into
    ``out``, the results folder by default)."""
    all_records = read_results_dir(folder)
    suite = read_suite(folder)
    cells = suite_cells(suite)
    problems = list(all_records.problems)
    records, stale = _current(all_records, cells, problems)
    out = out or folder
    if out.exists() and not out.is_dir():
        raise ResultsError(f"--out {out} is a file, not a folder")
    order = None if cells is None else list(
        dict.fromkeys((c.experiment, c.defense, sweep_label(c.grid)) for c in cells)
    )
    table = main_table(records, order=order)
    report = Report(folder=folder, out=out, table=table, markdown=to_markdown(table),
                    records=records, suite=suite, stale=stale, problems=problems)
    _write_tables(report)
    _write_figures(report)
    (out / "report.md").write_text(_report_markdown(report), encoding="utf-8")
    report.files.append(out / "report.md")
    report.files.append(write_html(report))
    return report


def _write_tables(report: Report) -> None:
    tables = report.out / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    caption = str(report.suite.get("description", "")).strip()
    for name, content in (
        ("main.md", report.markdown),
        ("main.tex", to_latex(report.table, caption=caption)),
        ("main.csv", to_csv(report.table)),
        ("privacy.md", privacy_markdown(privacy_table(report.records))),
    ):
        (tables / name).write_text(content, encoding="utf-8")
        report.files.append(tables / name)


def _write_figures(report: Report) -> None:
    figures = report.out / "figures"
    records = report.records
    made = [
        privacy_utility(records, figures / "privacy_utility.png"),
        attack_success(records, figures / "attack_success.png"),
    ]
    for key in report.suite.get("grid") or {}:
        if "clients" in key:
            made.append(inversion_vs_clients(records, figures / "inversion_vs_clients.png", key))
    # One figure for every defense's noise sweep, when every swept key is one (the imprint
    # sweep): lines of different defenses share the multiplier axis.
    grid = list(report.suite.get("grid") or {})
    if grid and all(k.startswith("defenses.") and k.endswith("noise.multiplier") for k in grid):
        made.append(attack_vs_defense_sweep(records, figures / "attack_vs_noise.png", grid))
    report.files += [p for p in made if p is not None]


def _provenance(records: RecordSet) -> tuple[list[str], dict[str, str]]:
    codes = sorted({str(c.code_version or c.git_commit) for c in records.cells.values()})
    versions: dict[str, set[str]] = {}
    for cell in records.cells.values():
        for name, version in cell.versions.items():
            versions.setdefault(name, set()).add(version)
    return codes, {k: ", ".join(sorted(v)) for k, v in sorted(versions.items())}


def command_of(report: Report) -> str:
    """The command that produced the folder (as the run recorded it)."""
    path = report.folder / COMMAND_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    return f"fedbench run {report.suite.get('name', report.folder.name)}"


def _report_markdown(report: Report) -> str:
    records = report.records
    codes, versions = _provenance(records)
    lines = [
        f"# {report.suite.get('name', report.folder.name)}",
        "",
        str(report.suite.get("description", "")).strip(),
        "",
        f"Produced by `{command_of(report)}`; rebuilt from the records by "
        f"`fedbench report {report.folder}`. Also as [HTML](report.html).",
        "",
        f"- cells: {len(records.cells)} complete, {len(records.failed)} failed"
        + (f", {len(report.stale)} stale records not shown" if report.stale else ""),
        f"- code version: {', '.join(codes) or 'unknown'}"
        + (" (cells from more than one code version)" if len(codes) > 1 else ""),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
        "## Main table",
        "",
        "Mean ± std over seeds; best value per column in **bold** (direction from each metric's "
        "`higher_is_better`). Privacy columns show the strongest attack's result (named in "
        "parentheses, with the view it used); n/a = the attack's views are closed by the defense.",
        "",
        report.markdown,
        "Also as [LaTeX](tables/main.tex) and [CSV](tables/main.csv); all metrics per cell are in "
        f"[records.jsonl]({report.link('records.jsonl')}).",
        "",
        "## Differential privacy",
        "",
        "Each ε as its defense reported it, with the δ, the neighbouring relation (user = one "
        "client, example = one record), the accountant and whether noise came from a CSPRNG.",
        "",
        (report.out / "tables" / "privacy.md").read_text(encoding="utf-8"),
        *_figure_lines(report),
        *_trailer_lines(report),
    ]
    return "\n".join(lines)


def per_cell_figures(records: RecordSet) -> list[tuple[str, str, str]]:
    """(cell id, "label — attack", path in the results folder) of the attacks' figures."""
    labels = {c: r.label for c, r in records.cells.items()}
    return [
        (m.cell, f"{labels.get(m.cell, m.cell)} — {m.attack}", m.path)
        for m in records.metrics
        if m.metric == "figure" and m.path
    ]


def _figure_lines(report: Report) -> list[str]:
    lines: list[str] = []
    figures = [p for p in report.files if p.suffix == ".png"]
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{p.stem}]({p.relative_to(report.out).as_posix()})" for p in figures]
        lines.append("")
    per_cell = per_cell_figures(report.records)
    if per_cell:
        lines += ["## Per-cell figures", ""]
        for _, label, path in per_cell:
            lines.append(f"- {label}: [{Path(path).name}]({report.link(path)})")
        lines.append("")
    return lines


def _trailer_lines(report: Report) -> list[str]:
    lines: list[str] = []
    if report.records.failed:
        lines += ["## Failed cells", ""]
        lines += [f"- {r.label}: {r.error}" for r in report.records.failed.values()]
        lines.append("")
    if report.stale:
        lines += ["## Stale records (not in the current suite; not in any table)", ""]
        lines += [f"- {label}" for label in report.stale] + [""]
    if report.problems:
        lines += ["## Skipped record lines", ""] + [f"- {p}" for p in report.problems] + [""]
    return lines
