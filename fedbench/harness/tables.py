"""Paper-style tables derived from records only (so they can be rebuilt at any time).

The main table has one row per defense configuration (experiment × defense stack × sweep point)
and column groups for utility, privacy and cost. When several attacks (or one attack on
several views) report the same metric, a row shows the strongest measured value, the
defender's worst case, and names the attack and view.

Every value carries its uncertainty: mean ± std over seeds where a row has several (its 95%
interval is the t interval of the mean), otherwise the value and its 95% interval over examples
as recorded (bootstrap or Wilson). What the numbers may claim:

- An attack no better than its failure baseline prints as such, not as a number to rank: a
  reconstruction within 3 dB of a random image's PSNR is "failed", a membership AUC whose
  interval holds 0.5 is "chance".
- Bold marks the one row of an experiment that is better than every other row beyond noise
  (its interval disjoint from theirs), and only among comparable values: ε of the user and of
  the example level are separate columns; a column where some row already made the attack fail
  has no numeric winner; a row without an interval is never bold, except in exact columns
  (accountant ε, bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fedbench.adversary import HONEST_BUT_CURIOUS
from fedbench.harness.records import RecordSet
from fedbench.metrics.intervals import Interval, mean_interval

ROW_KEYS = ["experiment", "defense", "sweep"]
#: A reconstruction this close to a random image's PSNR (dB) recovered nothing.
FAILED_PSNR_MARGIN = 3.0
#: A membership AUC whose interval holds this is no better than guessing.
CHANCE_AUC = 0.5


@dataclass(frozen=True)
class Column:
    """One column of the main table.

    Attributes:
        header: Column header.
        group: Column group (utility, privacy, cost).
        metric: Metric name in the records.
        source: "fl", "defense" or "attack" (any component of that family).
        digits: Decimals shown.
        detail: Record fields named beside the worst-case value (which attack, which view).
        level: Only ε rows of this privacy level (``user`` or ``example``).
        exact: The value is computed, not measured on samples (no noise to exceed).
    """

    header: str
    group: str
    metric: str
    source: str
    digits: int = 3
    detail: tuple[str, ...] = ()
    level: str | None = None
    exact: bool = False


MAIN_COLUMNS = (
    Column("accuracy", "utility", "accuracy", "fl"),
    Column("ε (user)", "privacy", "epsilon", "defense", 2, level="user", exact=True),
    Column("ε (example)", "privacy", "epsilon", "defense", 2, level="example", exact=True),
    Column("audited ε̂", "privacy", "epsilon_lower_bound", "attack", 2),
    Column("GI PSNR (dB)", "privacy", "psnr", "attack", 1, detail=("attack", "view")),
    Column("GI SSIM", "privacy", "ssim", "attack"),
    Column("GI label acc.", "privacy", "label_accuracy", "attack", 2),
    Column("GI exact (>60 dB)", "privacy", "exact_recovery", "attack", 2,
           detail=("attack", "view")),
    Column("MIA AUC", "privacy", "mia_auc", "attack", detail=("attack", "view")),
    Column("MIA TPR@0.1%FPR", "privacy", "mia_tpr_at_0_1pct_fpr", "attack"),
    Column("agg. time ×plain", "cost", "aggregation_time_ratio", "fl", 1),
    Column("upload B/param", "cost", "upload_bytes_per_param", "fl", 2, exact=True),
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


def _worst_case(rows: pd.DataFrame) -> pd.DataFrame:
    """Per seed, the row worst for the defender among several attacks, views or defenses."""
    higher_better = rows["higher_is_better"].iloc[0]
    ordered = rows.sort_values("value", ascending=bool(higher_better) if higher_better is not None
                               else False, kind="stable")
    return ordered.groupby("seed", sort=False).head(1)


@dataclass(frozen=True)
class Summary:
    """One table cell.

    Attributes:
        mean: The worst-case value (mean over seeds).
        interval: Its 95% interval (None: unknown).
        text: What the table prints.
        verdict: "failed" or "chance" when the attack did no better than its failure baseline.
    """

    mean: float
    interval: Interval | None
    text: str
    verdict: str = ""


def _recorded_interval(row: pd.Series) -> Interval | None:
    value = row.get("interval")
    return Interval(**value) if isinstance(value, dict) else None


def _verdict(metric: str, mean: float, interval: Interval | None, baseline: float | None) -> str:
    if metric == "psnr" and baseline is not None and mean <= baseline + FAILED_PSNR_MARGIN:
        return "failed"
    if metric == "mia_auc" and interval is not None and interval.contains(CHANCE_AUC):
        return "chance"
    return ""


def summarise(chosen: pd.DataFrame, column: Column, baseline: float | None = None) -> Summary:
    """The table cell of one row: worst-case values per seed → mean, uncertainty, verdict."""
    values = chosen["value"].astype(float).to_numpy()
    mean = float(values.mean())
    shown = _number(mean, column.digits)
    if len(values) > 1:
        interval = mean_interval(values)
        shown += f" ± {_number(float(values.std(ddof=1)), column.digits)}"
    else:
        interval = _recorded_interval(chosen.iloc[0])
        if interval is not None:
            low, high = (_number(v, column.digits) for v in (interval.low, interval.high))
            shown += f" [{low}, {high}]"
    if interval is None and column.exact:
        interval = Interval(mean, mean, "exact")
    verdict = _verdict(column.metric, mean, interval, baseline)
    if verdict:
        shown = f"{verdict} ({shown})"
    details = [", ".join(sorted({str(d) for d in chosen[f].dropna()})) for f in column.detail
               if f in chosen]
    if any(details):
        shown += f" ({' @ '.join(d for d in details if d)})"
    return Summary(mean, interval, shown, verdict)


def _psnr_baselines(frame: pd.DataFrame) -> dict[tuple, float]:
    """Row key -> the mean PSNR of a random image against its attacked examples."""
    rows = frame[(frame["metric"] == "psnr_failure_baseline") & frame["value"].notna()]
    return {tuple(k): float(g["value"].mean()) for k, g in rows.groupby(ROW_KEYS, sort=False)}


def _bold_row(summaries: dict[tuple, Summary], higher_is_better: bool) -> tuple | None:
    """The one row better than every other beyond noise, or None (see the module docstring)."""
    if len(summaries) < 2 or any(s.verdict or s.interval is None for s in summaries.values()):
        return None
    sign = 1.0 if higher_is_better else -1.0
    ranked = sorted(summaries, key=lambda k: sign * summaries[k].mean, reverse=True)
    best = summaries[ranked[0]]
    assert best.interval is not None
    others = [summaries[k].interval for k in ranked[1:]]
    return ranked[0] if not any(best.interval.overlaps(o) for o in others if o) else None


@dataclass
class MainTable:
    """Formatted table plus what tables need for styling."""

    text: pd.DataFrame          # formatted strings, index = row keys
    means: pd.DataFrame         # numeric worst-case means
    bold: set[tuple[tuple, str]]  # (row key, header) of values better beyond noise
    insecure: dict[tuple[str, ...], str]
    columns: list[Column]
    adversaries: dict[tuple[str, ...], str] = field(default_factory=dict)  # row key -> label


def _insecure_rows(frame: pd.DataFrame) -> dict[tuple[str, ...], str]:
    """Row key -> why its configuration is insecure (explicitly allowed)."""
    insecure: dict[tuple[str, ...], str] = {}
    for key, group in frame.groupby(ROW_KEYS, sort=False):
        reasons = {str(r) for r in group.get("insecure", pd.Series(dtype=object)).dropna()}
        if reasons:
            insecure[tuple(key)] = "; ".join(sorted(reasons))
    return insecure


def _adversaries(frame: pd.DataFrame) -> dict[tuple[str, ...], str]:
    """Row key -> the adversary (or adversaries) its cells ran against."""
    column = frame.get("adversary", pd.Series(HONEST_BUT_CURIOUS, index=frame.index))
    return {tuple(key): ", ".join(sorted(set(group))) for key, group
            in column.groupby([frame[k] for k in ROW_KEYS], sort=False)}


def _row_keys(frame: pd.DataFrame, order: list[tuple[str, str, str]] | None) -> list[tuple]:
    keys = list(dict.fromkeys(tuple(k) for k in frame[ROW_KEYS].itertuples(index=False)))
    if order is not None:
        position = {key: i for i, key in enumerate(order)}
        keys.sort(key=lambda key: position.get(key, len(position)))
    return keys


@dataclass(frozen=True)
class _ColumnValues:
    text: dict[tuple, str]
    means: dict[tuple, float]
    bold: set[tuple]


def _column_rows(frame: pd.DataFrame, column: Column) -> pd.DataFrame:
    ok = frame[frame["status"] == "ok"]
    rows = ok[(ok["metric"] == column.metric) & (ok["family"] == column.source)]
    if column.level is not None:
        rows = rows[rows.get("level", pd.Series(index=rows.index, dtype=object)) == column.level]
    return rows


def _placeholders(frame: pd.DataFrame, rows: pd.DataFrame, column: Column) -> dict[tuple, str]:
    """Text of rows without a value: "n/a" where the attack's views were closed, or where the
    metric means nothing for the experiment (its note says why), else "–" (not run)."""
    producers = set(rows["attack"].dropna()) if column.source == "attack" else set()
    na = frame[(frame["status"] == "not_applicable") & frame["attack"].isin(producers)]
    shown = {tuple(k): "n/a" for k in na[ROW_KEYS].itertuples(index=False)}
    meaningless = rows[rows["value"].isna() & rows["note"].astype(str).str.startswith("n/a")]
    shown.update({tuple(k): "n/a" for k in meaningless[ROW_KEYS].itertuples(index=False)})
    return shown


def _column_values(
    frame: pd.DataFrame, column: Column, keys: list[tuple]
) -> _ColumnValues | None:
    """One column's cells (None when no row has a value)."""
    rows = _column_rows(frame, column)
    valued = rows[rows["value"].notna()]
    if valued.empty:
        return None
    baselines = _psnr_baselines(frame) if column.metric == "psnr" else {}
    summaries = {
        tuple(key): summarise(_worst_case(group), column, baselines.get(tuple(key)))
        for key, group in valued.groupby(ROW_KEYS, sort=False)
    }
    text = {key: s.text for key, s in summaries.items()}
    placeholders = _placeholders(frame, rows, column)
    for key in keys:
        text.setdefault(key, placeholders.get(key, "–"))
    direction = valued["higher_is_better"].iloc[0]
    bold: set[tuple] = set()
    if direction is not None:
        for experiment in dict.fromkeys(key[0] for key in summaries):
            group = {k: s for k, s in summaries.items() if k[0] == experiment}
            winner = _bold_row(group, bool(direction))
            bold |= {winner} if winner is not None else set()
    return _ColumnValues(text, {k: s.mean for k, s in summaries.items()}, bold)


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
        return MainTable(empty, empty, set(), {}, [])
    keys = _row_keys(frame, order)
    text = pd.DataFrame(index=pd.MultiIndex.from_tuples(keys, names=ROW_KEYS))
    means = pd.DataFrame(index=text.index)
    bold: set[tuple[tuple, str]] = set()
    used = []
    for column in columns:
        values = _column_values(frame, column, keys)
        if values is None:
            continue
        used.append(column)
        text[column.header] = pd.Series(values.text)
        means[column.header] = pd.Series(values.means)
        bold |= {(key, column.header) for key in values.bold}
    return MainTable(text, means, bold, _insecure_rows(frame), used, _adversaries(frame))


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
    # Which adversary each row faced, once any row faced more than an honest-but-curious server.
    adversaries = [table.adversaries.get(key, HONEST_BUT_CURIOUS) for key in table.text.index]
    if any(a != HONEST_BUT_CURIOUS for a in adversaries):
        shown.insert(list(shown.columns).index("defense") + 1, "adversary", adversaries)
    return shown


def is_best(table: MainTable, key: tuple[str, ...], header: str) -> bool:
    """Whether the value is bold: better than every comparable row beyond noise."""
    return (key, header) in table.bold


def footnotes(table: MainTable) -> list[str]:
    """One line per insecure row: which setting was explicitly allowed."""
    return [f"† insecure setting, explicitly allowed: {key[1]} — {why}"
            for key, why in table.insecure.items()]


def _footnote(table: MainTable) -> str:
    lines = footnotes(table)
    return "\n" + "\n".join(lines) + "\n" if lines else ""


def to_markdown(table: MainTable) -> str:
    """GitHub-flavoured Markdown, values better beyond noise in bold."""
    shown = display_frame(table)
    if shown.empty:
        return "(no complete records)"
    headers = [str(c) for c in shown.columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for (key, row) in zip(table.text.index, shown.itertuples(index=False), strict=True):
        cells = []
        for header, value in zip(headers, row, strict=True):
            cells.append(f"**{value}**" if is_best(table, key, header) else str(value))
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
