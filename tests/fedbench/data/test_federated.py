"""Tests for fedbench.data.federated."""

from __future__ import annotations

import numpy as np
import pytest

from fedbench.data.federated import federate, stratified_holdout
from fedbench.data.partition import IID, Dirichlet
from fedbench.errors import DataError
from fedbench.registry import DATASETS


def _ids(data) -> set[int]:
    return set(data.ids.tolist())


@pytest.mark.parametrize("partitioner", [IID(), Dirichlet(alpha=0.5, min_size=5)])
def test_splits_are_disjoint_and_cover_the_pool(partitioner) -> None:
    dataset = DATASETS.create("digits")
    fed = federate(
        dataset,
        partitioner=partitioner,
        num_clients=8,
        test_fraction=0.2,
        population_fraction=0.25,
        max_train_examples=None,
        rng=np.random.default_rng(0),
    )
    client_ids = [_ids(c) for c in fed.clients]
    union = set().union(*client_ids)
    assert sum(len(c) for c in client_ids) == len(union), "no example in two clients"
    assert not union & _ids(fed.population), "population split never given to a client"
    assert not union & _ids(fed.test), "test split disjoint from client data"
    assert not _ids(fed.population) & _ids(fed.test)
    assert len(union) + len(fed.population) + len(fed.test) == len(dataset.train)
    assert abs(len(fed.test) - 0.2 * len(dataset.train)) <= 10


def test_report_matches_client_labels() -> None:
    fed = federate(
        DATASETS.create("digits"),
        partitioner=IID(),
        num_clients=4,
        test_fraction=0.2,
        population_fraction=0.2,
        max_train_examples=None,
        rng=np.random.default_rng(0),
    )
    report = fed.report()
    for client, data in enumerate(fed.clients):
        assert report.loc[client, "total"] == len(data)
        assert report.loc[client, "3"] == int((data.y == 3).sum())


def test_max_train_examples_caps_pool() -> None:
    fed = federate(
        DATASETS.create("digits"),
        partitioner=IID(),
        num_clients=4,
        test_fraction=0.2,
        population_fraction=0.2,
        max_train_examples=100,
        rng=np.random.default_rng(0),
    )
    assert abs(sum(len(c) for c in fed.clients) - 100) <= 10


def test_stratified_holdout_keeps_class_balance() -> None:
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    kept, held = stratified_holdout(labels, 0.2, np.random.default_rng(0))
    assert np.bincount(labels[held]).tolist() == [20, 10, 6, 4]
    assert len(np.intersect1d(kept, held)) == 0


def test_too_many_clients_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="cannot give each of 5000 clients data"):
        federate(
            DATASETS.create("digits"),
            partitioner=IID(),
            num_clients=5000,
            test_fraction=0.2,
            population_fraction=0.2,
            max_train_examples=None,
            rng=np.random.default_rng(0),
        )
