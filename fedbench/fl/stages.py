"""The defense hook points of a round, as small single-method base classes.

A round (see DESIGN.md) runs: local_training → client_update → channel encode/aggregate →
server_update. A defense implements any subset of these; the identity stages below are what runs
when no defense does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from fedbench.data.tensors import TensorData
from fedbench.fl.context import RoundContext, RunInfo
from fedbench.fl.recipe import TrainingRecipe


class Stage(ABC):  # noqa: B024 - a marker base with default hooks, not an interface
    """Base of all stages: an optional compatibility ``check`` and one-time ``setup``."""

    def check(self, run: RunInfo) -> list[str]:
        """Why this stage cannot run ``run`` (one line each, naming the field); empty when it
        can. Must be cheap and free of side effects (``fedbench run --dry-run`` calls it for
        every cell before any training)."""
        return []

    def setup(self, run: RunInfo) -> None:  # noqa: B027 - optional hook
        """Prepare for the run (called once, before round 0, after ``check`` passed)."""


@dataclass(frozen=True)
class LocalResult:
    """What one client's local training produced.

    Attributes:
        params: The client's trained parameters, flattened.
        num_examples: Number of examples the client holds (its FedAvg weight).
        used_ids: Global ids of the examples the training touched (ground truth for scoring).
        loss: Mean training loss over the local steps.
    """

    params: torch.Tensor
    num_examples: int
    used_ids: torch.Tensor
    loss: float


class LocalTraining(Stage):
    """Stage ``local_training``: a client trains the global model on its data."""

    @abstractmethod
    def train(
        self,
        model: nn.Module,
        data: TensorData,
        recipe: TrainingRecipe,
        *,
        client_id: int,
        ctx: RoundContext,
    ) -> LocalResult:
        """Train ``model`` (holding w_t; may be modified in place) on ``data``."""


class ClientUpdateStage(Stage):
    """Stage ``client_update``: transform Δ_i on the client before it is sent (clip, noise...)."""

    @abstractmethod
    def apply(self, client_id: int, update: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        """The transformed flat update."""


class ServerUpdateStage(Stage):
    """Stage ``server_update``: transform the aggregate before the model step (central noise)."""

    @abstractmethod
    def apply(
        self, total: torch.Tensor, denominator: float, ctx: RoundContext
    ) -> tuple[torch.Tensor, float]:
        """The transformed sum and the denominator it is divided by.

        The default denominator is the total weight of the clients that contributed; DP-FedAvg
        replaces it by the expected number of clients.
        """
