"""Helpers for the gradient-inversion tests: real models, real gradients, real simulations."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from fedbench.attack import AttackerKnowledge
from fedbench.config import FLConfig, parse_experiment
from fedbench.data.tensors import TensorData
from fedbench.fl.params import get_flat
from fedbench.fl.recipe import TrainingRecipe
from fedbench.fl.views import ClientUpdateView
from fedbench.harness.cell import run_cell
from fedbench.harness.suite import Cell
from fedbench.registry import MODELS


def factory(
    name: str, in_shape: tuple[int, ...], seed: int, **params: Any
) -> Callable[[], nn.Module]:
    """A model factory that builds the same initialisation every call."""

    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model: nn.Module = MODELS.create(name, params, in_shape=in_shape, num_classes=10)
        return model

    return build


def fedsgd(batch_size: int | None, lr: float = 0.1) -> TrainingRecipe:
    """The public recipe of FedSGD with one batch of ``batch_size``."""
    return TrainingRecipe("fedsgd", batch_size=batch_size, local_epochs=1, local_steps=None, lr=lr)


def fl_settings(recipe: TrainingRecipe) -> FLConfig:
    """FL settings whose public client-training recipe is ``recipe``."""
    return FLConfig(
        algorithm=recipe.algorithm, batch_size=recipe.batch_size,
        local_epochs=recipe.local_epochs, local_steps=recipe.local_steps, client_lr=recipe.lr,
        client_momentum=recipe.momentum,
    )


def knowledge(
    build: Callable[[], nn.Module],
    recipe: TrainingRecipe,
    population: TensorData,
    *,
    input_shape: tuple[int, ...],
    data_kind: Literal["image", "tabular"] = "image",
    seed: int = 0,
) -> AttackerKnowledge:
    """What the attacker knows: architecture, recipe, public population data, its seed."""
    return AttackerKnowledge(
        model_factory=build,
        input_shape=input_shape,
        num_classes=10,
        data_kind=data_kind,
        fl=fl_settings(recipe),
        defenses={},
        population=population,
        candidates=None,
        device=torch.device("cpu"),
        seed=seed,
    )


def sgd_update_view(
    build: Callable[[], nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    weight: float = 1.0,
    num_examples: int | None = None,
) -> ClientUpdateView:
    """The client_update view of one plain SGD step on (x, y), computed with torch.optim."""
    model = build()
    start = get_flat(model).clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    return ClientUpdateView(
        round=0,
        client_id=0,
        params=start,
        update=(get_flat(model) - start) * weight,
        weight=weight,
        num_examples=len(x) if num_examples is None else num_examples,
    )


def run_experiment(
    config: dict[str, Any], figures: Path | None = None
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Run one cell through the harness; (attack metric rows by name, the cell row)."""
    cell = Cell("test", "gi", "none", 0, parse_experiment(config))
    rows = run_cell(cell, figures_dir=figures)
    final = rows[-1]
    assert final.status == "ok", final.traceback
    metrics: dict[str, Any] = {}
    for r in rows:  # the attack's first open view (it runs on each; later ones repeat names)
        if r.type == "metric" and r.attack:
            metrics.setdefault(r.metric, r)
    return metrics, final


def psnr_of(reconstruction: torch.Tensor, truth: torch.Tensor) -> float:
    """PSNR of one matched reconstruction (images in [0, 1]), by the textbook formula."""
    mse = float(((reconstruction.clamp(0, 1) - truth) ** 2).mean())
    return 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def simulate(config: dict[str, Any]) -> tuple[Any, Any, Any]:
    """One simulated run that keeps round 0 (sim, federated data, parsed config)."""
    from fedbench.fl.pipeline import Pipeline
    from fedbench.fl.simulation import Simulation
    from fedbench.fl.transcript import Transcript
    from fedbench.harness.build import build_data, model_factory
    from fedbench.seeding import Streams

    cfg = parse_experiment(config)
    streams = Streams(cfg.seed)
    data = build_data(cfg, streams)
    build = model_factory(cfg, data, streams)
    transcript = Transcript(rounds=cfg.fl.rounds, keep_rounds={0})
    sim = Simulation(
        model_factory=build, data=data, fl=cfg.fl, pipeline=Pipeline(), streams=streams,
        transcript=transcript,
    ).run()
    return sim, data, cfg


def examples_behind(sim: Any, data: Any, client_ids: tuple[int, ...]) -> TensorData:
    """Ground truth (test side only): the examples the clients used in round 0."""
    ids = torch.cat([sim.private.used_ids[(0, c)] for c in client_ids])
    return data.client_examples(ids)
