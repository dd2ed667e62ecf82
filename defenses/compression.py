"""Gradient compression as non-DP baselines: top-k magnitude pruning and low-bit quantization.

Neither gives a formal guarantee. They are here because they are cheap and because papers claim
that they stop gradient inversion (DLG: pruning more than about 20% of the smallest entries
stops its attack; half precision does not), which the suite can then check.

Pruning ranks the entries of each parameter tensor on its own by default (``scope="layer"``,
the DLG paper's setting: every layer loses the same share). ``scope="global"`` ranks the whole
flat update at once; layers whose gradients are small then lose most of their entries and the
others almost none (on DLG's LeNet, 20% global pruning zeroes 40% of the last layer, ~0% of the
convolutions and removes a negligible share of ‖g‖²), so the two are different defenses.

Example:
    >>> import torch
    >>> prune_smallest(torch.tensor([0.1, -3.0, 0.5, 2.0]), 0.5).tolist()
    [0.0, -3.0, 0.0, 2.0]
    >>> prune_per_layer(torch.tensor([0.1, -3.0, 0.5, 2.0]), 0.5, (2, 2)).tolist()
    [0.0, -3.0, 0.0, 2.0]
    >>> prune_per_layer(torch.tensor([1.0, 2.0, 30.0, 40.0]), 0.5, (2, 2)).tolist()
    [0.0, 2.0, 0.0, 40.0]
    >>> quantize_uniform(torch.tensor([-1.0, 0.0, 1.0]), bits=2, generator=None).tolist()
    [-1.0, 0.0, 1.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from pydantic import Field

from fedbench.defense import Defense
from fedbench.fl.context import RoundContext, RunInfo
from fedbench.fl.stages import ClientUpdateStage
from fedbench.metrics.base import Metric
from fedbench.params import HalfOpenFraction
from fedbench.registry import register_defense


def prune_smallest(update: torch.Tensor, ratio: float) -> torch.Tensor:
    """``update`` with the ⌊ratio·d⌋ entries of smallest magnitude set to zero.

    Ties at the threshold are broken by position, so exactly ⌊ratio·d⌋ entries are zeroed.
    """
    if not 0 <= ratio <= 1:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    drop = math.floor(ratio * update.numel())
    if drop == 0:
        return update
    flat = update.reshape(-1)
    smallest = torch.topk(flat.abs(), drop, largest=False, sorted=False).indices
    pruned = flat.clone()
    pruned[smallest] = 0
    return pruned.view_as(update)


def prune_per_layer(update: torch.Tensor, ratio: float, sizes: Sequence[int]) -> torch.Tensor:
    """``update`` cut into consecutive layers of ``sizes`` entries, each pruned on its own.

    Every layer of n entries loses exactly its ⌊ratio·n⌋ smallest-magnitude entries.
    """
    if sum(sizes) != update.numel():
        raise ValueError(f"layer sizes add up to {sum(sizes)}, the update has {update.numel()}")
    layers = torch.split(update.reshape(-1), list(sizes))
    pruned = torch.cat([prune_smallest(layer, ratio) for layer in layers])
    return pruned.view_as(update)


def quantize_uniform(
    update: torch.Tensor, *, bits: int, generator: torch.Generator | None
) -> torch.Tensor:
    """``update`` on a uniform grid of 2^bits − 1 levels spanning [−max|u|, max|u|].

    With a generator the rounding is stochastic (unbiased: E[q(u)] = u), otherwise to nearest.
    The server receives the dequantized values; the grid is what a low-bit wire format carries.
    """
    if not 1 < bits <= 16:
        raise ValueError(f"bits must be in 2..16, got {bits}")
    bound = float(update.abs().max()) if update.numel() else 0.0
    if bound == 0 or not math.isfinite(bound):
        return update
    levels = 2**bits - 1
    step = 2 * bound / (levels - 1)
    position = (update.double() + bound) / step
    if generator is None:
        rounded = torch.round(position)
    else:
        floor = torch.floor(position)
        u = torch.rand(position.shape, generator=generator, dtype=torch.float64,
                       device=generator.device).to(position.device)
        rounded = floor + (u < position - floor).to(floor.dtype)
    rounded = rounded.clamp(0, levels - 1)
    quantized: torch.Tensor = (rounded * step - bound).to(update.dtype)
    return quantized


class _Prune(ClientUpdateStage):
    def __init__(self, owner: Prune) -> None:
        self.owner = owner

    def apply(self, client_id: int, update: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        owner = self.owner
        if owner.scope == "global":
            pruned = prune_smallest(update, owner.ratio)
        elif owner.layer_sizes is None:
            raise RuntimeError("per-layer pruning needs the layer sizes: call setup(run) first")
        else:
            pruned = prune_per_layer(update, owner.ratio, owner.layer_sizes)
        owner.kept.append(float((pruned != 0).double().mean()))
        return pruned


@register_defense("prune")
class Prune(Defense):
    """Top-k magnitude pruning of each client update (a non-DP baseline).

    Args:
        ratio: Fraction of the entries, smallest magnitude first, set to zero.
        scope: "layer" (default; the DLG paper's setting): the ratio applies to every parameter
            tensor of the model (each layer's weight and bias) separately; "global": to the
            whole flat update at once (see the module note for why they differ).

    Example:
        >>> Prune(ratio=0.2).label
        'prune 20% (per layer)'
    """

    def __init__(
        self, *, ratio: HalfOpenFraction = 0.2, scope: Literal["layer", "global"] = "layer"
    ) -> None:
        self.ratio = ratio
        self.scope = scope
        self.layer_sizes: tuple[int, ...] | None = None
        self.kept: list[float] = []
        self.client_update = _Prune(self)

    @property
    def label(self) -> str:
        """The defense as tables should name it, scope included."""
        where = "per layer" if self.scope == "layer" else "global"
        return f"prune {self.ratio:.0%} ({where})"

    def prepare(self, run: RunInfo) -> None:
        self.kept = []
        # The flat update follows model.parameters() order (fedbench.fl.params.get_flat), so
        # the trainable tensors' sizes, in that order, are its layer boundaries.
        model = run.model_factory()
        self.layer_sizes = tuple(p.numel() for p in model.parameters() if p.requires_grad)
        if sum(self.layer_sizes) != run.dim:
            raise ValueError(f"the model has {sum(self.layer_sizes)} parameters, run.dim is "
                             f"{run.dim}")

    def metrics(self) -> list[Metric]:
        if not self.kept:
            return []
        return [Metric("nonzero_fraction", sum(self.kept) / len(self.kept), None, kind="info",
                       note=f"mean fraction of non-zero entries in the updates ({self.label})")]


class _Quantize(ClientUpdateStage):
    def __init__(self, owner: Quantize) -> None:
        self.owner = owner

    def apply(self, client_id: int, update: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        generator = ctx.generator("quantize", client_id) if self.owner.stochastic else None
        quantized = quantize_uniform(update, bits=self.owner.bits, generator=generator)
        norm = float(torch.linalg.vector_norm(update.double()))
        if norm > 0:
            error = float(torch.linalg.vector_norm((quantized - update).double()))
            self.owner.errors.append(error / norm)
        return quantized


@register_defense("quantize")
class Quantize(Defense):
    """Uniform low-bit quantization of each client update (a non-DP baseline).

    Args:
        bits: Bits per value (2..16); 2^bits − 1 levels over [−max|u|, max|u|].
        stochastic: Unbiased stochastic rounding (True) or rounding to nearest.

    Example:
        >>> Quantize(bits=4).bits
        4
    """

    def __init__(
        self, *, bits: Annotated[int, Field(ge=2, le=16)] = 8, stochastic: bool = True
    ) -> None:
        self.bits = bits
        self.stochastic = stochastic
        self.errors: list[float] = []
        self.client_update = _Quantize(self)

    def prepare(self, run: RunInfo) -> None:
        self.errors = []

    def metrics(self) -> list[Metric]:
        out = [Metric("bits_per_value", self.bits, None, kind="info")]
        if self.errors:
            out.append(Metric("relative_quantization_error", sum(self.errors) / len(self.errors),
                              None, kind="info", note="mean ‖q(Δ) − Δ‖ / ‖Δ‖"))
        return out
