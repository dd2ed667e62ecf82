"""The DP table: every ε with its δ, level, accountant and whether secure mode was on.

The main table shows ε next to attack success; this one says exactly what each ε means, as the
defense reported it (the ``PrivacyReport`` terms are fields of the ``epsilon`` record).
"""

from __future__ import annotations

import pandas as pd

from fedbench.harness.records import RecordSet
from fedbench.harness.tables import ROW_KEYS, metric_frame


def _first(group: pd.DataFrame, column: str) -> str:
    values = group[column].dropna()
    return "" if values.empty else str(values.iloc[0])


def privacy_table(records: RecordSet) -> pd.DataFrame:
    """One row per defense configuration × DP defense: ε (mean ± std over seeds) and its terms."""
    frame = metric_frame(records)
    if frame.empty:
        return pd.DataFrame()
    rows = frame[(frame["metric"] == "epsilon") & (frame["status"] == "ok")]
    out = []
    for key, group in rows.groupby([*ROW_KEYS, "source"], sort=False):
        values = group["value"].astype(float)
        shown = f"{values.mean():.3g}" + (f" ± {values.std(ddof=1):.2g}" if len(values) > 1 else "")
        delta = group["delta"].dropna()
        out.append({
            "experiment": key[0],
            "defense": key[1] + (f" [{key[2]}]" if key[2] else ""),
            "mechanism": str(key[3]).removeprefix("defense:"),
            "ε": shown,
            "δ": f"{float(delta.iloc[0]):g}" if not delta.empty else "",
            "level": _first(group, "level"),
            "accountant": _first(group, "accountant"),
            "secure mode": _first(group, "secure_mode"),
            "insecure": _first(group, "insecure"),
            "details": _first(group, "note"),
        })
    return pd.DataFrame(out)


def privacy_markdown(table: pd.DataFrame) -> str:
    """The DP table as Markdown."""
    if table.empty:
        return "(no DP defense in these records)"
    headers = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
