"""Paper-style tables derived from records only (so they can be rebuilt at any time).

The main table has one row per defense configuration (experiment × defense stack × sweep point)
and column groups for utility, privacy and cost; values are mean ± std over seeds and the best
value of each column is bold, "best" read from the metrics' ``higher_is_better``. When several
attacks report the same metric (e.g. the AUC of five membership attacks), a row shows the
strongest attack's value, the defender's worst case, and names it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fedbench.harness.records import RecordSet

ROW_KEYS = ["experiment", "defense", "sweep"]


@dataclass(frozen=True)
class Column:
    """One column of the main table.

    Attributes:
        header: Column header.
        group: Column group (utility, privacy, cost).
        metric: Metric name in the records.
        source: "fl", "defense" or "attack" (any component of that family).
        digits: Decimals shown.
        detail: Also show which attack (or view) produced the worst-case value.
    """

    header: str
    group: str
    metric: str
    source: str
    digits: int = 3
    detail: str | None = None


MAIN_COLUMNS = (
    Column("accuracy", "utility", "accuracy", "fl"),
    Column("ε", "privacy", "epsilon", "defense", 2, detail="level"),
    Column("audited ε̂", "privacy", "epsilon_lower_bound", "attack", 2),
    Column("GI PSNR (dB)", "privacy", "psnr", "attack", 1, detail="view"),
    Column("GI SSIM", "privacy", "ssim", "attack"),
    Column("GI label acc.", "privacy", "label_accuracy", "attack", 2),
    Column("MIA AUC", "privacy", "mia_auc", "attack", detail="attack"),
    Column("MIA TPR@0.1%FPR", "privacy", "mia_tpr_at_0_1pct_fpr", "attack"),
    Column("agg. time ×plain", "cost", "aggregation_time_ratio", "fl", 1),
    Column("upload B/param", "cost", "upload_bytes_per_param", "fl", 2),
)


def _number(value: float, digits: int) -> str:
    """Fixed decimals, or 3 significant digits for huge values (ε of 2.6e9, not 2640000111.78)."""
    return f"{value:.3g}" if abs(value) >= 1e5 else f"{value:.{digits}f}"


def sweep_label(grid: Any) -> str:
    if not isinstance(grid, dict) or not grid:
        return ""
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in grid.items())


def metric_frame(records: RecordSet) -> pd.DataFrame:
    """Metric rows of complete cells, with row keys (experiment, defense, sweep)."""
    frame = records.frame()
    if frame.empty:
        return frame
    frame = frame.copy()
    frame["sweep"] = [sweep_label(g) for g in frame.get("grid", [None] * len(frame))]
    frame["family"] = [str(s).split(":", 1)[0] for s in frame["source"]]
    return frame


def _worst_case(rows: pd.DataFrame) -> pd.Series:
    """Per seed, the value worst for the defender among several attacks/defenses."""
    higher_better = rows["higher_is_better"].iloc[0]
    ordered = rows.sort_values("value", ascending=bool(higher_better) if higher_better is not None
                               else False, kind="stable")
    return ordered.groupby("seed", sort=False).head(1)


@dataclass
class MainTable:
    """Formatted table plus what tables need for styling."""

    text: pd.DataFrame          # formatted strings (mean ± std), index = row keys
    means: pd.DataFrame         # numeric means for bolding
    best: dict[str, Any]        # column -> best mean (or None)
    insecure: dict[tuple[str, ...], str]
    columns: list[Column]


def _insecure_rows(frame: pd.DataFrame) -> dict[tuple[str, ...], str]:
    """Row key -> why its configuration is insecure (explicitly allowed)."""
    insecure: dict[tuple[str, ...], str] = {}
    for key, group in frame.groupby(ROW_KEYS, sort=False):
        reasons = {str(r) for r in group.get("insecure", pd.Series(dtype=object)).dropna()}
        if reasons:
            insecure[tuple(key)] = "; ".join(sorted(reasons))
    return insecure


def _row_keys(frame: pd.DataFrame, order: list[tuple[str, str, str]] | None) -> list[tuple]:
    keys = list(dict.fromkeys(tuple(k) for k in frame[ROW_KEYS].itertuples(index=False)))
    if order is not None:
        position = {key: i for i, key in enumerate(order)}
        keys.sort(key=lambda key: position.get(key, len(position)))
    return keys


def _cell_text(chosen: pd.DataFrame, column: Column) -> tuple[str, float]:
    """The shown text (mean ± std over seeds, the detail) and the mean of one table cell."""
    values = chosen["value"].astype(float).to_numpy()
    mean = float(values.mean())
    shown = _number(mean, column.digits)
    if len(values) > 1:
        shown += f" ± {_number(float(values.std(ddof=1)), column.digits)}"
    if column.detail:
        details = sorted({str(d) for d in chosen[column.detail].dropna()})
        if details:
            shown += f" ({', '.join(details)})"
    return shown, mean


@dataclass(frozen=True)
class _ColumnValues:
    text: dict[tuple, str]
    means: dict[tuple, float]
    best: float | None


def _column_values(
    frame: pd.DataFrame, column: Column, keys: list[tuple]
) -> _ColumnValues | None:
    """One column's cells (None when no row has a value): the strongest attack's value per row,
    "n/a" where the attack's views were closed, "–" where it did not run."""
    ok = frame[frame["status"] == "ok"]
    rows = ok[(ok["metric"] == column.metric) & (ok["family"] == column.source)]
    rows = rows[rows["value"].notna()]
    if rows.empty:
        return None
    # Rows where an attack that reports this metric elsewhere could not be applied.
    producers = set(rows["attack"].dropna()) if column.source == "attack" else set()
    na = frame[(frame["status"] == "not_applicable") & frame["attack"].isin(producers)]
    not_applicable = {tuple(k) for k in na[ROW_KEYS].itertuples(index=False)}
    text, means = {}, {}
    for key, group in rows.groupby(ROW_KEYS, sort=False):
        text[tuple(key)], means[tuple(key)] = _cell_text(_worst_case(group), column)
    for key in keys:
        text.setdefault(key, "n/a" if key in not_applicable else "–")
    direction = rows["higher_is_better"].iloc[0]
    best = None
    if direction is not None and len(means) > 1:
        values = np.array(list(means.values()))
        best = float(values.max() if direction else values.min())
    return _ColumnValues(text, means, best)


