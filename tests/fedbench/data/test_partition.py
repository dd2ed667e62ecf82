"""Tests for fedbench.data.partition."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedbench.data.partition import IID, Dirichlet, Shards, partition_report
from fedbench.errors import DataError


def _assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    flat = np.concatenate(parts)
    assert len(flat) == n, "every example assigned exactly once"
    np.testing.assert_array_equal(np.sort(flat), np.arange(n))
    assert all(len(p) > 0 for p in parts), "every client has data"


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(20, 400),
    clients=st.integers(1, 20),
    classes=st.integers(1, 10),
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["iid", "dirichlet", "shards"]),
)
def test_every_index_assigned_exactly_once(
    n: int, clients: int, classes: int, seed: int, kind: str
) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    partitioner = {
        "iid": IID(),
        "dirichlet": Dirichlet(alpha=1.0),
        "shards": Shards(classes_per_client=1),
    }[kind]
    try:
        parts = partitioner.split(labels, clients, rng)
    except DataError:
        assert kind == "dirichlet"  # only dirichlet may fail (bounded retries) on these sizes
        return
    _assert_exact_cover(parts, n)


def test_same_generator_same_split() -> None:
    labels = np.repeat(np.arange(5), 40)
    a = Dirichlet(alpha=0.3).split(labels, 7, np.random.default_rng(1))
    b = Dirichlet(alpha=0.3).split(labels, 7, np.random.default_rng(1))
    c = Dirichlet(alpha=0.3).split(labels, 7, np.random.default_rng(2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_dirichlet_small_alpha_terminates_or_errors_clearly() -> None:
    labels = np.repeat(np.arange(10), 100)
    part = Dirichlet(alpha=0.05, min_size=5, max_retries=50)
    try:
        parts = part.split(labels, 20, np.random.default_rng(0))
    except DataError as err:
        assert "no draw in 50 tries" in str(err) and "min_size" in str(err)
    else:
        _assert_exact_cover(parts, 1000)
        assert min(len(p) for p in parts) >= 5


def test_dirichlet_small_alpha_is_skewed() -> None:
    labels = np.repeat(np.arange(10), 200)
    parts = Dirichlet(alpha=0.1, min_size=1).split(labels, 10, np.random.default_rng(0))
    report = partition_report(labels, parts, 10)
    dominant = report.drop(columns="total").max(axis=1) / report["total"]
    assert dominant.mean() > 0.5  # most of a client's data comes from one class


def test_dirichlet_impossible_min_size_fails_fast() -> None:
    with pytest.raises(DataError, match=r"10 clients × min_size 50 exceeds the 100 examples"):
        Dirichlet(alpha=1.0, min_size=50).split(
            np.zeros(100, dtype=int), 10, np.random.default_rng(0)
        )


def test_dirichlet_unreachable_min_size_errors_after_retries() -> None:
    # 2 classes of 50, alpha tiny: nearly all of a class lands on one client.
    labels = np.repeat([0, 1], 50)
    with pytest.raises(DataError, match="no draw in 5 tries"):
        Dirichlet(alpha=0.001, min_size=9, max_retries=5).split(
            labels, 10, np.random.default_rng(0)
        )


def test_shards_bound_classes_per_client() -> None:
    labels = np.repeat(np.arange(10), 60)
    parts = Shards(classes_per_client=2).split(labels, 30, np.random.default_rng(0))
    _assert_exact_cover(parts, 600)
    assert max(len(np.unique(labels[p])) for p in parts) <= 2


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: IID().split(np.zeros(3, dtype=int), 5, np.random.default_rng(0)), "3 examples"),
        (
            lambda: Shards(classes_per_client=4).split(
                np.zeros(10, dtype=int), 5, np.random.default_rng(0)
            ),
            "20 shards",
        ),
        (lambda: Dirichlet(alpha=0), "alpha must be positive"),
        (lambda: Shards(classes_per_client=0), "classes_per_client must be at least 1"),
    ],
)
def test_impossible_partitions_explain_themselves(factory, message: str) -> None:
    with pytest.raises(DataError, match=message):
        factory()


def test_report_counts() -> None:
    labels = np.array([0, 0, 1, 2, 2, 2])
    report = partition_report(labels, [np.array([0, 2]), np.array([1, 3, 4, 5])], 3)
    assert report.loc[0].tolist() == [1, 1, 0, 2]
    assert report.loc[1].tolist() == [1, 0, 3, 4]
