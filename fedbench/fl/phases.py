"""The typed results of a round's phases (see :mod:`fedbench.fl.simulation`).

```
broadcast  server → each sampled client: the model it receives          → Broadcast
client     local training → client stages → Δ_i, a chunk at a time       → ClientChunk …
wire       check → channel.encode → channel.aggregate → failure policy    → WireResult
server     server stages → model step                                     → ServerResult
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from fedbench.fl.channel import AggregateResult, EncodedUpdate


@dataclass(frozen=True)
class ClientChunk:
    """Clients' results of the client phase, stacked (a chunk the vectorized engine trained at
    once, or a single client of the loop).

    Attributes:
        client_ids: The clients, in row order.
        updates: [W, d]: row i is ``client_ids[i]``'s Δ_i, scaled by its weight, after the
            client-side stages (a stage's malformed output travels alone, as its one row).
        losses: Each client's mean local training loss.
        used_ids: Each client's global ids of the examples its training touched (ground truth
            only).
    """

    client_ids: list[int]
    updates: torch.Tensor
    losses: list[float]
    used_ids: list[torch.Tensor]


@dataclass(frozen=True)
class WireResult:
    """What reached the server and what it made of it.

    Attributes:
        messages: The encoded messages the server received, by client (a
            :class:`~fedbench.fl.channel.ChunkMessages` where they arrived in chunks).
        rejected: Clients whose update failed the server's checks, with the reason.
        aggregate: The channel's sum, or None when no message arrived.
        losses: Every trained client's local loss (rejected clients included).
        used_ids: Examples behind each delivered update (ground truth only).
        aggregate_seconds: Wall-clock time of ``channel.aggregate``.
        aggregate_cpu_seconds: Its CPU time (this process).
        plaintext_cpu_seconds: CPU time of a plaintext sum of the same updates right after it
            (the same-run cost baseline), or None when no cost baseline was asked for.
        coalition_updates: The colluding clients' own updates (an adversary's coalition).
    """

    messages: Mapping[int, EncodedUpdate]
    rejected: dict[int, str]
    aggregate: AggregateResult | None
    losses: list[float] = field(default_factory=list)
    used_ids: dict[int, torch.Tensor] = field(default_factory=dict)
    aggregate_seconds: float = 0.0
    aggregate_cpu_seconds: float = 0.0
    plaintext_cpu_seconds: float | None = None
    coalition_updates: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerResult:
    """The server phase's result.

    Attributes:
        contributors: Clients whose updates are in the aggregate.
        aggregate: The decoded sum before the server-side stages (what the server saw).
        next_params: w_{t+1}.
        denominator: What the server stages left the sum to be divided by (the model step
            is η·S'/denominator).
    """

    contributors: tuple[int, ...]
    aggregate: torch.Tensor
    next_params: torch.Tensor
    denominator: float = 0.0


@dataclass(frozen=True)
class RoundSummary:
    """One round's row of the run history.

    Attributes:
        round: Round index.
        sampled: Clients sampled.
        contributors: Clients in the aggregate (0 for a failed round).
        dropped: Clients dropped by the channel or rejected by the server.
        rejected: The clients whose update the server refused, with why.
        train_loss: Mean local loss over the trained clients (NaN when none trained).
        upload_bytes: Bytes uploaded by all clients in the round.
        uploaders: Clients that sent anything.
        aggregate_seconds: Server aggregation wall-clock time (None for a failed round).
        aggregate_cpu_seconds: Its CPU time (None for a failed round).
        plaintext_aggregate_cpu_seconds: CPU time of the same-run plaintext baseline (None when
            not measured).
        channel_stats: Channel-specific numbers (quantization error...).
        failed: Why the round failed, or None.
        accuracy: Test accuracy after the round (evaluation rounds only).
        loss: Test loss after the round (evaluation rounds only).
    """

    round: int
    sampled: int
    contributors: int = 0
    dropped: int = 0
    rejected: dict[int, str] = field(default_factory=dict)
    train_loss: float = float("nan")
    upload_bytes: int = 0
    uploaders: int = 0
    aggregate_seconds: float | None = None
    aggregate_cpu_seconds: float | None = None
    plaintext_aggregate_cpu_seconds: float | None = None
    channel_stats: dict[str, float] = field(default_factory=dict)
    failed: str | None = None
    accuracy: float | None = None
    loss: float | None = None
