"""The noise samplers draw the distributions the accountants are told about."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from fedbench.defenses.dp import noise

DRAWS = 200_000  # std estimates then have a relative standard error of about 0.16%


@pytest.mark.parametrize("secure", [False, True])
def test_gaussian_has_the_requested_std(secure: bool) -> None:
    generator = None if secure else torch.Generator().manual_seed(1)
    draws = noise.gaussian(DRAWS, std=2.5, generator=generator, secure=secure).numpy()
    assert draws.shape == (DRAWS,)
    assert draws.std() == pytest.approx(2.5, rel=0.01)
    assert abs(draws.mean()) < 5 * 2.5 / math.sqrt(DRAWS)
    assert stats.kstest(draws / 2.5, "norm").pvalue > 1e-4


@pytest.mark.parametrize("secure", [False, True])
def test_laplace_has_the_requested_scale(secure: bool) -> None:
    generator = None if secure else torch.Generator().manual_seed(2)
    draws = noise.laplace(DRAWS, scale=0.7, generator=generator, secure=secure).numpy()
    assert draws.std() == pytest.approx(math.sqrt(2) * 0.7, rel=0.01)
    assert np.abs(draws).mean() == pytest.approx(0.7, rel=0.01)  # E|X| = scale
    assert stats.kstest(draws, "laplace", args=(0, 0.7)).pvalue > 1e-4


def test_odd_counts_and_zero_std() -> None:
    g = torch.Generator().manual_seed(0)
    assert noise.gaussian(7, std=1.0, generator=g).shape == (7,)
    assert noise.gaussian(5, std=0.0, generator=g).abs().max() == 0


def test_seeded_noise_repeats_and_secure_noise_does_not() -> None:
    a = noise.gaussian(100, std=1.0, generator=torch.Generator().manual_seed(3))
    b = noise.gaussian(100, std=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    c = noise.gaussian(100, std=1.0, secure=True)
    d = noise.gaussian(100, std=1.0, secure=True)
    assert not torch.equal(c, d)


def test_secure_uniform_is_strictly_inside_the_unit_interval() -> None:
    u = noise.secure_uniform(100_000)
    assert u.min() > 0 and u.max() < 1
    assert u.mean() == pytest.approx(0.5, abs=0.01)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="generator"):
        noise.gaussian(3, std=1.0)
    with pytest.raises(ValueError, match="std"):
        noise.gaussian(3, std=-1.0, secure=True)
    with pytest.raises(ValueError, match="scale"):
        noise.laplace(3, scale=math.inf, secure=True)
