"""Round time against clients per round, log-log, for every engine: ``scaling_clients.png``.

Reads the pytest-benchmark JSON of ``test_scale.py`` and draws one panel per workload
(``digits-mlp``, ``digits-convnet``, ``cross-device-mlp``): the best round time of fedbench's
sequential loop and of its vectorized engine (solid), each configuration's arithmetic bound
(dotted: training FLOPs over the same-run matmul rate), and, in the ``digits-mlp`` panel,
Flower's simulation engine on the same workload (dashed: its best round after the first; its
start-up is in the JSON, not on the plot).

Run: ``python benchmarks/scale_figure.py SCALE.json OUT.png``.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

Points = list[tuple[int, float]]  # (clients per round, seconds)
ORDER = ("digits-mlp", "digits-convnet", "cross-device-mlp")
STYLES = {  # line → (colour, line style, marker)
    "loop": ("tab:blue", "-", "o"),
    "vectorized": ("tab:orange", "-", "s"),
    "arithmetic bound": ("grey", ":", None),
    "Flower (run_simulation)": ("tab:red", "--", "^"),
}


def series(rows: list[dict[str, Any]]) -> dict[str, dict[str, Points]]:
    """workload → line → sorted (clients per round, seconds) points."""
    out: dict[str, dict[str, Points]] = defaultdict(lambda: defaultdict(list))
    for info in rows:
        workload, m = info.get("workload"), info.get("clients_per_round")
        if workload is None or m is None:
            continue
        lines = out[workload]
        if "flower_round_s" in info:
            lines["Flower (run_simulation)"].append((m, info["flower_round_s"]))
            continue
        for engine in info.get("engines", []):
            lines[engine].append((m, info[f"{engine}_best_round_s"]))
        lines["arithmetic bound"].append((m, info["bound_s"]))
    for lines in out.values():
        for points in lines.values():
            points.sort()
    return out


def draw(json_path: Path, png: Path) -> Path:
    """Draw the figure of ``json_path`` into ``png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(json_path.read_text(encoding="utf-8"))
    panels = series([b.get("extra_info") or {} for b in data["benchmarks"]])
    keys = sorted(panels, key=lambda k: (k not in ORDER, ORDER.index(k) if k in ORDER else k))
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 3.9), squeeze=False,
                             layout="constrained")
    for ax, key in zip(axes[0], keys, strict=True):
        for name, (colour, style, marker) in STYLES.items():
            points = panels[key].get(name)
            if not points:
                continue
            m, seconds = zip(*points, strict=True)
            ax.plot(m, seconds, color=colour, linestyle=style, marker=marker, label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("clients per round")
        ax.set_ylabel("seconds per round (best)")
        ax.legend(fontsize=7, loc="upper left")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


if __name__ == "__main__":
    print(draw(Path(sys.argv[1]), Path(sys.argv[2])))
