"""Tests for fedbench.seeding."""

from __future__ import annotations

import numpy as np
import torch

from fedbench.seeding import Streams


def test_same_seed_same_stream() -> None:
    a = Streams(3).numpy("partition").random(5)
    b = Streams(3).numpy("partition").random(5)
    np.testing.assert_array_equal(a, b)


def test_streams_are_independent_of_each_other_and_of_order() -> None:
    s = Streams(3)
    first = s.numpy("sampling", 1).random(4)
    s.numpy("noise").random(1000)  # drawing from another stream does not shift "sampling"
    np.testing.assert_array_equal(first, Streams(3).numpy("sampling", 1).random(4))
    assert not np.allclose(first, s.numpy("sampling", 2).random(4))
    assert not np.allclose(first, s.numpy("noise", 1).random(4))


def test_different_seeds_differ() -> None:
    assert Streams(0).integer_seed("x") != Streams(1).integer_seed("x")


def test_torch_generator_leaves_global_state_alone() -> None:
    before = torch.random.get_rng_state()
    torch.rand(3, generator=Streams(5).torch("init"))
    assert torch.equal(before, torch.random.get_rng_state())
