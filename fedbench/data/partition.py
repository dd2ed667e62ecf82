"""Partitioners: split example positions among clients.

Every partitioner assigns each example to exactly one client and gives every client at least one
example, or raises a :class:`~fedbench.errors.DataError` that says why it cannot. Each draws from
the generator it is given (its own seeded stream).

Example:
    >>> import numpy as np
    >>> parts = IID().split(np.zeros(10, dtype=int), 3, np.random.default_rng(0))
    >>> sorted(int(i) for p in parts for i in p) == list(range(10))
    True
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import pandas as pd

from fedbench.errors import DataError
from fedbench.params import PositiveFloat, PositiveInt
from fedbench.registry import register_partitioner


class Partitioner(ABC):
    """Splits the positions 0..len(labels)-1 among ``num_clients`` clients."""

    @abstractmethod
    def split(
        self, labels: np.ndarray, num_clients: int, rng: np.random.Generator
    ) -> list[np.ndarray]:
        """One sorted array of positions per client."""

    @staticmethod
    def _check(labels: np.ndarray, num_clients: int, what: str) -> None:
        if num_clients < 1:
            raise DataError(f"{what}: num_clients must be at least 1, got {num_clients}")
        if len(labels) < num_clients:
            raise DataError(
                f"{what}: {len(labels)} examples cannot give each of {num_clients} clients data"
            )


@register_partitioner("iid")
class IID(Partitioner):
    """Uniformly random split into near-equal parts."""

    def split(
        self, labels: np.ndarray, num_clients: int, rng: np.random.Generator
    ) -> list[np.ndarray]:
        self._check(labels, num_clients, "iid")
        order = rng.permutation(len(labels))
        return [np.sort(part) for part in np.array_split(order, num_clients)]


@register_partitioner("dirichlet")
class Dirichlet(Partitioner):
    """Label skew: each class is spread over clients with proportions ~ Dir(alpha).

    Small ``alpha`` gives each client few classes. Draws are repeated until every client has
    ``min_size`` examples, at most ``max_retries`` times.

    Args:
        alpha: Concentration (> 0); large values approach IID.
        min_size: Minimum number of examples per client.
        max_retries: Number of draws before giving up with an error.
    """

    def __init__(
        self, *, alpha: PositiveFloat = 0.5, min_size: PositiveInt = 1,
        max_retries: PositiveInt = 100,
    ) -> None:
        if alpha <= 0:
            raise DataError(f"dirichlet: alpha must be positive, got {alpha}")
        if min_size < 1:
            raise DataError(f"dirichlet: min_size must be at least 1, got {min_size}")
        if max_retries < 1:
            raise DataError(f"dirichlet: max_retries must be at least 1, got {max_retries}")
        self.alpha = alpha
        self.min_size = min_size
        self.max_retries = max_retries

    def split(
        self, labels: np.ndarray, num_clients: int, rng: np.random.Generator
    ) -> list[np.ndarray]:
        what = f"dirichlet(alpha={self.alpha}, min_size={self.min_size})"
        self._check(labels, num_clients, what)
        if self.min_size * num_clients > len(labels):
            raise DataError(
                f"{what}: {num_clients} clients × min_size {self.min_size} exceeds the "
                f"{len(labels)} examples"
            )
        by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        cap = len(labels) / num_clients
        for _ in range(self.max_retries):
            parts: list[list[int]] = [[] for _ in range(num_clients)]
            for members in by_class:
                shuffled = rng.permutation(members)
                weights = rng.dirichlet(np.full(num_clients, self.alpha))
                # Clients already holding their fair share get no more (keeps sizes bounded).
                sizes = np.array([len(p) for p in parts])
                weights = weights * (sizes < cap)
                if weights.sum() == 0:
                    weights = np.full(num_clients, 1.0)
                weights = weights / weights.sum()
                cuts = (np.cumsum(weights) * len(shuffled)).astype(int)[:-1]
                for client, chunk in enumerate(np.split(shuffled, cuts)):
                    parts[client].extend(chunk.tolist())
            if min(len(p) for p in parts) >= self.min_size:
                return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
        raise DataError(
            f"{what}: no draw in {self.max_retries} tries gave all {num_clients} clients "
            f"at least {self.min_size} examples ({len(labels)} examples); raise alpha, lower "
            "min_size or use fewer clients"
        )


@register_partitioner("shards")
class Shards(Partitioner):
    """Pathological non-IID split (McMahan et al.): sort by label, deal out equal shards.

    Args:
        classes_per_client: Number of label-sorted shards (hence at most that many classes)
            per client.
    """

    def __init__(self, *, classes_per_client: PositiveInt = 2) -> None:
        if classes_per_client < 1:
            raise DataError(
                f"shards: classes_per_client must be at least 1, got {classes_per_client}"
            )
        self.classes_per_client = classes_per_client

    def split(
        self, labels: np.ndarray, num_clients: int, rng: np.random.Generator
    ) -> list[np.ndarray]:
        what = f"shards(classes_per_client={self.classes_per_client})"
        self._check(labels, num_clients, what)
        num_shards = num_clients * self.classes_per_client
        if num_shards > len(labels):
            raise DataError(
                f"{what}: {num_shards} shards for {num_clients} clients but only "
                f"{len(labels)} examples"
            )
        # Ties broken by a random permutation so equal labels are not in file order.
        tiebreak = rng.permutation(len(labels))
        order = tiebreak[np.argsort(labels[tiebreak], kind="stable")]
        shards = np.array_split(order, num_shards)
        deal = rng.permutation(num_shards).reshape(num_clients, self.classes_per_client)
        return [np.sort(np.concatenate([shards[s] for s in row])) for row in deal]


def partition_report(
    labels: np.ndarray, parts: list[np.ndarray], num_classes: int
) -> pd.DataFrame:
    """Per-client class counts: one row per client, one column per class, plus ``total``."""
    counts = np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])
    frame = pd.DataFrame(counts, columns=[str(c) for c in range(num_classes)])
    frame.index.name = "client"
    frame["total"] = counts.sum(axis=1)
    return frame
