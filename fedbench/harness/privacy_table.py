"""The DP table: every ε with its δ, level, accountant and whether secure mode was on.

The main table shows ε next to attack success; this one says exactly what each ε means, as the
defense reported it (``PrivacyReport``, recorded in the ``epsilon`` row's note).
"""

from __future__ import annotations

import re

import pandas as pd

from fedbench.harness.records import RecordSet
from fedbench.harness.tables import ROW_KEYS, metric_frame

_FIELDS = re.compile(
    r"δ=(?P<delta>[^,]+), (?P<level>\w+)-level, accountant=(?P<accountant>\w+), "
    r"secure_mode=(?P<secure>\w+)(?:; (?P<rest>.*))?"
)


def privacy_table(records: RecordSet) -> pd.DataFrame:
    """One row per defense configuration × DP defense: ε (mean ± std over seeds) and its terms."""
    frame = metric_frame(records)
    if frame.empty:
        return pd.DataFrame()
    rows = frame[(frame["metric"] == "epsilon") & (frame["status"] == "ok")]
    out = []
    for key, group in rows.groupby([*ROW_KEYS, "source"], sort=False):
        values = group["value"].astype(float)
        terms = _FIELDS.match(str(group["note"].iloc[0]))
        shown = f"{values.mean():.3g}" + (f" ± {values.std(ddof=1):.2g}" if len(values) > 1 else "")
        out.append({
            "experiment": key[0],
            "defense": key[1] + (f" [{key[2]}]" if key[2] else ""),
            "mechanism": str(key[3]).removeprefix("defense:"),
            "ε": shown,
            "δ": terms["delta"] if terms else "",
            "level": terms["level"] if terms else "",
            "accountant": terms["accountant"] if terms else "",
            "secure mode": terms["secure"] if terms else "",
            "insecure": str(group["insecure"].dropna().iloc[0]) if group["insecure"].notna().any()
            else "",
            "details": (terms["rest"] or "") if terms else str(group["note"].iloc[0]),
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
