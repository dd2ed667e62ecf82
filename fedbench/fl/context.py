"""What the stages of one round know about that round."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from fedbench.fl.recipe import TrainingRecipe
from fedbench.seeding import Streams


@dataclass
class RoundContext:
    """Shared facts about the round in progress.

    Attributes:
        round: Round index (0-based).
        sampled: Ids of the clients sampled this round, in order.
        num_clients: Total number of clients N.
        expected_clients: Expected number sampled per round (q·N for Poisson sampling).
        dim: Number of model parameters (length of every update vector).
        streams: The experiment's named random streams.
        device: Device that training and updates live on.
        weights: Each sampled client's public aggregation weight (its example count over the
            mean count for weighted FedAvg, 1 for uniform weighting).
        notes: Scratch space in which a defense's stages share per-round facts with each other
            (e.g. how many clients were clipped). Never read by attacks.
    """

    round: int
    sampled: list[int]
    num_clients: int
    expected_clients: float
    dim: int
    streams: Streams
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    weights: dict[int, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def generator(self, name: str, *keys: int) -> torch.Generator:
        """A torch generator for stream ``name`` keyed by this round (and ``keys``)."""
        return self.streams.torch(name, self.round, *keys, device=self.device)


@dataclass(frozen=True)
class RunInfo:
    """Facts about the whole run, given to every stage's ``setup`` before round 0.

    Attributes:
        num_clients: Total number of clients N.
        rounds: Number of rounds T.
        expected_clients: Expected number of clients sampled per round.
        sampling: "fixed" (exactly m clients without replacement) or "poisson" (each client
            independently with probability q).
        weighting: "weighted" (by number of examples) or "uniform".
        recipe: The public client-training recipe.
        client_sizes: Number of examples held by each client.
        dim: Number of model parameters.
        model_factory: Builds a fresh model of the run's architecture.
        streams: The experiment's named random streams.
        device: Training device.
    """

    num_clients: int
    rounds: int
    expected_clients: float
    sampling: Literal["fixed", "poisson"]
    weighting: Literal["weighted", "uniform"]
    recipe: TrainingRecipe
    client_sizes: tuple[int, ...]
    dim: int
    model_factory: Callable[[], nn.Module]
    streams: Streams
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def sampling_rate(self) -> float:
        """Per-round client sampling probability q = expected_clients / num_clients."""
        return self.expected_clients / self.num_clients
