"""pytest-benchmark JSON -> a Markdown table and a log-log scaling figure.

Benchmarks record what they measured in ``extra_info`` (``channel``, ``phase``, ``clients``,
``dim`` and ratios measured in the same run, see ``benchmarks/``); this module only reads that
JSON back. Rows keep the best (minimum) round time, the least noisy statistic on a shared machine.

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

# extra_info keys shown as columns when at least one row has them: (key, header).
EXTRA_COLUMNS: tuple[tuple[str, str], ...] = (
    ("bytes_per_value", "bytes/value"),
    ("ratio_to_plaintext_sum", "× plaintext sum"),
    ("speedup_vs_phe_per_value", "speed-up vs phe"),
    ("ratio_to_tenseal_loop", "× TenSEAL loop"),
    ("mask_rate_vs_raw_aes", "mask rate / raw AES"),
    ("overhead_fraction", "overhead"),
    ("meets_target", "target met"),
)


@dataclass(frozen=True)
class BenchRow:
    """One benchmark of a pytest-benchmark JSON file.

    Attributes:
        name: The test name with its parameters.
        channel: What was measured (``extra_info["channel"]``, else the test name).
        phase: Which step (``extra_info["phase"]``, else "").
        clients: Number of clients, if recorded.
        dim: Vector length, if recorded.
        seconds: Best round time.
        median: Median round time.
        rounds: Number of rounds.
        extra: The whole ``extra_info``.
    """

    name: str
    channel: str
    phase: str
    clients: int | None
    dim: int | None
    seconds: float
    median: float
    rounds: int
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def seconds_per_value(self) -> float | None:
        """Best time per vector value (per client value for server phases)."""
        if self.dim is None:
            return None
        values = self.dim * (self.clients or 1) if "server" in self.phase else self.dim
        return self.seconds / values


def _integer(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def load_rows(data: Mapping[str, Any], source: str = "benchmark JSON") -> list[BenchRow]:
    """The rows of a parsed pytest-benchmark JSON document, sorted for display.

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
        params = dict(bench.get("params") or {})
        merged = {**params, **extra}
        name = str(bench.get("name", f"benchmark {index}"))
        rows.append(BenchRow(
            name=name,
            channel=str(merged.get("channel") or name.split("[")[0]),
            phase=str(merged.get("phase") or ""),
            clients=_integer(merged.get("clients", merged.get("num_clients"))),
            dim=_integer(merged.get("dim")),
            seconds=float(stats["min"]),
            median=float(stats.get("median", stats["min"])),
            rounds=int(stats.get("rounds", 1)),
            extra=extra,
        ))
    return sorted(rows, key=lambda r: (r.channel, r.phase, r.clients or 0, r.dim or 0, r.name))


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
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.2f} {unit}"
    return f"{seconds / 1e-9:.2f} ns"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.3g}"
    return str(value)


def markdown_table(rows: Sequence[BenchRow]) -> str:
    """One line per benchmark: what, size, best time, per value, and the recorded ratios."""
    extras = [(k, h) for k, h in EXTRA_COLUMNS if any(k in r.extra for r in rows)]
    header = ["channel", "phase", "n", "dim", "best", "per value", "rounds"]
    header += [h for _, h in extras]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        per_value = row.seconds_per_value
        cells = [
            row.channel, row.phase, _cell(row.clients), _cell(row.dim),
            format_seconds(row.seconds),
            format_seconds(per_value) if per_value is not None else "",
            str(row.rounds),
        ]
        cells += [_cell(row.extra.get(k)) for k, _ in extras]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


Series = dict[str, dict[tuple[str, int | None], list[tuple[int, float]]]]


def scaling_series(rows: Sequence[BenchRow]) -> Series:
    """phase -> (channel, n) -> sorted (dim, best seconds) points, for rows with a dim."""
    series: Series = {}
    for row in rows:
        if row.dim is None:
            continue
        lines = series.setdefault(row.phase or "time", {})
        lines.setdefault((row.channel, row.clients), []).append((row.dim, row.seconds))
    for lines in series.values():
        for points in lines.values():
            points.sort()
    return series


def scaling_figure(rows: Sequence[BenchRow], path: Path) -> Path | None:
    """Log-log time against dimension, one panel per phase, one line per channel and n.

    Peers (rows with ``extra_info["peer"]``) are drawn dashed.

    Returns:
        The PNG written, or None when no row records a dimension.
    """
    series = scaling_series(rows)
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    peers = {r.channel for r in rows if r.extra.get("peer")}
    fig, axes = plt.subplots(1, len(series), figsize=(5.5 * len(series), 4.5), squeeze=False)
    for ax, (phase, lines) in zip(axes[0], sorted(series.items()), strict=True):
        for (channel, clients), points in sorted(lines.items(), key=lambda kv: str(kv[0])):
            dims, seconds = zip(*points, strict=True)
            label = channel + (f" (n={clients})" if clients is not None else "")
            style = "--" if channel in peers else "-"
            ax.plot(dims, seconds, marker="o", linestyle=style, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("dimension (values per client)")
        ax.set_ylabel("best time (s)")
        ax.set_title(phase)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
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
    table_path.write_text(
        f"# Benchmarks\n\nFrom `{json_path}`; best of each benchmark's rounds.\n\n{table}\n",
        encoding="utf-8",
    )
    files = [table_path]
    figure = scaling_figure(rows, out_dir / FIGURE_FILE)
    if figure is not None:
        files.append(figure)
    return table, files
