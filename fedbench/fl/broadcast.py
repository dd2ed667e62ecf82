"""The broadcast phase: which model the server sends each sampled client.

An honest server sends every client the same w_t. The phase is a component of its own so that a
server may send a *different* model to each client (the malicious-server strategies of the
adversary axis); the Transcript records the fingerprint of what each client received, so a
defense can detect such a server and a table can show what it did.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedbench.fl.context import RoundContext
from fedbench.fl.transcript import model_hash

MODEL_HASHES_NOTE = "model_hashes"
"""The ``RoundContext.notes`` key under which the round's client → model hash is shared with
the defense stages (a model-consistency check binds each client's hash into its protocol)."""


@dataclass(frozen=True)
class Broadcast:
    """What the server sent in one round.

    Attributes:
        models: The flat parameters each sampled client received (the same tensor object for
            every client of an honest server).
        hashes: The fingerprint of each client's model.
    """

    models: dict[int, torch.Tensor]
    hashes: dict[int, str]

    def common(self) -> torch.Tensor | None:
        """The model every client received, or None when they received different ones."""
        if len(set(self.hashes.values())) != 1:
            return None
        return next(iter(self.models.values()))


class BroadcastPolicy(ABC):
    """Decides the model each sampled client receives."""

    @abstractmethod
    def models(self, params: torch.Tensor, ctx: RoundContext) -> dict[int, torch.Tensor]:
        """The flat parameters for each client in ``ctx.sampled``, given the global w_t."""


class HonestBroadcast(BroadcastPolicy):
    """Every sampled client receives the global model w_t."""

    def models(self, params: torch.Tensor, ctx: RoundContext) -> dict[int, torch.Tensor]:
        return dict.fromkeys(ctx.sampled, params)


def broadcast(policy: BroadcastPolicy, params: torch.Tensor, ctx: RoundContext) -> Broadcast:
    """Run the broadcast phase: the models, and one fingerprint per distinct model sent."""
    models = policy.models(params, ctx)
    _check_recipients(models, ctx.sampled)
    by_object: dict[int, str] = {}
    hashes = {}
    for cid, model in models.items():
        key = id(model)
        if key not in by_object:
            by_object[key] = model_hash(model)
        hashes[cid] = by_object[key]
    return Broadcast(models=models, hashes=hashes)


def _check_recipients(models: dict[int, torch.Tensor], sampled: Sequence[int]) -> None:
    if set(models) != set(sampled):
        raise ValueError(
            f"broadcast: models for clients {sorted(models)}, but sampled {sorted(sampled)}"
        )
