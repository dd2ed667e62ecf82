"""Round time against the number of clients, with the AES lower bound: ``scaling_rounds.png``.

Reads the pytest-benchmark JSON of ``test_aggregation_rounds.py`` and draws, log-log, one panel
per (party, dimension): each channel's complete round (solid; circles no dropout, crosses 10%)
and its AES bound (dotted, same colour), so the gap between the two lines is the
``round_vs_aes_bound`` ratio the benchmark records; dash-dotted, the authenticated bound (the
AES bound plus one raw GMAC pass per masked input), where the results record it.

Run: ``python benchmarks/aggregation_figure.py ROUNDS.json OUT.png``.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

Key = tuple[str, float]  # (channel, dropout)
Points = list[tuple[int, float, float]]  # (n, seconds, bound)
Panel = tuple[str, int]  # (party, dim)


def series(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[Key, Points]]:
    """(party, dim) → (channel, dropout) → sorted (n, seconds, bound) points of our rounds."""
    out: dict[tuple[str, int], dict[Key, Points]] = defaultdict(lambda: defaultdict(list))
    for info in rows:
        if info.get("role") != "channel" or "aes_bound_seconds" not in info:
            continue
        line = out[(info["phase"], info["dim"])][(info["channel"], info["dropout"])]
        line.append((info["clients"], info["seconds"], info["aes_bound_seconds"]))
    for lines in out.values():
        for points in lines.values():
            points.sort()
    return out


def authenticated_series(rows: list[dict[str, Any]]) -> dict[Panel, dict[Key, list[float]]]:
    """The authenticated bound beside each point of :func:`series` (empty for results from
    before it was recorded)."""
    out: dict[Panel, dict[Key, list[tuple[int, float]]]] = defaultdict(
        lambda: defaultdict(list))
    for info in rows:
        if info.get("role") != "channel" or "authenticated_bound_seconds" not in info:
            continue
        line = out[(info["phase"], info["dim"])][(info["channel"], info["dropout"])]
        line.append((info["clients"], info["authenticated_bound_seconds"]))
    result: dict[Panel, dict[Key, list[float]]] = defaultdict(lambda: defaultdict(list))
    for panel, lines in out.items():
        for key, points in lines.items():
            result[panel][key] = [bound for _, bound in sorted(points)]
    return result


def draw(json_path: Path, png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(json_path.read_text(encoding="utf-8"))
    rows = [b.get("extra_info") or {} for b in data["benchmarks"]]
    panels = series(rows)
    authenticated = authenticated_series(rows)
    keys = sorted(panels)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.4 * len(keys), 3.8), squeeze=False,
                             layout="constrained")
    colours = {"secagg": "tab:blue", "secagg+": "tab:orange"}
    for ax, key in zip(axes[0], keys, strict=True):
        for (channel, dropout), points in sorted(panels[key].items()):
            n, seconds, bound = zip(*points, strict=True)
            colour = colours.get(channel, "tab:green")
            label = f"{channel}{', 10% dropout' if dropout else ''}"
            ax.plot(n, seconds, color=colour, marker="x" if dropout else "o",
                    linestyle="-" if not dropout else "--", label=label)
            ax.plot(n, bound, color=colour, linestyle=":", alpha=0.8,
                    label=f"{label}: AES bound")
            if authenticated[key][(channel, dropout)]:
                ax.plot(n, authenticated[key][(channel, dropout)], color=colour,
                        linestyle="-.", alpha=0.5, label=f"{label}: authenticated bound")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"{key[0]}, d={key[1]:.0e}", fontsize=10)
        ax.set_xlabel("clients n")
        ax.set_ylabel("best time (s)")
    axes[0][-1].legend(fontsize=7, loc="upper left")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


if __name__ == "__main__":
    print(draw(Path(sys.argv[1]), Path(sys.argv[2])))
