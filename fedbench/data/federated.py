"""Turn a loaded dataset into client shards plus held-out population and test splits.

The **population** split is never given to any client: membership-inference attacks use it for
shadow/reference models, the threat model's "data from the same distribution". The **test**
split measures utility and supplies the non-members that membership attacks are scored on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch

from fedbench.data.dataset import Dataset
from fedbench.data.partition import Partitioner, partition_report
from fedbench.data.tensors import TensorData
from fedbench.errors import DataError


@dataclass(frozen=True)
class FederatedData:
    """Client shards and the held-out splits of one experiment."""

    dataset: str
    clients: list[TensorData]
    population: TensorData
    test: TensorData
    num_classes: int
    input_shape: tuple[int, ...]
    kind: Literal["image", "tabular"]

    def client_examples(self, ids: torch.Tensor) -> TensorData:
        """The client examples with the given global ids, in the order of ``ids``."""
        pool = self.clients[0]
        for part in self.clients[1:]:
            pool = pool.concat(part)
        position = {int(i): p for p, i in enumerate(pool.ids.tolist())}
        return pool.subset(np.array([position[int(i)] for i in ids.tolist()], dtype=np.int64))

    def report(self) -> pd.DataFrame:
        """Per-client class counts (rows = clients, columns = classes, plus ``total``)."""
        labels = np.concatenate([c.labels() for c in self.clients])
        offsets = np.cumsum([0] + [len(c) for c in self.clients])
        parts = [np.arange(offsets[i], offsets[i + 1]) for i in range(len(self.clients))]
        return partition_report(labels, parts, self.num_classes)


def stratified_holdout(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split positions into (kept, held_out), holding out ``fraction`` of every class."""
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        held.append(members[: round(fraction * len(members))])
    held_out = np.sort(np.concatenate(held)) if held else np.array([], dtype=np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), held_out)
    return kept, held_out


def federate(
    dataset: Dataset,
    *,
    partitioner: Partitioner,
    num_clients: int,
    test_fraction: float,
    population_fraction: float,
    max_train_examples: int | None,
    rng: np.random.Generator,
) -> FederatedData:
    """Split ``dataset`` into test, population and client data.

    Args:
        dataset: The loaded dataset.
        partitioner: How the client pool is divided among clients.
        num_clients: Number of clients.
        test_fraction: Fraction held out as test split when the dataset has no official one.
        population_fraction: Fraction of the training examples held out as the population split.
        max_train_examples: Optional cap on the client pool (a stratified subsample), for speed.
        rng: The partition stream.
    """
    train = dataset.train
    if dataset.test is None:
        kept, held = stratified_holdout(train.labels(), test_fraction, rng)
        test, train = train.subset(held), train.subset(kept)
    else:
        test = dataset.test
    kept, held = stratified_holdout(train.labels(), population_fraction, rng)
    population, pool = train.subset(held), train.subset(kept)
    if max_train_examples is not None and len(pool) > max_train_examples:
        _, chosen = stratified_holdout(pool.labels(), max_train_examples / len(pool), rng)
        pool = pool.subset(chosen)
    if len(test) == 0:
        raise DataError(f"dataset '{dataset.name}': the test split is empty (test_fraction)")
    parts = partitioner.split(pool.labels(), num_clients, rng)
    for client, part in enumerate(parts):
        if len(part) == 0:
            raise DataError(f"dataset '{dataset.name}': client {client} has no data")
    return FederatedData(
        dataset=dataset.name,
        clients=[pool.subset(p) for p in parts],
        population=population,
        test=test,
        num_classes=dataset.num_classes,
        input_shape=dataset.input_shape,
        kind=dataset.kind,
    )
