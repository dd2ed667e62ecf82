"""Tables derived from records only (so they can be rebuilt at any time)."""

from __future__ import annotations

import pandas as pd

from fedbench.harness.records import RecordSet

_MAIN_METRICS = (
    ("fl", "accuracy"),
    ("defense", "epsilon"),
    ("attack", "mia_auc"),
    ("attack", "psnr"),
    ("fl", "upload_bytes_per_param"),
)


def metric_frame(records: RecordSet) -> pd.DataFrame:
    """Metric rows with a ``column`` label (``metric`` or ``attack: metric``)."""
    frame = records.frame()
    if frame.empty:
        return frame
    frame = frame[frame["status"] == "ok"].copy()
    frame["column"] = [
        f"{a}: {m}" if isinstance(a, str) and a else m
        for a, m in zip(frame["attack"], frame["metric"], strict=True)
    ]
    return frame


def summary_table(records: RecordSet) -> pd.DataFrame:
    """Rows = experiment × defense, columns = key metrics, values = mean ± std over seeds."""
    frame = metric_frame(records)
    if frame.empty:
        return pd.DataFrame()
    wanted = {m for _, m in _MAIN_METRICS}
    frame = frame[frame["metric"].isin(wanted) & frame["value"].notna()]
    grouped = frame.groupby(["experiment", "defense", "column"], sort=False)["value"]
    stats = grouped.agg(["mean", "std", "count"]).reset_index()
    stats["cell"] = [
        f"{m:.3f}" if c < 2 or pd.isna(s) else f"{m:.3f} ± {s:.3f}"
        for m, s, c in zip(stats["mean"], stats["std"], stats["count"], strict=True)
    ]
    table = stats.pivot(index=["experiment", "defense"], columns="column", values="cell")
    return table.fillna("–")


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no tabulate dependency)."""
    if table.empty:
        return "(no complete records)"
    flat = table.reset_index()
    header = [str(c) for c in flat.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in flat.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)
