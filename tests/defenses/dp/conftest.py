"""Helpers for the DP defense tests: a RunInfo and RoundContexts without a whole simulation."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import torch
from torch import nn

from fedbench.fl.context import RoundContext, RunInfo
from fedbench.fl.recipe import TrainingRecipe
from fedbench.seeding import Streams


def build_run(
    *,
    num_clients: int = 100,
    expected_clients: float = 10.0,
    rounds: int = 10,
    sampling: str = "poisson",
    weighting: str = "uniform",
    dim: int = 20,
    client_sizes: tuple[int, ...] | None = None,
    model_factory: Callable[[], nn.Module] | None = None,
    recipe: TrainingRecipe | None = None,
    seed: int = 0,
) -> RunInfo:
    return RunInfo(
        num_clients=num_clients,
        rounds=rounds,
        expected_clients=expected_clients,
        sampling=sampling,
        weighting=weighting,
        recipe=recipe or TrainingRecipe("fedavg", 8, 1, None, 0.1),
        client_sizes=client_sizes or (10,) * num_clients,
        dim=dim,
        model_factory=model_factory or (lambda: nn.Linear(dim, 1, bias=False)),
        streams=Streams(seed),
    )


def build_ctx(run: RunInfo, round_index: int, sampled: list[int]) -> RoundContext:
    return RoundContext(
        round=round_index,
        sampled=sampled,
        num_clients=run.num_clients,
        expected_clients=run.expected_clients,
        dim=run.dim,
        streams=run.streams,
    )


@pytest.fixture(autouse=True)
def _quiet_absl_logging():
    # dp-accounting logs convergence notes for small z through absl; they are not failures.
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


@pytest.fixture(autouse=True)
def _one_thread():
    # The machine's cores are shared; these tests gain nothing from intra-op threads.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_run() -> Callable[..., RunInfo]:
    """``make_run(**overrides)`` builds a RunInfo (100 clients, Poisson, uniform by default)."""
    return build_run


@pytest.fixture
def make_ctx() -> Callable[[RunInfo, int, list[int]], RoundContext]:
    """``make_ctx(run, round, sampled)`` builds the RoundContext of one round."""
    return build_ctx
