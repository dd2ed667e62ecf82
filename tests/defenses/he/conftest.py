"""Keys shared by the HE tests (key generation is the slow part, so each is made once)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from fedbench.defenses.he.ckks import PRESETS, CKKSKeys
from fedbench.defenses.he.paillier import PaillierKeys


@pytest.fixture(scope="session")
def small_keys() -> PaillierKeys:
    """A 768-bit Paillier key: insecure, explicitly allowed, for fast property tests only."""
    return PaillierKeys.generate(768, allow_insecure=True)


@pytest.fixture(scope="session")
def keys_2048() -> PaillierKeys:
    """A 2048-bit Paillier key (the smallest secure size)."""
    return PaillierKeys.generate(2048)


@pytest.fixture(scope="session")
def ckks_keys() -> CKKSKeys:
    """Keys for the default preset (N = 8192)."""
    return CKKSKeys.generate(PRESETS["n8192"])


@pytest.fixture(scope="session")
def ckks_small_keys() -> CKKSKeys:
    """Keys for the N = 4096 preset (faster; still 128-bit secure)."""
    return CKKSKeys.generate(PRESETS["n4096"])


DIGITS_FL: dict[str, Any] = {
    "num_clients": 5, "rounds": 3, "local_epochs": 1, "batch_size": 16, "client_lr": 0.1,
}


def _run_digits(defenses: list[Any]) -> dict[str, Any]:
    """FedAvg on digits with logistic regression through the harness; metric name -> value."""
    from fedbench.config import parse_experiment
    from fedbench.harness.cell import run_cell
    from fedbench.harness.suite import Cell

    config = parse_experiment(
        {"data": "digits", "model": "logreg", "fl": DIGITS_FL, "defenses": defenses}
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only contend on a shared machine
    try:
        rows = run_cell(
            Cell(suite="test", experiment="digits", defense="he", seed=0, config=config)
        )
    finally:
        torch.set_num_threads(threads)
    cell = rows[-1]
    assert cell.status == "ok", cell.traceback
    values = {r.metric: r.value for r in rows if r.type == "metric"}
    values["insecure"] = cell.insecure
    values["irreproducible"] = cell.irreproducible
    return values


@pytest.fixture(scope="session")
def run_digits() -> Callable[[list[Any]], dict[str, Any]]:
    """Runs FedAvg on digits (logistic regression, 5 clients, 3 rounds) with the defenses."""
    return _run_digits


@pytest.fixture(scope="session")
def plaintext_digits() -> dict[str, Any]:
    """The same FedAvg run without a defense (the accuracy to match)."""
    return _run_digits([])
