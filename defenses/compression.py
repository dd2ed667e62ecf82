"""Gradient compression as non-DP baselines: top-k magnitude pruning and low-bit quantization.

Neither gives a formal guarantee. They are here because they are cheap and because papers claim
that they stop gradient inversion (DLG: pruning more than about 20% of the smallest entries
stops its attack; half precision does not), which the suite can then check.

Example:
    >>> import torch
    >>> prune_smallest(torch.tensor([0.1, -3.0, 0.5, 2.0]), 0.5).tolist()
    [0.0, -3.0, 0.0, 2.0]
    >>> quantize_uniform(torch.tensor([-1.0, 0.0, 1.0]), bits=2, generator=None).tolist()
    [-1.0, 0.0, 1.0]
"""

from __future__ import annotations

import math
from typing import Annotated

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
        pruned = prune_smallest(update, self.owner.ratio)
        self.owner.kept.append(float((pruned != 0).double().mean()))
        return pruned


@register_defense("prune")
class Prune(Defense):
    """Top-k magnitude pruning of each client update (a non-DP baseline).

    Args:
        ratio: Fraction of the update's entries, smallest magnitude first, set to zero.

    Example:
        >>> Prune(ratio=0.2).ratio
        0.2
    """

    def __init__(self, *, ratio: HalfOpenFraction = 0.2) -> None:
        self.ratio = ratio
        self.kept: list[float] = []
        self.client_update = _Prune(self)

    def prepare(self, run: RunInfo) -> None:
        self.kept = []

    def metrics(self) -> list[Metric]:
        if not self.kept:
            return []
        return [Metric("nonzero_fraction", sum(self.kept) / len(self.kept), None, kind="info",
                       note="mean fraction of non-zero entries in the pruned updates")]


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
