"""The paper-dlg results against the DLG paper's thresholds, and the gradients' scale.

Reads ``results/paper-dlg/records.jsonl`` (written by ``fedbench run paper-dlg --jobs 2
--results-dir results``) and writes

- ``figures/paper_thresholds.png``: per experiment, PSNR of DLG and iDLG (strongest measured
  view) against the noise variance (Gaussian, Laplacian) and the per-layer pruning ratio, with
  the paper's claims drawn in: noise of variance ≤ 1e-3 leaks, 1e-2 does not; pruning more than
  ~20% stops the attack;
- ``gradient_scale.md``: each experiment's attacked gradient, its per-entry rms beside the noise
  standard deviations (noise buries the gradient once the std passes its rms).

Run from the repository root: ``python results/paper-dlg/paper_figure.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import torch

from fedbench.fl.pipeline import Pipeline
from fedbench.fl.simulation import Simulation
from fedbench.fl.transcript import Transcript
from fedbench.harness.build import build_data, model_factory
from fedbench.harness.records import read_results_dir
from fedbench.harness.suite import expand, load_suite
from fedbench.seeding import Streams

HERE = Path(__file__).resolve().parent
VARIANCES = (1e-4, 1e-3, 1e-2)
RECOGNISABLE_DB = 20.0  # below this a reconstruction no longer shows the image


def psnr_table() -> pd.DataFrame:
    """One row per cell and attack: defense, grid point, the best PSNR over the views."""
    frame = read_results_dir(HERE).frame()
    psnr = frame[(frame["metric"] == "psnr") & frame["value"].notna()].copy()
    psnr["ratio"] = psnr["grid"].map(lambda g: g.get("defenses.prune.ratio"))
    keys = ["experiment", "defense", "ratio", "attack"]
    return psnr.groupby(keys, dropna=False)["value"].max().reset_index()


def noise_points(table: pd.DataFrame, mechanism: str) -> tuple[list[float], list[float]]:
    """(variances, PSNRs) of the ``mechanism`` noise rows of one experiment and attack."""
    xs, ys = [], []
    for variance in VARIANCES:
        rows = table[table["defense"] == f"{mechanism} σ²={variance:.0e}".replace("e-0", "e-")]
        if len(rows):
            xs.append(variance)
            ys.append(float(rows["value"].iloc[0]))
    return xs, ys


def draw(table: pd.DataFrame, path: Path) -> None:
    experiments = sorted(table["experiment"].unique())
    fig, axes = plt.subplots(len(experiments), 2, figsize=(10, 3.6 * len(experiments)),
                             squeeze=False)
    for row, experiment in enumerate(experiments):
        rows = table[table["experiment"] == experiment]
        noise_ax, prune_ax = axes[row]
        for attack, marker in (("dlg", "o"), ("idlg", "s")):
            of = rows[rows["attack"] == attack]
            clean = of[of["defense"] == "none"]["value"]
            for mechanism, style in (("gaussian", "-"), ("laplace", "--")):
                xs, ys = noise_points(of, mechanism)
                noise_ax.plot(xs, ys, style, marker=marker, label=f"{attack}, {mechanism}")
            pruned = of[of["defense"] == "prune (per layer)"].sort_values("ratio")
            prune_ax.plot(pruned["ratio"] * 100, pruned["value"], "-", marker=marker,
                          label=attack)
            for ax in (noise_ax, prune_ax):
                if len(clean):
                    ax.axhline(float(clean.iloc[0]), lw=0.7, ls=":", color="grey")
        noise_ax.set_xscale("log")
        noise_ax.axvspan(5e-5, 3e-3, color="tab:red", alpha=0.08, label="paper: leaks")
        noise_ax.axvspan(3e-3, 2e-2, color="tab:green", alpha=0.08, label="paper: protects")
        prune_ax.axvspan(0, 20, color="tab:red", alpha=0.08, label="paper: leaks")
        prune_ax.axvspan(20, 75, color="tab:green", alpha=0.08, label="paper: protects")
        for ax in (noise_ax, prune_ax):
            ax.axhline(RECOGNISABLE_DB, lw=0.8, ls="--", color="black")
            ax.set_ylabel(f"{experiment}\nPSNR (dB)")
            ax.legend(fontsize=7)
        noise_ax.set_xlabel("noise variance per entry (dotted: no defense)")
        prune_ax.set_xlabel("entries pruned per layer (%)")
    fig.suptitle("DLG paper thresholds vs measured (dashed black: ~20 dB, recognisable)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


Scale = tuple[float, float, int, list[float]]


def gradient_rms() -> dict[str, Scale]:
    """Per experiment: (‖g‖, per-entry rms, entries, rms of each weight tensor) of the attacked
    client's gradient, from a rerun of the no-defense cell (FedSGD, lr 1: the update is −g)."""
    out: dict[str, Scale] = {}
    for cell in expand(load_suite(HERE / "suite.yaml")):
        if cell.defense != "none":
            continue
        cfg = cell.config
        streams = Streams(cfg.seed)
        data = build_data(cfg, streams)
        transcript = Transcript(rounds=cfg.fl.rounds, keep_rounds={0})
        sim = Simulation(model_factory=model_factory(cfg, data, streams), data=data, fl=cfg.fl,
                         pipeline=Pipeline(), streams=streams, transcript=transcript).run()
        update = sim.transcript.client_update_view(0).update.double()
        norm = float(torch.linalg.vector_norm(update))
        shapes = [p.shape for p in model_factory(cfg, data, streams)().parameters()]
        layers = torch.split(update, [math.prod(shape) for shape in shapes])
        weights = [float(t.pow(2).mean().sqrt()) for t, sh in zip(layers, shapes, strict=True)
                   if len(sh) > 1]
        out[cell.experiment] = (norm, norm / math.sqrt(update.numel()), update.numel(), weights)
    return out


