"""pytest-benchmark JSON -> one Markdown table and a log-log scaling figure.

Benchmarks record what they measured in ``extra_info`` — ``channel``, ``role`` (``channel``,
``peer`` or ``baseline``), ``phase``, ``clients``, ``dim``, ``dropout``, ``values`` and ratios
measured in the same run, with ``compare`` naming the ratios that matter and ``targets`` their
bounds (see ``benchmarks/aggregation_support.py``); this module only reads that JSON back. Rows
keep the best (minimum) round time, the least noisy statistic on a shared machine.

The table groups comparable rows: by phase, then n, dimension and dropout, with the channels in
the order the suite ran them. The figure has one panel per (n, phase): time against dimension,
one line per channel (and dropout), peers dashed, baselines dotted.

Example:
    >>> data = {"benchmarks": [{"name": "test_x[a]", "param": "a", "params": {},
    ...     "stats": {"min": 2e-6, "median": 3e-6, "rounds": 5},
    ...     "extra_info": {"channel": "ckks", "phase": "server_aggregate", "dim": 1000}}]}
    >>> rows = load_rows(data)
    >>> rows[0].channel, rows[0].dim, format_seconds(rows[0].seconds)
    ('ckks', 1000, '2.00 µs')
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedbench.errors import ResultsError

TABLE_FILE = "benchmarks.md"
FIGURE_FILE = "scaling.png"

# Ratio and byte columns with readable headers, shown when at least one row has a value; any
# other ratio a benchmark declares in ``extra_info["compare"]`` gets a column under its own name.
KNOWN_COLUMNS: dict[str, str] = {
    "ratio_to_plaintext_sum": "× plaintext sum",
    "bytes_per_value": "bytes/value",
    "upload_vs_plaintext": "upload / float32",
    "mask_rate_vs_raw_aes": "mask rate / raw AES",
    "speedup_vs_phe_per_value": "speed-up vs phe",
    "ratio_to_tenseal_loop": "× TenSEAL loop",
    "overhead_fraction": "overhead",
}
ROLE_STYLE = {"channel": "-", "peer": "--", "baseline": ":"}


@dataclass(frozen=True)
class BenchRow:
    """One benchmark of a pytest-benchmark JSON file.

    Attributes:
        name: The test name with its parameters.
        channel: What was measured (``extra_info["channel"]``, else the test name).
        role: ``channel``, ``peer`` or ``baseline`` (``extra_info["role"]``, else ``channel``).
        phase: Which step (``extra_info["phase"]``, else "").
        clients: Number of clients, if recorded.
        dim: Vector length, if recorded.
        dropout: Fraction of clients that dropped out, if recorded.
        values: Values one call processes (``extra_info["values"]``, else ``dim``).
        seconds: Best round time.
        median: Median round time.
        rounds: Number of rounds.
        position: Index in the file (the order the suite ran).
        extra: The whole ``extra_info``.
    """

    name: str
    channel: str
    role: str
    phase: str
    clients: int | None
    dim: int | None
    dropout: float | None
    values: int | None
    seconds: float
    median: float
    rounds: int
    position: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def seconds_per_value(self) -> float | None:
        """Best time per value processed (n·dim for a server's sum)."""
        return None if not self.values else self.seconds / self.values


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _integer(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _rank(items: Sequence[str]) -> dict[str, int]:
    """First-appearance order of ``items``."""
    order: dict[str, int] = {}
    for item in items:
        order.setdefault(item, len(order))
    return order


def load_rows(data: Mapping[str, Any], source: str = "benchmark JSON") -> list[BenchRow]:
    """The rows of a parsed pytest-benchmark JSON document, ordered for display.

    Rows with a dimension come first, grouped by phase, n, dimension and dropout, channels in
    the order the document lists them; the others follow in document order.

    Raises:
        ResultsError: If the document is not pytest-benchmark output.
    """
    benchmarks = data.get("benchmarks")
    if not isinstance(benchmarks, list):
        raise ResultsError(f"{source}: no 'benchmarks' list; is it pytest-benchmark JSON?")
    rows = []
    for index, bench in enumerate(benchmarks):
        stats = bench.get("stats") if isinstance(bench, Mapping) else None
        if not isinstance(stats, Mapping) or "min" not in stats:
            raise ResultsError(f"{source}: benchmark {index} has no stats (run without "
                               "--benchmark-disable)")
        extra = dict(bench.get("extra_info") or {})
        merged = {**dict(bench.get("params") or {}), **extra}
        name = str(bench.get("name", f"benchmark {index}"))
        dim = _integer(merged.get("dim"))
        rows.append(BenchRow(
            name=name,
            channel=str(merged.get("channel") or name.split("[")[0]),
            role=str(merged.get("role") or "channel"),
            phase=str(merged.get("phase") or ""),
            clients=_integer(merged.get("clients", merged.get("num_clients"))),
            dim=dim,
            dropout=_number(merged.get("dropout")),
            values=_integer(merged.get("values")) or dim,
            seconds=float(stats["min"]),
            median=float(stats.get("median", stats["min"])),
            rounds=int(stats.get("rounds", 1)),
            position=index,
            extra=extra,
        ))
    channels = _rank([r.channel for r in rows])
    phases = _rank([r.phase for r in rows])

    def key(row: BenchRow) -> tuple[Any, ...]:
        if row.dim is None:
            return (1, row.position)
        return (0, phases[row.phase], row.clients or 0, row.dim, row.dropout or 0.0,
                channels[row.channel], row.position)

    return sorted(rows, key=key)


def read_rows(path: Path) -> list[BenchRow]:
    """Read a pytest-benchmark JSON file (``--benchmark-json``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ResultsError(f"cannot read benchmark JSON {path}: {err.strerror}") from err
    except json.JSONDecodeError as err:
        raise ResultsError(f"{path}: not JSON ({err.msg}, line {err.lineno})") from err
    if not isinstance(data, Mapping):
        raise ResultsError(f"{path}: expected a JSON object")
    return load_rows(data, str(path))


def format_seconds(seconds: float) -> str:
    """A time with a readable unit: ``1.50 ms``."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= scale:
            return f"{seconds / scale:.2f} {unit}"
    return f"{seconds / 1e-12:.2f} ps"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.3g}"
    return str(value)


def ratio_columns(rows: Sequence[BenchRow]) -> list[tuple[str, str]]:
    """(extra_info key, header) of the ratio columns the rows fill, known ones first."""
    declared = _rank([m for r in rows for m in (r.extra.get("compare") or {})])
    keys = [*KNOWN_COLUMNS, *(m for m in declared if m not in KNOWN_COLUMNS)]
    return [(k, KNOWN_COLUMNS.get(k, k)) for k in keys
            if any(_number(r.extra.get(k)) is not None for r in rows)]


def format_targets(targets: Any) -> str:
    """``{"bytes_per_value": {"max": 8}}`` -> ``bytes/value ≤ 8``."""
    if not isinstance(targets, Mapping):
        return ""
    parts = []
    for metric, bound in targets.items():
        for side, sign in (("min", "≥"), ("max", "≤")):
            if isinstance(bound, Mapping) and side in bound:
                parts.append(f"{KNOWN_COLUMNS.get(metric, metric)} {sign} {bound[side]:g}")
    return ", ".join(parts)


def markdown_table(rows: Sequence[BenchRow]) -> str:
    """One line per benchmark: what, size, best time, per value, ratios and targets."""
    extras = ratio_columns(rows)
    with_dropout = any(r.dropout for r in rows)
    with_targets = any(r.extra.get("targets") for r in rows)
    header = ["phase", "n", "dim", *(["dropout"] if with_dropout else []), "channel", "best",
              "per value", "rounds", *(h for _, h in extras)]
    header += ["target", "target met"] if with_targets else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        per_value = row.seconds_per_value
        channel = row.channel if row.role == "channel" else f"{row.channel} ({row.role})"
        cells = [row.phase, _cell(row.clients), _cell(row.dim)]
        cells += [_cell(row.dropout)] if with_dropout else []
        cells += [
            channel, format_seconds(row.seconds),
            format_seconds(per_value) if per_value is not None else "", str(row.rounds),
        ]
        cells += [_cell(row.extra.get(k)) for k, _ in extras]
        if with_targets:
            targets = format_targets(row.extra.get("targets"))
            cells += [targets, _cell(row.extra.get("meets_target"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


Line = tuple[str, float, str]  # (channel, dropout, role)
Series = dict[tuple[int | None, str], dict[Line, list[tuple[int, float]]]]


def scaling_series(rows: Sequence[BenchRow]) -> Series:
    """(n, phase) -> (channel, dropout, role) -> sorted (dim, best seconds) points.

    Rows with a dimension only; a row without n (a per-client baseline) joins every n.
    """
    with_dim = [r for r in rows if r.dim is not None]
    known = sorted({r.clients for r in with_dim if r.clients is not None})
    counts: list[int | None] = list(known) if known else [None]
    series: Series = {}
    for row in with_dim:
        for clients in counts if row.clients is None else [row.clients]:
            lines = series.setdefault((clients, row.phase or "time"), {})
            line = (row.channel, row.dropout or 0.0, row.role)
            lines.setdefault(line, []).append((row.dim or 0, row.seconds))
    for lines in series.values():
        for points in lines.values():
            points.sort()
    return series


def _label(channel: str, dropout: float, role: str) -> str:
    drop = f", {dropout:.0%} dropout" if dropout else ""
    kind = f" ({role})" if role != "channel" else ""
    return f"{channel}{drop}{kind}"


def scaling_figure(rows: Sequence[BenchRow], path: Path) -> Path | None:
    """Log-log time against dimension: one panel per (n, phase), one line per channel.

    A channel keeps its colour in every panel (baselines in greys); ours are solid, peers
    dashed, baselines dotted; with dropouts, circles mark none and crosses some.

    Returns:
        The PNG written, or None when no row records a dimension.
    """
    series = scaling_series(rows)
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    counts = sorted({n for n, _ in series}, key=lambda n: -1 if n is None else n)
    phases = list(_rank([phase for _, phase in series]))
    in_order = sorted((r for r in rows if r.dim is not None), key=lambda r: r.position)
    lines = list(_rank([r.channel for r in in_order if r.role != "baseline"]))
    greys = list(_rank([r.channel for r in in_order if r.role == "baseline"]))
    # tab10 without its grey, which baselines use.
    palette = [c for c in plt.get_cmap("tab10")(range(10)) if not (c[0] == c[1] == c[2])]
    colour: dict[str, Any] = {c: palette[i % len(palette)] for i, c in enumerate(lines)}
    colour.update({c: str(0.4 * i / max(1, len(greys) - 1)) for i, c in enumerate(greys)})
    fig, axes = plt.subplots(
        len(counts), len(phases), figsize=(4.6 * len(phases), 3.8 * len(counts)), squeeze=False,
        sharex=True, sharey=True, layout="constrained",
    )
    handles: dict[Line, Any] = {}
    for i, clients in enumerate(counts):
        for j, phase in enumerate(phases):
            ax = axes[i][j]
            for line, points in series.get((clients, phase), {}).items():
                channel, dropout, role = line
                dims, seconds = zip(*points, strict=True)
                (handles[line],) = ax.plot(
                    dims, seconds, color=colour[channel], linestyle=ROLE_STYLE.get(role, "-"),
                    marker="x" if dropout else "o", markersize=4,
                )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(phase + ("" if clients is None else f", n={clients}"), fontsize=10)
            if i == len(counts) - 1:
                ax.set_xlabel("dimension (values per client)")
            if j == 0:
                ax.set_ylabel("best time (s)")
    order = {c: k for k, c in enumerate(lines + greys)}
    legend = sorted(handles, key=lambda line: (order[line[0]], line[1]))
    fig.legend([handles[line] for line in legend], [_label(*line) for line in legend],
               loc="outside right center", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_bench_report(json_path: Path, out_dir: Path) -> tuple[str, list[Path]]:
    """Write the Markdown table and the scaling figure of a benchmark JSON file.

    Returns:
        The Markdown table and the files written.
    """
    rows = read_rows(json_path)
    table = markdown_table(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    table_path = out_dir / TABLE_FILE
    figure = scaling_figure(rows, out_dir / FIGURE_FILE)
    picture = f"![time vs dimension]({FIGURE_FILE})\n\n" if figure is not None else ""
    table_path.write_text(
        f"# Benchmarks\n\nFrom `{json_path}`; best of each benchmark's rounds; ratios are "
        f"measured within the run.\n\n{picture}{table}\n",
        encoding="utf-8",
    )
    return table, [table_path] + ([figure] if figure is not None else [])
