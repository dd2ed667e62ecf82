"""Tests for fedbench.defenses.base: what a defense declares about its runs."""

from __future__ import annotations

import pytest

from fedbench.defense import SECURE_MODE_NOISE, Defense
from fedbench.registry import DEFENSES


@pytest.mark.parametrize("name", ["dp_fedavg", "ldp", "distributed_dp"])
def test_secure_mode_noise_makes_a_defense_irreproducible(name: str) -> None:
    seeded = DEFENSES.create(name, {"noise": {"multiplier": 1.0}})
    secure = DEFENSES.create(name, {"noise": {"multiplier": 1.0, "secure_mode": True}})
    assert seeded.irreproducible is None
    assert secure.irreproducible == SECURE_MODE_NOISE


def test_defenses_are_reproducible_unless_they_say_why_not() -> None:
    assert Defense().irreproducible is None
    assert DEFENSES.create("secagg", {}).irreproducible is None  # the masks cancel exactly
    assert DEFENSES.create("paillier", {}).irreproducible is None  # decryption is exact
