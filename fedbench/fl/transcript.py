"""What an honest-but-curious server sees, round by round, and the attack views cut from it.

| view             | what it holds                          | open when                      |
|------------------|----------------------------------------|--------------------------------|
| ``client_update``| one client's Δ_i (as received) and w_t | the channel reveals updates    |
| ``aggregate``    | the decoded sum S of a round and w_t   | always                         |
| ``model_sequence``| w_0 … w_T                             | always (kept on request)       |
| ``final_model``  | w_T                                    | always                         |

Only the rounds that attacks ask for keep their vectors (memory); every round keeps its
metadata (who was sampled, who dropped, message sizes).
"""

from __future__ import annotations

from collections.abc import Collection
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
    """

    round: int
    client_id: int
    params: torch.Tensor
    update: torch.Tensor
    weight: float
    num_examples: int
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


@dataclass
class RoundRecord:
    """The server's record of one round. Vector fields are None for rounds not kept."""

    round: int
    sampled: tuple[int, ...]
    contributors: tuple[int, ...] = ()
    dropped: dict[int, str] = field(default_factory=dict)
    upload_bytes: dict[int, int] = field(default_factory=dict)
    download_bytes: dict[int, int] = field(default_factory=dict)
    num_examples: dict[int, int] = field(default_factory=dict)
    weights: dict[int, float] = field(default_factory=dict)
    failed: str | None = None
    params: torch.Tensor | None = None
    client_updates: dict[int, torch.Tensor] | None = None
    aggregate: torch.Tensor | None = None
    next_params: torch.Tensor | None = None


class Transcript:
    """Everything the server saw, with views for the attacks.

    Args:
        rounds: Number of rounds T of the run.
        keep_rounds: Rounds whose vectors (w_t, updates, aggregate) are kept; negative indices
            count from the end (-1 = last round).
        keep_model_sequence: Keep w_0 … w_T (for ``model_sequence`` attacks).
        reveals_client_updates: Whether the channel lets the server read single updates.
    """

    def __init__(
        self,
        *,
        rounds: int,
        keep_rounds: Collection[int] = (),
        keep_model_sequence: bool = False,
        reveals_client_updates: bool,
    ) -> None:
        self.num_rounds = rounds
        self.keep_rounds = {r % rounds if r < 0 else r for r in keep_rounds} if rounds else set()
        self.keep_model_sequence = keep_model_sequence
        self.reveals_client_updates = reveals_client_updates
        self.rounds: list[RoundRecord] = []
        self.model_sequence: list[torch.Tensor] = []
        self.final_params: torch.Tensor | None = None

    def keeps(self, round_index: int) -> bool:
        """Whether the vectors of ``round_index`` are kept."""
        return round_index in self.keep_rounds

    def record_params(self, params: torch.Tensor) -> None:
        """Record a global model w_t (called for w_0 and after every round)."""
        vector = params.detach().cpu().clone()
        self.final_params = vector
        if self.keep_model_sequence:
            self.model_sequence.append(vector)

    def add_round(self, record: RoundRecord) -> None:
        """Append one round's record, dropping vectors the server could not see."""
        if not self.reveals_client_updates:
            record.client_updates = None
        if not self.keeps(record.round):
            record.params = record.aggregate = record.next_params = None
            record.client_updates = None
        self.rounds.append(record)

    # -- views -----------------------------------------------------------------------------

    def open_views(self) -> set[ViewKind]:
        """The views this run leaves open to an attacker."""
        opened = {ViewKind.AGGREGATE, ViewKind.MODEL_SEQUENCE, ViewKind.FINAL_MODEL}
        if self.reveals_client_updates:
            opened.add(ViewKind.CLIENT_UPDATE)
        return opened

    def _kept_round(self, round_index: int) -> RoundRecord:
        index = round_index % self.num_rounds if round_index < 0 else round_index
        if not 0 <= index < len(self.rounds):
            raise KeyError(f"round {round_index} is not in this transcript ({len(self.rounds)})")
        record = self.rounds[index]
        if record.failed is not None:
            raise KeyError(f"round {index} failed ({record.failed}); it has no aggregate")
        if record.params is None:
            raise KeyError(f"round {index} was not kept; ask for it in keep_rounds")
        return record

    def client_update_view(
        self, round_index: int, client_id: int | None = None
    ) -> ClientUpdateView:
        """One client's update (the first contributor unless ``client_id`` is given)."""
        if not self.reveals_client_updates:
            raise PermissionError("the channel hides single client updates from the server")
        record = self._kept_round(round_index)
        assert record.client_updates is not None and record.params is not None
        cid = record.contributors[0] if client_id is None else client_id
        if cid not in record.client_updates:
            raise KeyError(f"client {cid} did not contribute to round {record.round}")
        return ClientUpdateView(
            round=record.round,
            client_id=cid,
            params=record.params,
            update=record.client_updates[cid],
            weight=record.weights[cid],
            num_examples=record.num_examples[cid],
        )

    def aggregate_view(self, round_index: int) -> AggregateView:
        """The decoded sum of a round."""
        record = self._kept_round(round_index)
        assert record.aggregate is not None and record.params is not None
        return AggregateView(
            round=record.round,
            params=record.params,
            aggregate=record.aggregate,
            contributors=record.contributors,
            num_examples=sum(record.num_examples[c] for c in record.contributors),
        )

    def model_sequence_view(self) -> ModelSequenceView:
        """w_0 … w_T."""
        if not self.keep_model_sequence:
            raise KeyError("the model sequence was not kept; ask for it with keep_model_sequence")
        return ModelSequenceView(params=tuple(self.model_sequence))

    def final_model_view(self) -> FinalModelView:
        """w_T."""
        if self.final_params is None:
            raise KeyError("no model was recorded")
        return FinalModelView(params=self.final_params)
