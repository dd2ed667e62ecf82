"""Figures derived from records (seaborn/matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def _psnr_baseline(frame: pd.DataFrame, experiment: str | None) -> float | None:
    """The mean PSNR of a reconstruction that learnt nothing (a random image), if recorded."""
    rows = frame[(frame["metric"] == "psnr_failure_baseline") & frame["value"].notna()]
    if experiment is not None:
        rows = rows[rows["experiment"] == experiment]
    return None if rows.empty else float(rows["value"].mean())


def _adversaries(records: RecordSet) -> str:
    return ", ".join(sorted({c.adversary for c in records.cells.values()})) or "none"


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


Panel = tuple[pd.DataFrame, str, str]  # (points, metric, axis title)


def _trade_off_panels(frame: pd.DataFrame) -> list[tuple[str, list[Panel]]]:
    """Per experiment whose accuracy varies, the (privacy measure, accuracy) point sets."""
    accuracy = _per_row(frame, "accuracy", "fl", "mean")
    if accuracy.empty:  # no accuracy (one FedSGD round, or attacks on a transcript file)
        return []
    measures = [("epsilon", "defense", "ε (lower is more private)")]
    measures += [(m, "attack", title) for m, title in _ATTACK_SUCCESS]
    grid: list[tuple[str, list[Panel]]] = []
    for experiment in dict.fromkeys(frame["experiment"]):
        acc = accuracy[accuracy.index.get_level_values("experiment") == experiment]
        if acc.nunique() < 2:
            continue
        row = []
        for metric, family, title in measures:
            x = _per_row(frame, metric, family, "max")
            joined = pd.DataFrame({"x": x, "accuracy": acc}).dropna()
            if len(joined) >= 2:
                row.append((joined.reset_index(), metric, title))
        if row:
            grid.append((str(experiment), row))
    return grid


def defense_colours(frame: pd.DataFrame) -> dict[str, Any]:
    """One colour per defense label, the same in every panel of a figure."""
    defenses = list(dict.fromkeys(frame["defense"]))
    # tab10 repeats its colours from the 11th defense on (quick has 11): tab20 then.
    palette = sns.color_palette("tab10" if len(defenses) <= 10 else "tab20", len(defenses))
    return dict(zip(defenses, palette, strict=True))


def _draw_trade_off(
    ax: plt.Axes, experiment: str, panel: Panel, colours: dict[str, Any]
) -> None:
    """One panel: colour and legend by defense (labels written on points overprint when
    several defenses share one), a sweep drawn as a line through its points, and the failure
    baseline of the measure (AUC 0.5: the attack guesses)."""
    joined, metric, title = panel
    points = joined.sort_values("x")
    sns.lineplot(data=points, x="x", y="accuracy", hue="defense", marker="o", ax=ax,
                 sort=True, estimator=None, markersize=7, palette=colours)
    if metric == "mia_auc":
        ax.axvline(0.5, color="grey", ls="--", lw=0.8, label="attack fails (AUC 0.5)")
    if metric == "epsilon":
        ax.set_xscale("log")
    ax.set_xlabel(title)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{experiment}: accuracy against {title.split(' (')[0]}")
    ax.legend(fontsize=7, loc="best")


def privacy_utility(records: RecordSet, path: Path) -> Path | None:
    """Accuracy against ε and against attack success: one row of panels per experiment.

    Experiments whose accuracy does not vary (e.g. a single FedSGD round attacked by gradient
    inversion) carry no trade-off and are left out; :func:`attack_success` shows them.
    """
    frame = metric_frame(records)
    grid = _trade_off_panels(frame) if not frame.empty else []
    if not grid:
        return None
    colours = defense_colours(frame)
    width = max(len(row) for _, row in grid)
    fig, axes = plt.subplots(len(grid), width, figsize=(5 * width, 4 * len(grid)), squeeze=False)
    for r, (experiment, row) in enumerate(grid):
        for c in range(width):
            if c < len(row):
                _draw_trade_off(axes[r][c], experiment, row[c], colours)
            else:
                axes[r][c].axis("off")
    fig.suptitle(f"Privacy–utility trade-off (adversary: {_adversaries(records)})")
    return _save(fig, path)


def attack_success(records: RecordSet, path: Path) -> Path | None:
    """The strongest attack's success per defense configuration, one panel per experiment
    and attack family (bars: which defense stops which attack)."""
    frame = metric_frame(records)
    if frame.empty:
        return None
    panels = []
    for experiment in dict.fromkeys(frame["experiment"]):
        for metric, title in _ATTACK_SUCCESS:
            values = _per_row(frame, metric, "attack", "max")
            if values.empty:
                continue
            values = values[values.index.get_level_values("experiment") == experiment]
            if not values.empty:
                panels.append((str(experiment), title, values))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 0.4 * max(
        len(v) for _, _, v in panels) + 1.5), squeeze=False)
    for ax, (experiment, title, values) in zip(axes[0], panels, strict=True):
        labels = [_label(key) for key in values.index]
        sns.barplot(x=values.to_numpy(), y=labels, ax=ax, orient="h", hue=labels,
                    palette="tab10", legend=False)
        ax.set_xlabel(title)
        ax.set_title(experiment)
        if "AUC" in title:
            ax.axvline(0.5, color="black", lw=0.8, ls="--", label="attack fails (AUC 0.5)")
            ax.set_xlim(0.45, max(0.75, float(values.max()) + 0.02))
            ax.legend(fontsize=7, loc="lower right")
        elif (floor := _psnr_baseline(frame, experiment)) is not None:
            ax.axvline(floor, color="black", lw=0.8, ls="--",
                       label=f"attack fails (random image, {floor:.1f} dB)")
            ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Strongest attack per defense\n(lower is better for the defense; "
                 f"adversary: {_adversaries(records)})")
    return _save(fig, path)


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
    floor = _psnr_baseline(frame, None)
    if floor is not None:
        ax.axhline(floor, color="black", lw=0.8, ls="--",
                   label=f"attack fails (random image, {floor:.1f} dB)")
        ax.legend(fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("clients aggregated per round")
    ax.set_ylabel("strongest inversion PSNR (dB)")
    ax.set_title("What aggregation hides from gradient inversion\n"
                 f"(adversary: {_adversaries(records)})")
    return _save(fig, path)


_SWEPT_ATTACK_METRICS = (
    ("exact_recovery", "inputs recovered exactly (PSNR > 60 dB)"),
    ("psnr", "strongest inversion PSNR (dB)"),
)


def _sweep_axis(keys: list[str]) -> str:
    """The x-axis title: the one parameter every swept key sets, or the keys themselves."""
    params = {k.split(".", 2)[2] for k in keys}
    return f"each defense's {params.pop()}" if len(params) == 1 else ", ".join(keys)


def attack_vs_defense_sweep(records: RecordSet, path: Path, keys: list[str]) -> Path | None:
    """Attack success against a swept defense parameter (e.g. each defense's noise
    multiplier), one line per defense; the undefended run as a dashed reference line."""
    frame = metric_frame(records)
    if frame.empty:
        return None
    frame = frame[frame["value"].notna() & (frame["status"] == "ok")]
    panels = [(m, title) for m, title in _SWEPT_ATTACK_METRICS if (frame["metric"] == m).any()]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (metric, title) in zip(axes[0], panels, strict=True):
        rows = frame[frame["metric"] == metric]
        swept = rows[[any(k in g for k in keys) if isinstance(g, dict) else False
                      for g in rows["grid"]]]
        x = [next(g[k] for k in keys if k in g) for g in swept["grid"]]
        best = swept.assign(setting=x).groupby(["defense", "setting", "seed"])["value"].max()
        sns.lineplot(data=best.reset_index(), x="setting", y="value", hue="defense",
                     marker="o", ax=ax, errorbar="sd")
        plain = rows[rows["defense"] == "none"]["value"]
        if not plain.empty:
            ax.axhline(float(plain.max()), color="grey", lw=0.8, ls=":", label="no defense")
        if metric == "psnr" and (floor := _psnr_baseline(frame, None)) is not None:
            ax.axhline(floor, color="black", lw=0.8, ls="--",
                       label=f"attack fails (random image, {floor:.1f} dB)")
        ax.set_xscale("log")
        ax.set_xlabel(_sweep_axis(keys))
        ax.set_ylabel(title)
        ax.legend(fontsize=7)
    fig.suptitle(f"Attack success against the defenses' swept setting\n"
                 f"(adversary: {_adversaries(records)})")
    return _save(fig, path)
