"""Top-k pruning zeroes exactly the smallest entries; quantization is on-grid and unbiased."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from fedbench.defenses.compression import (
    Prune,
    Quantize,
    prune_per_layer,
    prune_smallest,
    quantize_uniform,
)
from fedbench.errors import ConfigError
from fedbench.fl.context import RoundContext, RunInfo
from fedbench.fl.params import get_flat
from fedbench.fl.recipe import TrainingRecipe
from fedbench.registry import DEFENSES, MODELS
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


def run_of(build: nn.Module) -> RunInfo:
    """A RunInfo whose model is ``build`` (what the prune defense reads its layers from)."""
    dim = sum(p.numel() for p in build.parameters())
    return RunInfo(num_clients=1, rounds=1, expected_clients=1.0, sampling="fixed",
                   weighting="uniform", recipe=TrainingRecipe("fedsgd", 1, 1, None, 1.0),
                   client_sizes=(1,), dim=dim, model_factory=lambda: build, streams=Streams(0))


def lenet_gradient() -> tuple[nn.Module, torch.Tensor, list[int]]:
    """DLG's LeNet at initialisation, the flat gradient of one random image, the layer sizes."""
    torch.manual_seed(0)
    model = MODELS.create("lenet", {}, in_shape=(3, 32, 32), num_classes=10)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    F.cross_entropy(model(x), torch.tensor([3])).backward()
    gradient = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert gradient.numel() == get_flat(model).numel()
    return model, gradient, [p.numel() for p in model.parameters()]


def test_prune_defense_and_metrics() -> None:
    defense = DEFENSES.create("prune", {"ratio": 0.25, "scope": "global"})
    assert isinstance(defense, Prune)
    out = defense.client_update.apply(0, torch.arange(1.0, 9.0), ctx())
    assert out.tolist() == [0, 0, 3, 4, 5, 6, 7, 8]
    assert defense.metrics()[0].value == 0.75
    assert "global" in defense.metrics()[0].note
    assert defense.privacy_spent(1e-5) is None


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=6), ratio=st.floats(0, 0.99),
       seed=st.integers(0, 2**16))
def test_per_layer_pruning_zeroes_exactly_the_ratio_of_each_layer(
    sizes: list[int], ratio: float, seed: int
) -> None:
    # Distinct non-zero magnitudes, so the count of zeros is exactly what was pruned.
    g = torch.Generator().manual_seed(seed)
    update = (torch.randperm(sum(sizes), generator=g) + 1.0) * torch.sign(
        torch.randn(sum(sizes), generator=g))
    pruned = prune_per_layer(update, ratio, sizes)
    for before, after in zip(torch.split(update, sizes), torch.split(pruned, sizes), strict=True):
        zeroed = after == 0
        assert int(zeroed.sum()) == math.floor(ratio * len(before))
        assert torch.equal(after[~zeroed], before[~zeroed])
        if zeroed.any() and (~zeroed).any():
            assert float(before[~zeroed].abs().min()) > float(before[zeroed].abs().max())


def test_per_layer_is_the_default_and_prunes_every_lenet_layer() -> None:
    model, gradient, sizes = lenet_gradient()
    defense = DEFENSES.create("prune", {"ratio": 0.2})
    assert isinstance(defense, Prune) and defense.scope == "layer"
    defense.setup(run_of(model))
    assert defense.layer_sizes == tuple(sizes)
    pruned = defense.client_update.apply(0, gradient, ctx())
    for layer, n in zip(torch.split(pruned, sizes), sizes, strict=True):
        assert int((layer == 0).sum()) == math.floor(0.2 * n)
    assert defense.label == "prune 20% (per layer)"
    assert "per layer" in defense.metrics()[0].note


def test_global_pruning_is_unchanged_and_spares_the_convolutions() -> None:
    # The reason the two scopes differ against DLG: globally, the 20% smallest entries of
    # LeNet's gradient sit in a few layers, and the first convolution keeps nearly all of its.
    model, gradient, sizes = lenet_gradient()
    defense = DEFENSES.create("prune", {"ratio": 0.2, "scope": "global"})
    defense.setup(run_of(model))
    pruned = defense.client_update.apply(0, gradient, ctx())
    assert torch.equal(pruned, prune_smallest(gradient, 0.2))
    shares = [float((layer == 0).double().mean()) for layer in torch.split(pruned, sizes)]
    assert shares[0] < 0.05 and max(shares) > 0.3, shares
    assert defense.label == "prune 20% (global)"


def test_per_layer_pruning_needs_the_layers() -> None:
    with pytest.raises(RuntimeError, match="setup"):
        Prune(ratio=0.5).client_update.apply(0, torch.arange(4.0), ctx())
    with pytest.raises(ValueError, match="sizes"):
        prune_per_layer(torch.arange(4.0), 0.5, [3])


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
    [("prune", {"ratio": 1.0}, "ratio"), ("prune", {"scope": "model"}, "scope"),
     ("quantize", {"bits": 1}, "bits"),
     ("quantize", {"bits": 32}, "bits")],
)
def test_bad_parameters_are_refused(name: str, params: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        DEFENSES.create(name, params)
