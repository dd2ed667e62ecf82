"""Figures derived from records (seaborn/matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from fedbench.harness.records import RecordSet
from fedbench.harness.tables import ROW_KEYS, metric_frame

_ATTACK_SUCCESS = (("mia_auc", "strongest MIA AUC"), ("psnr", "gradient-inversion PSNR (dB)"))


def _per_row(frame: pd.DataFrame, metric: str, family: str, worst: str) -> pd.Series:
    """Mean over seeds of a metric per table row; ``worst`` picks among several attacks."""
    rows = frame[(frame["metric"] == metric) & (frame["family"] == family)
                 & frame["value"].notna() & (frame["status"] == "ok")]
    if rows.empty:
        return pd.Series(dtype=float)
    per_seed = rows.groupby([*ROW_KEYS, "seed"])["value"].agg(worst)
    return per_seed.groupby(level=ROW_KEYS).mean()


def _label(key: tuple[str, str, str]) -> str:
    _, defense, sweep = key
    return f"{defense}" + (f" [{sweep}]" if sweep else "")


def privacy_utility(records: RecordSet, path: Path) -> Path | None:
    """Accuracy against ε and against attack success, one point per defense configuration."""
    frame = metric_frame(records)
    if frame.empty:
        return None
    accuracy = _per_row(frame, "accuracy", "fl", "mean")
    panels = [("epsilon", "defense", "max", "ε (lower is more private)")]
    panels += [(m, "attack", "max", title) for m, title in _ATTACK_SUCCESS]
    present = [(m, f, w, t) for m, f, w, t in panels if not _per_row(frame, m, f, w).empty]
    if accuracy.empty or not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(5 * len(present), 4), squeeze=False)
    for ax, (metric, family, worst, title) in zip(axes[0], present, strict=True):
        x = _per_row(frame, metric, family, worst)
        joined = pd.DataFrame({"x": x, "accuracy": accuracy}).dropna().reset_index()
        sns.scatterplot(data=joined, x="x", y="accuracy", hue="experiment", ax=ax, s=60)
        for _, row in joined.iterrows():
            ax.annotate(_label((row["experiment"], row["defense"], row["sweep"])),
                        (row["x"], row["accuracy"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        if metric == "epsilon":
            ax.set_xscale("log")
        ax.set_xlabel(title)
        ax.set_ylabel("test accuracy")
    fig.suptitle("Privacy–utility trade-off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def inversion_vs_clients(records: RecordSet, path: Path, sweep_key: str) -> Path | None:
    """Gradient-inversion PSNR against the number of clients aggregated (a sweep)."""
    frame = metric_frame(records)
    if frame.empty:
        return None
    rows = frame[(frame["metric"] == "psnr") & frame["value"].notna()]
    rows = rows[[isinstance(g, dict) and sweep_key in g for g in rows["grid"]]]
    if rows.empty:
        return None
    rows = rows.assign(clients=[g[sweep_key] for g in rows["grid"]])
    worst = rows.groupby(["experiment", "defense", "clients", "seed"])["value"].max().reset_index()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    sns.lineplot(data=worst, x="clients", y="value", hue="defense", style="experiment",
                 marker="o", ax=ax, errorbar="sd")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("clients aggregated per round")
    ax.set_ylabel("strongest inversion PSNR (dB)")
    ax.set_title("What aggregation hides from gradient inversion")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
