"""The sweep-scale results as accuracy against the number of clients, and SecAgg+'s cost per n.

Reads ``results/sweep-scale/records.jsonl`` (written by ``fedbench run sweep-scale --jobs 2
--results-dir results``) and writes

- ``figures/accuracy_vs_clients.png``: one panel per partition (IID, Dirichlet α = 0.1, 1,
  100), test accuracy against N (log), one line per defense (none, DP-FedAvg at ε ≈ 8 and
  ≈ 2): the seeds' mean, each seed as a dot, bars spanning their 95% Wilson intervals;
- ``accuracy.md``: the same numbers as a table (one seed: value [interval]; several: mean ± std
  over the seeds and each seed's value), with DP-FedAvg's noise multiplier z and the
  noise std on the mean update z·C/(qN), and SecAgg+'s cost beside them (encode seconds per
  client, neighbours k, upload bytes per parameter).

Run from the repository root: ``python results/sweep-scale/scale_figure.py``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from fedbench.harness.records import read_results_dir

HERE = Path(__file__).resolve().parent
DP = ("none", "dp_fedavg ε≈8", "dp_fedavg ε≈2")
SAMPLE_RATE, CLIP = 0.25, 1.0  # the suite's q and C


def cells() -> pd.DataFrame:
    """One row per (experiment, defense): partition, N, the mean of each metric over the seeds,
    the accuracy of every seed (``seeds``, in seed order) and the widest of their 95% Wilson
    intervals (``low``, ``high``); IID first, then by partition and N."""
    frame = read_results_dir(HERE).frame()
    frame = frame[frame["value"].notna()]
    keys = ["experiment", "defense"]
    wide = frame.pivot_table(index=keys, columns="metric", values="value", aggfunc="mean")
    accuracy = frame[frame["metric"] == "accuracy"].sort_values("seed")
    grouped = accuracy.groupby(keys)
    wide["seeds"] = grouped["value"].agg(list)
    wide["low"] = grouped["interval"].agg(lambda s: min(i["low"] for i in s))
    wide["high"] = grouped["interval"].agg(lambda s: max(i["high"] for i in s))
    wide = wide.reset_index()
    parts = wide["experiment"].str.rsplit("-n", n=1, expand=True)
    wide = wide.assign(partition=parts[0], clients=parts[1].astype(int),
                       skewed=parts[0] != "iid")
    return wide.sort_values(["skewed", "partition", "clients"])  # IID first, then by α


def draw(table: pd.DataFrame, path: Path) -> None:
    """Accuracy (mean over seeds; bars: the widest Wilson interval, dots: each seed) against
    N, one panel per partition, one line per defense."""
    partitions = sorted(table["partition"].unique(), key=lambda p: (p != "iid", p))
    fig, axes = plt.subplots(1, len(partitions), figsize=(4.2 * len(partitions), 3.6),
                             sharey=True, squeeze=False, layout="constrained")
    for ax, partition in zip(axes[0], partitions, strict=True):
        for defense, marker in zip(DP, ("o", "s", "^"), strict=True):
            rows = table[(table["partition"] == partition) & (table["defense"] == defense)]
            rows = rows.sort_values("clients")
            mean = rows["accuracy"]
            bars = ax.errorbar(rows["clients"], mean, yerr=[mean - rows["low"],
                               rows["high"] - mean], marker=marker, capsize=3, label=defense)
            for n, seeds in zip(rows["clients"], rows["seeds"], strict=True):
                ax.scatter([n] * len(seeds), seeds, s=8, color=bars[0].get_color(), alpha=0.6)
        ax.set_xscale("log")
        ax.set_title(partition if partition == "iid" else f"Dirichlet α = {partition[3:]}")
        ax.set_xlabel("clients N (same 4,000 digits; q = 0.25)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (seeds' mean, 95% Wilson)")
    axes[0][0].legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _accuracy(row: pd.Series) -> str:
    """One seed: its value and interval; several: the mean ± std over seeds, and each seed."""
    seeds = row["seeds"]
    if len(seeds) == 1:
        return f"{seeds[0]:.3f} [{row['low']:.3f}, {row['high']:.3f}]"
    each = " / ".join(f"{v:.3f}" for v in seeds)
    return f"{pd.Series(seeds).mean():.3f} ± {pd.Series(seeds).std():.3f} ({each})"


def _secagg(by: pd.DataFrame) -> str:
    if "secagg+" not in by.index:
        return "– | – | –"
    row = by.loc["secagg+"]
    return (f"{row['secagg_degree_mean']:.1f} | {1e3 * row['encode_seconds_per_client']:.2f} | "
            f"{row['upload_bytes_per_param']:.3f}")


def markdown(table: pd.DataFrame) -> str:
    """Accuracy per (partition, N) and defense; z, the noise on the mean, SecAgg+'s cost."""
    lines = ["| partition | N | none | DP ε≈8 | DP ε≈2 | z (ε≈8 / ε≈2) | noise std on the "
             "mean, z·C/(qN) | SecAgg+ k | SecAgg+ encode ms/client | SecAgg+ B/param |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (partition, n), rows in table.groupby(["partition", "clients"], sort=False):
        by = rows.set_index("defense")
        z = [by.loc[d, "noise_multiplier"] for d in DP[1:]]
        noise = " / ".join(f"{v * CLIP / (SAMPLE_RATE * n):.3g}" for v in z)
        lines.append(
            f"| {partition} | {n} | {' | '.join(_accuracy(by.loc[d]) for d in DP)} | "
            f"{z[0]:.3g} / {z[1]:.3g} | {noise} | {_secagg(by)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    found = cells()
    draw(found, HERE / "figures" / "accuracy_vs_clients.png")
    (HERE / "accuracy.md").write_text(markdown(found), encoding="utf-8")
    print((HERE / "accuracy.md").read_text(encoding="utf-8"))
