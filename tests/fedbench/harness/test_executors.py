"""Tests for fedbench.harness.executors: every executor gives the sequential records."""

from __future__ import annotations

import pytest

from fedbench.config import parse_suite
from fedbench.errors import ConfigError
from fedbench.harness.executors import (
    LocalPoolExecutor,
    SequentialExecutor,
    make_executor,
)
from fedbench.harness.schema import MetricRecord
from fedbench.harness.suite import expand

SUITE = parse_suite(
    {
        "name": "ex",
        "experiments": [
            {
                "data": "digits",
                "model": "logreg",
                "fl": {"num_clients": 2, "rounds": 1},
                "attacks": ["loss_threshold"],
                "mia_candidates": 40,
            }
        ],
        "seeds": [0, 1],
    }
)
VOLATILE = {"run", "started", "duration_s", "host", "git_commit", "versions"}


def _stable(results) -> dict[str, list[dict]]:
    # Bit-identical: every cell fixes its torch thread count, whichever process runs it.
    return {
        cell.id: [
            r.model_dump(exclude=VOLATILE) for r in rows
            if not (isinstance(r, MetricRecord) and r.timing)
        ]
        for cell, rows in results
    }


def test_process_pool_matches_sequential() -> None:
    cells = expand(SUITE)
    sequential = _stable(SequentialExecutor().run(cells, None))
    pooled = _stable(LocalPoolExecutor(jobs=2).run(cells, None))
    assert pooled == sequential and len(pooled) == 2


@pytest.mark.slow
def test_ray_matches_sequential() -> None:
    pytest.importorskip("ray")
    from fedbench.harness.executors import RayExecutor

    cells = expand(SUITE)
    sequential = _stable(SequentialExecutor().run(cells, None))
    assert _stable(RayExecutor(address=None).run(cells, None)) == sequential


def test_make_executor_validates() -> None:
    assert isinstance(make_executor("local", jobs=1), SequentialExecutor)
    assert isinstance(make_executor("local", jobs=3), LocalPoolExecutor)
    with pytest.raises(ConfigError, match="--jobs must be at least 1"):
        make_executor("local", jobs=0)
    with pytest.raises(ConfigError, match="--address is only used with --executor ray"):
        make_executor("local", address="ray://x:10001")
