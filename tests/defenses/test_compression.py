"""Top-k pruning zeroes exactly the smallest entries; quantization is on-grid and unbiased."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedbench.defenses.compression import Prune, Quantize, prune_smallest, quantize_uniform
from fedbench.errors import ConfigError
from fedbench.fl.context import RoundContext
from fedbench.registry import DEFENSES
from fedbench.seeding import Streams

VECTORS = st.lists(st.floats(-1e3, 1e3, allow_nan=False, width=32), min_size=1, max_size=200)


def ctx(round_index: int = 0) -> RoundContext:
    return RoundContext(round=round_index, sampled=[0], num_clients=1, expected_clients=1.0,
                        dim=0, streams=Streams(0))


@settings(max_examples=80, deadline=None)
@given(values=VECTORS, ratio=st.floats(0, 1))
def test_prune_zeroes_exactly_the_smallest_entries(values: list[float], ratio: float) -> None:
    update = torch.tensor(values)
    pruned = prune_smallest(update, ratio)
    dropped = math.floor(ratio * len(values))
    changed = pruned != update
    assert int(changed.sum()) <= dropped
    assert torch.all(pruned[changed] == 0)
    kept = (pruned == update) & (update != 0)
    zeroed = torch.ones_like(changed)
    zeroed[kept] = False
    # No kept entry is smaller in magnitude than a zeroed one.
    if kept.any() and (~kept).any():
        assert float(update[kept].abs().min()) >= float(update[~kept].abs().max())
    assert int((pruned == 0).sum()) >= dropped


@settings(max_examples=60, deadline=None)
@given(values=VECTORS, bits=st.integers(2, 12))
def test_quantize_is_on_the_grid_and_within_one_step(values: list[float], bits: int) -> None:
    update = torch.tensor(values, dtype=torch.float64)
    bound = float(update.abs().max())
    out = quantize_uniform(update, bits=bits, generator=torch.Generator().manual_seed(0))
    if bound == 0:
        assert torch.equal(out, update)
        return
    step = 2 * bound / (2**bits - 2)
    levels = (out + bound) / step
    assert torch.allclose(levels, levels.round(), atol=1e-6)
    assert float((out - update).abs().max()) <= step * (1 + 1e-9)
    nearest = quantize_uniform(update, bits=bits, generator=None)
    assert float((nearest - update).abs().max()) <= step / 2 * (1 + 1e-9)


def test_stochastic_rounding_is_unbiased() -> None:
    update = torch.tensor([0.3, -0.71, 1.0, 0.05], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    mean = torch.stack([quantize_uniform(update, bits=2, generator=g) for _ in range(20_000)])
    # Grid {-1, 0, 1}: each entry's mean converges to the entry (std of the mean <= 0.0036).
    assert torch.allclose(mean.mean(0), update, atol=0.02)


def test_prune_defense_and_metrics() -> None:
    defense = DEFENSES.create("prune", {"ratio": 0.25})
    assert isinstance(defense, Prune)
    out = defense.client_update.apply(0, torch.arange(1.0, 9.0), ctx())
    assert out.tolist() == [0, 0, 3, 4, 5, 6, 7, 8]
    assert defense.metrics()[0].value == 0.75
    assert defense.privacy_spent(1e-5) is None


def test_quantize_defense_and_metrics() -> None:
    defense = DEFENSES.create("quantize", {"bits": 4})
    assert isinstance(defense, Quantize)
    update = torch.linspace(-1, 1, 101)
    out = defense.client_update.apply(0, update, ctx())
    assert len(torch.unique(out)) <= 15
    values = {m.name: m.value for m in defense.metrics()}
    assert values["bits_per_value"] == 4
    # Every entry moves by less than one grid step (2/14), so the error is below that bound.
    bound = (2 / 14) * math.sqrt(101) / float(update.norm())
    assert 0 < values["relative_quantization_error"] < bound


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [("prune", {"ratio": 1.0}, "ratio"), ("quantize", {"bits": 1}, "bits"),
     ("quantize", {"bits": 32}, "bits")],
)
def test_bad_parameters_are_refused(name: str, params: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        DEFENSES.create(name, params)
