"""Clipping bounds every contribution; adaptive clipping's maths moves C to the quantile."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedbench.defenses.dp.clipping import (
    clip_to_norm,
    next_clip_norm,
    unclipped_fraction,
    update_noise_multiplier,
)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=50),
    clip=st.floats(1e-3, 1e3),
)
def test_clip_bounds_the_norm_and_keeps_the_direction(values: list[float], clip: float) -> None:
    update = torch.tensor(values, dtype=torch.float64)
    clipped, norm = clip_to_norm(update, clip)
    assert norm == pytest.approx(float(update.norm()))
    assert float(clipped.norm()) <= clip * (1 + 1e-9)
    if norm <= clip:
        assert torch.equal(clipped, update)
    else:
        assert float(clipped.norm()) == pytest.approx(clip)
        assert torch.allclose(clipped * (norm / clip), update, rtol=1e-9, atol=1e-9)


def test_clip_rejects_a_non_positive_norm() -> None:
    with pytest.raises(ValueError, match="clip_norm"):
        clip_to_norm(torch.ones(3), 0.0)


@pytest.mark.parametrize(("z", "sigma_b"), [(1.0, 5.0), (0.7, 0.5), (2.0, 1.2)])
def test_update_noise_multiplier_keeps_the_combined_release_at_z(z: float, sigma_b: float) -> None:
    z_update = update_noise_multiplier(z, clipped_count_stddev=sigma_b)
    assert z_update > z
    # Two Gaussian releases with multipliers z_Δ and 2σ_b compose like one with z.
    assert z_update**-2 + (2 * sigma_b) ** -2 == pytest.approx(z**-2)


def test_update_noise_multiplier_refuses_a_count_that_spends_everything() -> None:
    with pytest.raises(ValueError, match="clipped_count_stddev"):
        update_noise_multiplier(1.0, clipped_count_stddev=0.5)


def test_clip_norm_converges_to_the_target_quantile() -> None:
    rng = np.random.default_rng(0)
    target = 0.3
    true_quantile = float(np.quantile(rng.lognormal(0.0, 0.5, 1_000_000), target))
    for start in (0.01, 50.0):
        clip = start
        for _ in range(300):
            norms = rng.lognormal(0.0, 0.5, 100)
            count = float(np.sum(norms <= clip) - 50) + rng.normal(0, 5.0)
            fraction = unclipped_fraction(count, 100)
            clip = next_clip_norm(clip, unclipped=fraction, target_quantile=target,
                                  learning_rate=0.2)
        assert clip == pytest.approx(true_quantile, rel=0.15)


def test_clip_norm_moves_the_right_way() -> None:
    assert next_clip_norm(1.0, unclipped=0.9, target_quantile=0.5, learning_rate=0.2) < 1.0
    assert next_clip_norm(1.0, unclipped=0.1, target_quantile=0.5, learning_rate=0.2) > 1.0
    assert next_clip_norm(1.0, unclipped=0.5, target_quantile=0.5, learning_rate=0.2) == 1.0
    assert unclipped_fraction(0.0, 10) == 0.5
    assert math.isclose(unclipped_fraction(5.0, 10), 1.0)
