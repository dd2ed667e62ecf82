"""What the server saw, round by round: the one owner of what is visible to an attacker.

The simulation hands every round's full record to :meth:`Transcript.add_round` together with
the channel the messages travelled through; the Transcript alone decides what to keep: a single
client's update only when the channel reveals it, vectors only for the rounds an attack asked
for (memory), metadata (who was sampled, which model each got, who dropped or was rejected and
why, message sizes) for every round. Attack views (:mod:`fedbench.fl.views`) are cut from it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from fedbench.adversary import Coalition
from fedbench.fl.channel import Channel, EncodedUpdate
from fedbench.fl.views import AggregateView, ClientUpdateView, FinalModelView, ModelSequenceView


def model_hash(params: torch.Tensor) -> str:
    """A short fingerprint of a flat parameter vector (which model a client received)."""
    data = params.detach().cpu().contiguous().numpy().tobytes()
    return hashlib.blake2b(data, digest_size=8).hexdigest()


@dataclass
class RoundRecord:
    """The server's record of one round. Vector fields are None for rounds not kept.

    Attributes:
        round: Round index.
        sampled: Clients the server sampled.
        model_hashes: Fingerprint of the model each sampled client received (one value for
            every client when the server is honest).
        contributors: Clients whose updates are in the aggregate.
        dropped: Clients the channel dropped or excluded, with the protocol stage or reason.
        rejected: Clients whose update the server refused (NaN/Inf, wrong shape), with why.
        upload_bytes: Bytes each client sent, all protocol messages included.
        download_bytes: Bytes each client received from the channel beyond the broadcast.
        num_examples: Examples each contributor reported.
        weights: The public aggregation weight each contributor applied.
        failed: Why the round failed (no aggregate, model unchanged), or None.
        params: w_t.
        client_updates: Each contributor's update as the server could read it (kept only when
            the channel reveals single updates, or a colluding client's secrets open them).
        coalition_updates: The colluding clients' own updates, as they computed them (kept
            only for an adversary with a coalition).
        aggregate: The decoded sum before server-side stages.
        next_params: w_{t+1}.
        denominator: The divisor of the model step, w_{t+1} = w_t + η·S'/denominator with S'
            the sum after the server stages (public: the FL and DP settings fix it).
    """

    round: int
    sampled: tuple[int, ...]
    model_hashes: dict[int, str] = field(default_factory=dict)
    contributors: tuple[int, ...] = ()
    dropped: dict[int, str] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)
    upload_bytes: dict[int, int] = field(default_factory=dict)
    download_bytes: dict[int, int] = field(default_factory=dict)
    num_examples: dict[int, int] = field(default_factory=dict)
    weights: dict[int, float] = field(default_factory=dict)
    failed: str | None = None
    params: torch.Tensor | None = None
    client_updates: dict[int, torch.Tensor] | None = None
    coalition_updates: dict[int, torch.Tensor] | None = None
    aggregate: torch.Tensor | None = None
    next_params: torch.Tensor | None = None
    denominator: float | None = None

    def update_view(
        self, client: int, update: torch.Tensor, *, known: torch.Tensor | None = None
    ) -> ClientUpdateView:
        """``update`` as the client-update view of ``client`` in this (kept) round: what the
        server read of it, or what an adversary isolated or unmasked."""
        if self.params is None:
            raise KeyError(f"round {self.round} was not kept; ask for it in keep_rounds")
        return ClientUpdateView(
            round=self.round, client_id=client, params=self.params, update=update,
            weight=self.weights.get(client, 1.0), num_examples=self.num_examples.get(client, 0),
            known=known,
        )


class Transcript:
    """Everything the server saw, with views for the attacks.

    Args:
        rounds: Number of rounds T of the run.
        keep_rounds: Rounds whose vectors (w_t, updates, aggregate) are kept; negative indices
            count from the end (-1 = last round).
        keep_model_sequence: Keep w_0 … w_T (for ``model_sequence`` attacks).
        coalition: Colluding clients (the adversary's): their own updates are kept, and with
            the server among them every message their secrets open.
    """

    def __init__(
        self,
        *,
        rounds: int,
        keep_rounds: Collection[int] = (),
        keep_model_sequence: bool = False,
        coalition: Coalition | None = None,
    ) -> None:
        self.num_rounds = rounds
        self.coalition = coalition
        self.keep_rounds = {r % rounds if r < 0 else r for r in keep_rounds} if rounds else set()
        self.keep_model_sequence = keep_model_sequence
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

    def add_round(
        self,
        record: RoundRecord,
        *,
        channel: Channel,
        messages: Mapping[int, EncodedUpdate] | None = None,
        own: Mapping[int, np.ndarray] | None = None,
    ) -> None:
        """Append one round's record, keeping only what the server could see and was asked for.

        Args:
            record: The round as it happened (without ``client_updates``).
            channel: The channel the messages travelled through; it says what one message
                reveals.
            messages: The messages the server received, by client.
            own: The coalition members' own updates this round (what each computed).
        """
        if not self.keeps(record.round):
            record.params = record.aggregate = record.next_params = None
            record.client_updates = record.coalition_updates = None
        else:
            record.params = _cpu_copy(record.params)
            record.aggregate = _cpu_copy(record.aggregate)
            record.next_params = _cpu_copy(record.next_params)
            helped = self.coalition is not None and self.coalition.with_server
            record.client_updates = _revealed(
                channel, messages or {}, record.contributors, with_client_secrets=helped
            )
            if self.coalition is not None:
                record.coalition_updates = {
                    c: _contribution(channel, c, v) for c, v in sorted((own or {}).items())
                    if c in self.coalition.members
                }
        self.rounds.append(record)

    # -- views -----------------------------------------------------------------------------

    def kept_round(self, round_index: int) -> RoundRecord:
        """The record of a kept, completed round (negative indices count from the end).

        Raises:
            KeyError: The round is not in the transcript, failed, or was not kept.
        """
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
        record = self.kept_round(round_index)
        if record.client_updates is None:
            raise PermissionError("the channel hides single client updates from the server")
        cid = record.contributors[0] if client_id is None else client_id
        if cid not in record.client_updates:
            raise KeyError(f"client {cid} did not contribute to round {record.round}")
        return record.update_view(cid, record.client_updates[cid])

    def aggregate_view(self, round_index: int) -> AggregateView:
        """The decoded sum of a round."""
        record = self.kept_round(round_index)
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


def _cpu_copy(vector: torch.Tensor | None) -> torch.Tensor | None:
    return None if vector is None else vector.detach().cpu().clone()


def _contribution(channel: Channel, client_id: int, update: np.ndarray) -> torch.Tensor:
    """What a colluder added to the sum: what the channel kept of it (its rounding and noise
    share), else the update it handed the channel."""
    kept = channel.contribution(client_id)
    return torch.from_numpy(np.array(update if kept is None else kept, dtype=np.float32))


def _revealed(
    channel: Channel, messages: Mapping[int, EncodedUpdate], contributors: tuple[int, ...],
    *, with_client_secrets: bool = False,
) -> dict[int, torch.Tensor] | None:
    """What the server can read of each contributor's message (helped by a colluding client's
    secrets or not), or None when it reads none."""
    read = channel.reveal_with_client_secrets if with_client_secrets else channel.reveal
    if not (channel.reveals_client_updates or with_client_secrets):
        return None
    updates = {}
    for cid in contributors:
        revealed = read(messages[cid])
        if revealed is not None:
            updates[cid] = torch.from_numpy(np.array(revealed))
    # A colluding client's secrets that open nothing (secure aggregation's masks need t
    # shares) leave the view closed, as for the server alone.
    return updates if channel.reveals_client_updates or updates else None
