"""Tests for fedbench.fl.channel."""

from __future__ import annotations

import numpy as np
import pytest

from fedbench.errors import AggregationError, BadClientUpdate
from fedbench.fl.channel import PlaintextChannel, check_update


def test_plaintext_sum_and_bytes() -> None:
    rng = np.random.default_rng(0)
    updates = {i: rng.standard_normal(50).astype(np.float32) for i in (2, 5, 9)}
    channel = PlaintextChannel()
    messages = {i: channel.encode(i, u) for i, u in updates.items()}
    result = channel.aggregate(messages)
    exact = sum(u.astype(np.float64) for u in updates.values())
    np.testing.assert_allclose(result.total, exact, rtol=1e-6, atol=1e-6)  # float32 accumulator
    assert result.contributors == (2, 5, 9)
    assert result.upload_bytes == {2: 200, 5: 200, 9: 200}
    np.testing.assert_array_equal(channel.reveal(messages[5]), updates[5])


def test_empty_round_is_an_aggregation_error() -> None:
    with pytest.raises(AggregationError, match="no client update"):
        PlaintextChannel().aggregate({})


@pytest.mark.parametrize(
    "update, message",
    [
        (np.zeros(4, dtype=np.float32), r"shape \(4,\), expected \(5,\)"),
        (np.zeros((5, 1), dtype=np.float32), r"shape \(5, 1\)"),
        (np.zeros(5, dtype=np.int64), "dtype int64"),
        (
            np.array([0, np.nan, 0, np.inf, 0], dtype=np.float32),
            "2 NaN/Inf entries .first at index 1",
        ),
    ],
)
def test_check_update_names_client_and_problem(update: np.ndarray, message: str) -> None:
    with pytest.raises(BadClientUpdate, match=f"client 7: .*{message}"):
        check_update(7, update, 5)


@pytest.mark.parametrize(
    "update",
    [
        np.array([np.inf, -np.inf, 0, 0, 0], dtype=np.float32),  # the sum is NaN, not cancelled
        np.array([np.nan, 0, 0, 0, 0], dtype=np.float64),
        np.array([np.finfo(np.float32).max] * 4 + [np.inf], dtype=np.float32),
    ],
)
def test_check_update_rejects_every_non_finite_pattern(update: np.ndarray) -> None:
    with pytest.raises(BadClientUpdate, match="NaN/Inf"):
        check_update(0, update, 5)

