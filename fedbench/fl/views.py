"""The attack views of the threat model: what an attacker can be handed, strongest first.

| view              | what it holds                          | open when                      |
|-------------------|----------------------------------------|--------------------------------|
| ``client_update`` | one client's Δ_i (as received) and w_t | the channel reveals updates    |
| ``aggregate``     | the decoded sum S of a round and w_t   | always                         |
| ``model_sequence``| w_0 … w_T                              | always (kept on request)       |
| ``final_model``   | w_T                                    | always                         |

Which views a run leaves open is the threat model's answer (:mod:`fedbench.fl.threat`); the
views themselves are cut from the :class:`~fedbench.fl.transcript.Transcript`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import torch


class ViewKind(str, Enum):
    """The views of the threat model, strongest first."""

    CLIENT_UPDATE = "client_update"
    AGGREGATE = "aggregate"
    MODEL_SEQUENCE = "model_sequence"
    FINAL_MODEL = "final_model"


@dataclass(frozen=True)
class ClientUpdateView:
    """One client's update as the server received it.

    Attributes:
        round: Round index.
        client_id: The client.
        params: The global parameters w_t the client started from (flat).
        update: Δ_i as received (after the client-side defense stages, scaled by ``weight``).
        weight: The public aggregation weight the client applied (1.0 for uniform weighting).
        num_examples: The number of examples the client reported.
        known: Which coordinates of ``update`` are this client's alone (a bool vector), or
            None for all of them: a server that isolated the client in a sum knows which
            coordinates the others still fill, and attacks leave those out.
    """

    round: int
    client_id: int
    params: torch.Tensor
    update: torch.Tensor
    weight: float
    num_examples: int
    known: torch.Tensor | None = None
    kind: ViewKind = field(default=ViewKind.CLIENT_UPDATE, init=False)


@dataclass(frozen=True)
class AggregateView:
    """The decoded sum of one round's updates.

    Attributes:
        round: Round index.
        params: w_t (flat).
        aggregate: S = Σ_i Δ_i (each Δ_i scaled by its weight), before server-side noise.
        contributors: Ids of the clients in the sum (public: the server knows who took part).
        num_examples: Total examples reported by the contributors.
    """

    round: int
    params: torch.Tensor
    aggregate: torch.Tensor
    contributors: tuple[int, ...]
    num_examples: int
    kind: ViewKind = field(default=ViewKind.AGGREGATE, init=False)


@dataclass(frozen=True)
class ModelSequenceView:
    """The global model after every round: ``params[t]`` is w_t (w_0 first, w_T last)."""

    params: tuple[torch.Tensor, ...]
    kind: ViewKind = field(default=ViewKind.MODEL_SEQUENCE, init=False)


@dataclass(frozen=True)
class FinalModelView:
    """The released model w_T."""

    params: torch.Tensor
    kind: ViewKind = field(default=ViewKind.FINAL_MODEL, init=False)


View = ClientUpdateView | AggregateView | ModelSequenceView | FinalModelView