def scale_table(scales: dict[str, Scale]) -> str:
    lines = ["| experiment | entries | ‖g‖ | per-entry rms | rms per weight tensor (conv1, "
             "conv2, conv3, fc) | noise std (σ² = 1e-4 / 1e-3 / 1e-2) |",
             "|---|---|---|---|---|---|"]
    stds = " / ".join(f"{v**0.5:.3g}" for v in VARIANCES)
    for name, (norm, rms, count, weights) in sorted(scales.items()):
        per_layer = ", ".join(f"{w:.2g}" for w in weights)
        lines.append(f"| {name} | {count} | {norm:.3g} | {rms:.3g} | {per_layer} | {stds} |")
    return "\n".join(lines) + "\n"


def psnr_markdown(table: pd.DataFrame) -> str:
    """The PSNR of every cell, DLG and iDLG side by side."""
    lines = ["| experiment | defense | DLG PSNR (dB) | iDLG PSNR (dB) |", "|---|---|---|---|"]
    cells = table.drop_duplicates(["experiment", "defense", "ratio"])
    for _, cell in cells.sort_values(["experiment", "defense", "ratio"]).iterrows():
        same = table[(table["experiment"] == cell["experiment"])
                     & (table["defense"] == cell["defense"])]
        if not pd.isna(cell["ratio"]):
            same = same[same["ratio"] == cell["ratio"]]
        label = cell["defense"] if pd.isna(cell["ratio"]) else (
            f"{cell['defense']} {cell['ratio']:.0%}")
        values = {a: f"{v:.1f}" for a, v in zip(same["attack"], same["value"], strict=True)}
        lines.append(f"| {cell['experiment']} | {label} | {values.get('dlg', '–')} | "
                     f"{values.get('idlg', '–')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    table = psnr_table()
    draw(table, HERE / "figures" / "paper_thresholds.png")
    (HERE / "psnr.md").write_text(psnr_markdown(table))
    (HERE / "gradient_scale.md").write_text(scale_table(gradient_rms()))
    print((HERE / "psnr.md").read_text())
    print((HERE / "gradient_scale.md").read_text())


if __name__ == "__main__":
    main()