def main_table(
    records: RecordSet,
    columns: tuple[Column, ...] = MAIN_COLUMNS,
    order: list[tuple[str, str, str]] | None = None,
) -> MainTable:
    """Build the main table from records.

    Args:
        records: The records.
        columns: The columns to show (those with no values are left out).
        order: Row keys (experiment, defense, sweep) in suite order; rows follow it (records
            are in completion order, which parallel runs shuffle).
    """
    frame = metric_frame(records)
    if frame.empty:
        empty = pd.DataFrame()
        return MainTable(empty, empty, {}, {}, [])
    keys = _row_keys(frame, order)
    text = pd.DataFrame(index=pd.MultiIndex.from_tuples(keys, names=ROW_KEYS))
    means = pd.DataFrame(index=text.index)
    best: dict[str, Any] = {}
    used = []
    for column in columns:
        values = _column_values(frame, column, keys)
        if values is None:
            continue
        used.append(column)
        text[column.header] = pd.Series(values.text)
        means[column.header] = pd.Series(values.means)
        if values.best is not None:
            best[column.header] = values.best
    return MainTable(text, means, best, _insecure_rows(frame), used)


def display_frame(table: MainTable) -> pd.DataFrame:
    """Index as columns, insecure rows marked with †."""
    shown = table.text.copy()
    if shown.empty:
        return shown.reset_index()
    shown = shown.reset_index()
    shown["defense"] = [
        d + (" †" if (e, d, s) in table.insecure else "")
        for e, d, s in zip(shown["experiment"], shown["defense"], shown["sweep"], strict=True)
    ]
    if not (shown["sweep"] != "").any():
        shown = shown.drop(columns="sweep")
    return shown


def is_best(table: MainTable, key: tuple[str, ...], header: str) -> bool:
    if header not in table.best:
        return False
    value = table.means.at[key, header] if key in table.means.index else math.nan
    return bool(np.isclose(value, table.best[header]))


def footnotes(table: MainTable) -> list[str]:
    """One line per insecure row: which setting was explicitly allowed."""
    return [f"† insecure setting, explicitly allowed: {key[1]} — {why}"
            for key, why in table.insecure.items()]


def _footnote(table: MainTable) -> str:
    lines = footnotes(table)
    return "\n" + "\n".join(lines) + "\n" if lines else ""


def to_markdown(table: MainTable) -> str:
    """GitHub-flavoured Markdown with the best value per column in bold."""
    shown = display_frame(table)
    if shown.empty:
        return "(no complete records)"
    headers = [str(c) for c in shown.columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for (key, row) in zip(table.text.index, shown.itertuples(index=False), strict=True):
        cells = []
        for header, value in zip(headers, row, strict=True):
            bold = header in table.best and is_best(table, key, header)
            cells.append(f"**{value}**" if bold else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" + _footnote(table)


def to_csv(table: MainTable) -> str:
    """CSV of the numeric means (one column per metric) plus the formatted cells."""
    if table.text.empty:
        return ""
    numeric = table.means.add_suffix(" (mean)")
    merged = table.text.join(numeric).reset_index()
    merged["insecure"] = [table.insecure.get(tuple(k), "") for k in
                          merged[ROW_KEYS].itertuples(index=False)]
    return str(merged.to_csv(index=False))


def to_latex(table: MainTable, caption: str = "", label: str = "tab:fedbench") -> str:
    """LaTeX (booktabs) via pandas Styler, best values in bold, column groups as a header row."""
    shown = display_frame(table)
    if shown.empty:
        return ""
    groups = {c.header: c.group for c in table.columns}
    shown.columns = pd.MultiIndex.from_tuples(
        [(groups.get(str(c), ""), str(c)) for c in shown.columns]
    )
    styler = shown.style.hide(axis="index").format(escape="latex")
    styler = styler.format_index(escape="latex", axis=1)

    def bold(column: pd.Series) -> list[str]:
        header = column.name[1]
        return [
            "font-weight: bold;" if is_best(table, key, header) else ""
            for key in table.text.index
        ]

    styler = styler.apply(bold, axis=0)
    latex = styler.to_latex(
        hrules=True, convert_css=True, caption=caption or None, label=label,
        multicol_align="c", position_float="centering",
    )
    for plain, tex in _LATEX_SYMBOLS:
        latex = latex.replace(plain, tex)
    return str(latex)


_LATEX_SYMBOLS = (
    ("†", r"$^\dagger$"),
    ("±", r"$\pm$"),
    ("ε̂", r"$\hat\varepsilon$"),
    ("ε", r"$\varepsilon$"),
    ("×", r"$\times$"),
)
