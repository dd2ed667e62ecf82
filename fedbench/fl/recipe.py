"""The public client-training recipe (part of the FL configuration everyone can read)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class TrainingRecipe:
    """How a client trains locally in one round.

    Attributes:
        algorithm: "fedsgd" (one gradient step on one batch) or "fedavg" (local epochs/steps).
        batch_size: Examples per step; for FedSGD ``None`` means the client's whole data.
        local_epochs: Passes over the client's data (FedAvg), ignored when ``local_steps`` is set.
        local_steps: Exact number of local SGD steps (FedAvg), overriding ``local_epochs``.
        lr: Client learning rate.
        momentum: Client SGD momentum.
    """

    algorithm: Literal["fedsgd", "fedavg"]
    batch_size: int | None
    local_epochs: int
    local_steps: int | None
    lr: float
    momentum: float = 0.0
