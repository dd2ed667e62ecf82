"""Membership ground truth: canaries kept in training by fair coins, and member/non-member
candidates for membership-inference attacks."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace

import numpy as np
import torch

from fedbench.data.federated import FederatedData
from fedbench.data.tensors import TensorData
from fedbench.errors import DataError


@dataclass(frozen=True)
class Canaries:
    """Canary records and whether each was kept in training (an independent fair coin)."""

    records: TensorData
    included: np.ndarray


def insert_canaries(
    data: FederatedData, count: int, rng: np.random.Generator
) -> tuple[FederatedData, Canaries]:
    """Draw ``count`` canaries from the clients' data; remove those whose coin says "out".

    The coins are flipped before training, so membership is independent of everything the
    training does, as the one-run audit (Steinke, Nasr, Jagielski 2023) requires.
    """
    owner = np.concatenate([np.full(len(c), i) for i, c in enumerate(data.clients)])
    position = np.concatenate([np.arange(len(c)) for c in data.clients])
    if count > len(owner):
        raise DataError(f"canaries: {count} requested but the clients hold {len(owner)} examples")
    chosen = rng.choice(len(owner), size=count, replace=False)
    included = rng.integers(0, 2, size=count)
    removed: dict[int, set[int]] = {}
    for pick, keep in zip(chosen, included, strict=True):
        if not keep:
            removed.setdefault(int(owner[pick]), set()).add(int(position[pick]))
    clients = []
    for i, client in enumerate(data.clients):
        keep_rows = np.array([p for p in range(len(client)) if p not in removed.get(i, set())])
        if len(keep_rows) == 0:
            raise DataError(f"canaries: removing the 'out' canaries leaves client {i} no data")
        clients.append(client.subset(keep_rows))
    records = [data.clients[int(owner[p])].subset(np.array([position[p]])) for p in chosen]
    pooled = records[0]
    for record in records[1:]:
        pooled = pooled.concat(record)
    renumbered = TensorData(pooled.x, pooled.y, torch.arange(count))
    return replace(data, clients=clients), Canaries(renumbered, included.astype(int))


def membership_candidates(
    data: FederatedData,
    participants: Collection[int],
    limit: int,
    rng: np.random.Generator,
    members: TensorData | None = None,
) -> tuple[TensorData, np.ndarray]:
    """Members (examples of the clients that contributed) and as many test non-members,
    shuffled, with their membership labels.

    ``members`` replaces the member pool, e.g. by the examples behind the one client update an
    attack sees. The returned records carry renumbered ids (0..n-1) so that ids reveal nothing.
    """
    if members is None:
        members_pool = [data.clients[c] for c in sorted(participants)]
        if not members_pool:
            raise ValueError("no client contributed to training, so there are no members")
        members = members_pool[0]
        for part in members_pool[1:]:
            members = members.concat(part)
    count = min(limit, len(members), len(data.test))
    chosen_members = members.subset(rng.choice(len(members), size=count, replace=False))
    chosen_non = data.test.subset(rng.choice(len(data.test), size=count, replace=False))
    both = chosen_members.concat(chosen_non)
    labels = np.concatenate([np.ones(count, dtype=int), np.zeros(count, dtype=int)])
    order = rng.permutation(2 * count)
    shuffled = both.subset(order)
    return TensorData(shuffled.x, shuffled.y, torch.arange(2 * count)), labels[order]
