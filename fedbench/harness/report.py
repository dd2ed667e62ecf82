"""``fedbench report``: tables, figures and one report.md per results folder, from records only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedbench.config import parse_suite
from fedbench.errors import ConfigError
from fedbench.harness.figures import attack_success, inversion_vs_clients, privacy_utility
from fedbench.harness.privacy_table import privacy_markdown, privacy_table
from fedbench.harness.records import RecordSet, read_results_dir
from fedbench.harness.suite import expand
from fedbench.harness.tables import (
    MainTable,
    main_table,
    sweep_label,
    to_csv,
    to_latex,
    to_markdown,
)

COMMAND_FILE = "command.txt"


@dataclass
class Report:
    """What ``write_report`` produced."""

    folder: Path
    table: MainTable
    markdown: str
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _provenance(records: RecordSet) -> tuple[list[str], dict[str, Any]]:
    commits = sorted({str(c.git_commit) for c in records.cells.values()})
    versions: dict[str, Any] = {}
    for cell in records.cells.values():
        for name, version in cell.versions.items():
            versions.setdefault(name, set()).add(version)
    return commits, {k: ", ".join(sorted(v)) for k, v in sorted(versions.items())}


def _figure_rows(records: RecordSet) -> list[tuple[str, str]]:
    """(cell label, path) of per-cell figures the attacks wrote."""
    labels = {c: r.label for c, r in records.cells.items()}
    return [
        (f"{labels.get(m.cell, m.cell)} — {m.attack}", m.path)
        for m in records.metrics
        if m.metric == "figure" and m.path
    ]


def _suite_order(suite: dict[str, Any]) -> list[tuple[str, str, str]] | None:
    """Row keys in the order the suite expands its cells (None if it no longer expands)."""
    try:
        cells = expand(parse_suite(suite))
    except (ConfigError, TypeError):
        return None
    return list(dict.fromkeys((c.experiment, c.defense, sweep_label(c.grid)) for c in cells))


def write_report(folder: Path) -> Report:
    """Rebuild every table and figure of ``folder`` and its report.md."""
    records = read_results_dir(folder)
    suite_file = folder / "suite.yaml"
    suite: dict[str, Any] = {}
    if suite_file.exists():
        suite = yaml.safe_load(suite_file.read_text(encoding="utf-8")) or {}
    table = main_table(records, order=_suite_order(suite))
    report = Report(folder=folder, table=table, markdown=to_markdown(table),
                    problems=list(records.problems))
    tables = folder / "tables"
    tables.mkdir(exist_ok=True)
    for name, content in (
        ("main.md", report.markdown),
        ("main.tex", to_latex(table, caption=str(suite.get("description", "")).strip())),
        ("main.csv", to_csv(table)),
        ("privacy.md", privacy_markdown(privacy_table(records))),
    ):
        (tables / name).write_text(content, encoding="utf-8")
        report.files.append(tables / name)
    figures = folder / "figures"
    made = [
        privacy_utility(records, figures / "privacy_utility.png"),
        attack_success(records, figures / "attack_success.png"),
    ]
    for key in (suite.get("grid") or {}):
        if "clients" in key:
            made.append(inversion_vs_clients(records, figures / "inversion_vs_clients.png", key))
    report.files += [p for p in made if p is not None]
    (folder / "report.md").write_text(_report_markdown(folder, records, report, suite),
                                      encoding="utf-8")
    report.files.append(folder / "report.md")
    return report


def _report_markdown(
    folder: Path, records: RecordSet, report: Report, suite: dict[str, Any]
) -> str:
    command_file = folder / COMMAND_FILE
    command = (command_file.read_text(encoding="utf-8").strip() if command_file.exists()
               else f"fedbench run {suite.get('name', folder.name)}")
    commits, versions = _provenance(records)
    lines = [
        f"# {suite.get('name', folder.name)}",
        "",
        str(suite.get("description", "")).strip(),
        "",
        f"Produced by `{command}`; rebuilt from the records by `fedbench report {folder}`.",
        "",
        f"- cells: {len(records.cells)} complete, {len(records.failed)} failed",
        f"- git commit: {', '.join(commits) or 'unknown'}",
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
        "[records.jsonl](records.jsonl).",
        "",
        "## Differential privacy",
        "",
        "Each ε as its defense reported it, with the δ, the neighbouring relation (user = one "
        "client, example = one record), the accountant and whether noise came from a CSPRNG.",
        "",
        (folder / "tables" / "privacy.md").read_text(encoding="utf-8"),
    ]
    figures = [p for p in report.files if p.suffix == ".png"]
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{p.stem}]({p.relative_to(folder)})" for p in figures]
        lines.append("")
    per_cell = _figure_rows(records)
    if per_cell:
        lines += ["## Per-cell figures", ""]
        for label, path in per_cell:
            target = Path(path)
            shown = target.relative_to(folder) if target.is_relative_to(folder) else target
            lines.append(f"- {label}: [{shown.name}]({shown})")
        lines.append("")
    if records.failed:
        lines += ["## Failed cells", ""]
        lines += [f"- {r.label}: {r.error}" for r in records.failed.values()]
        lines.append("")
    if report.problems:
        lines += ["## Skipped record lines", ""] + [f"- {p}" for p in report.problems] + [""]
    return "\n".join(lines)
