"""Imprint / trap weights (Fowl, Geiping, Czaja, Goldblum, Goldstein, "Robbing the Fed", ICLR
2022): a malicious server prepends a block to the model that makes the aggregate gradient carry
single inputs in the clear.

The block (:class:`ImprintBlock`) is a linear layer with k rows and a ReLU. Every row measures
the same public statistic s(x) = a·x of the input (``statistic="mean"``: a = 1ᵀ/N, the mean
brightness), and row i has bias −t_i, so unit i is active exactly when s(x) > t_i. For the
mean loss of B inputs and a downstream gradient g(x) that is the same for every unit,

    ∇W_i = (1/B)·Σ_{x: s(x) > t_i} g(x)·x,     ∇b_i = (1/B)·Σ_{x: s(x) > t_i} g(x),

so consecutive rows differ by the inputs in the bin (t_i, t_{i+1}] only, and an input alone in
its bin is x = (∇W_i − ∇W_{i+1}) / (∇b_i − ∇b_{i+1}) exactly (:func:`recover_inputs`). The ratio
is scale-free: it holds for an update Δ = −lr·∇ (FedSGD) and for a sum over clients, so the
SecAgg/HE aggregate of N clients with B inputs each is one batch of N·B inputs. A FedAvg update of
several local steps is only approximately a gradient (the block's weights, hence its bins, move
between the steps); singletons then come back approximately, not exactly.

Thresholds are quantiles of s on the attacker's public data (:func:`imprint_thresholds`), so the
k bins are equal-mass for data from the same distribution, and B inputs leave on average
B·(1 − 1/k)^(B−1) of them alone in a bin (:func:`expected_singletons`).

How the rest of the network keeps working: the block adds gain·Σ_i (ReLU(z_i) − ReLU(z'_i)) to
every input value, where z are the trap layer's outputs and z' those of a *twin* layer with the
same weights. At the broadcast weights the two are bitwise equal, so the block's output is x
itself and the original model runs on it unchanged (same predictions, same gradients for its
own parameters); the trap layer still receives the gradient g(x) = gain·Σ_j ∂L/∂out_j(x) through
its ReLU, the same for every unit (the twin receives its negative). The server re-imprints at
every broadcast (after an update the trap and twin weights differ).

The attack (registered as ``imprint``) reads everything from the model and w_t: the block is
found in ``knowledge.model_factory()`` (it must be the imprinted architecture, e.g. built by
:func:`imprinted_factory`), k is its width, the statistic and thresholds are its rows and
biases in w_t. It has no parameters of its own besides the target and the exactness threshold.

Example:
    >>> import torch
    >>> from torch import nn
    >>> public = torch.rand(200, 1, 4, 4)
    >>> row = statistic_row((1, 4, 4))
    >>> model = imprint_model(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)),
    ...                       thresholds=imprint_thresholds(public, 8, row), row=row)
    >>> x = torch.rand(5, 1, 4, 4)
    >>> bool(torch.equal(model.block(x), x))
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as F

from fedbench.attack import AttackerKnowledge, AttackResult, GroundTruth
from fedbench.attacks.gradient_inversion.base import InversionAttack, pixel_box
from fedbench.attacks.gradient_inversion.figures import reconstruction_grid
from fedbench.attacks.gradient_inversion.objective import FunctionalModel
from fedbench.attacks.gradient_inversion.scoring import (
    EXACT_PSNR,
    exact_recovery,
    exact_recovery_metrics,
    failure_baseline,
    per_image_psnr,
)
from fedbench.attacks.gradient_inversion.views import InversionTarget
from fedbench.fl.params import get_flat, num_params
from fedbench.metrics.base import Metric
from fedbench.params import PositiveFloat
from fedbench.registry import register_attack

Statistic = Literal["mean", "projection"]

# Bins whose bias-gradient difference is this small next to the largest one are empty: what is
# left there is rounding. An update Δ = w_i − w_t computed in float32 rounds each bias by
# ~6e-8·|t_i|, ~1e-5 of a typical bin's lr·g(x)/B, so 1e-6 would keep empty bins as noise.
RELATIVE_TOLERANCE = 1e-4


# -- the block --------------------------------------------------------------------------------


def statistic_row(
    input_shape: tuple[int, ...], statistic: Statistic = "mean", *, seed: int = 0
) -> torch.Tensor:
    """The row a every trap unit applies to the flattened input: s(x) = a·x.

    ``mean``: a = 1/N (mean brightness). ``projection``: a fixed Gaussian direction from
    ``seed``, scaled by 1/N (no ties between inputs, unlike the mean of quantized pixels).
    """
    numel = math.prod(input_shape)
    if statistic == "mean":
        return torch.full((numel,), 1.0 / numel)
    draw = torch.randn(numel, generator=torch.Generator().manual_seed(seed))
    return draw / numel


def statistic_values(x: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """s(x) = a·x for each example of ``x`` (float64)."""
    return x.detach().flatten(1).double() @ row.double()


def imprint_thresholds(public_x: torch.Tensor, bins: int, row: torch.Tensor) -> torch.Tensor:
    """k ascending thresholds that split the public statistic into k equal-mass bins.

    t_1 lies below every public value (by the public range, so slightly smaller private inputs
    still land in the first bin); t_2 … t_k are the public quantiles 1/k … (k−1)/k. The bins
    (t_i, t_{i+1}] (and (t_k, ∞)) then each hold a share 1/k of data from the public
    distribution. Inputs with s(x) ≤ t_1 activate no unit and are never seen.
    """
    if bins < 1:
        raise ValueError(f"imprint needs at least one bin, got {bins}")
    values = statistic_values(public_x, row)
    if len(values) < bins:
        raise ValueError(f"{len(values)} public examples cannot place {bins} quantiles")
    inner = torch.quantile(values, torch.arange(1, bins, dtype=torch.float64) / bins)
    low = values.min() - (values.max() - values.min()).clamp_min(1e-6)
    return torch.cat([low.view(1), inner]).float()


def expected_singletons(inputs: int, bins: int) -> float:
    """E[#inputs alone in their bin] for ``inputs`` uniform draws over ``bins`` bins."""
    return inputs * (1 - 1 / bins) ** (inputs - 1)


def singleton_variance(inputs: int, bins: int) -> float:
    """Var[#inputs alone in their bin] (pairs: both alone, in two different bins)."""
    if inputs < 2:
        return 0.0
    mean = expected_singletons(inputs, bins)
    pairs = inputs * (inputs - 1) * (1 - 1 / bins) * (1 - 2 / bins) ** (inputs - 2)
    return mean + pairs - mean**2


class ImprintBlock(nn.Module):
    """k trap units on one statistic, and a twin that cancels them in the forward pass.

    Args:
        input_shape: Shape of one input (C, H, W) or (features,).
        bins: k, the number of trap units (bins).
        gain: Scale of the trap units' gradient: the block adds gain·Σ_i (ReLU(z_i) − ReLU(z'_i))
            to every input value (zero at the broadcast weights), so the trap layer's gradient is
            proportional to ``gain``. Raise it when a channel quantizes coarsely.

    A fresh block measures the mean with thresholds spread over [0, 1); :meth:`set_statistic`
    (or :func:`imprint_model`) puts the server's choice in.
    """

    def __init__(self, *, input_shape: tuple[int, ...], bins: int, gain: float = 1.0) -> None:
        super().__init__()
        if bins < 1:
            raise ValueError(f"imprint needs at least one bin, got {bins}")
        self.input_shape = tuple(input_shape)
        self.bins = bins
        self.gain = gain
        numel = math.prod(self.input_shape)
        self.trap = nn.Linear(numel, bins)
        self.twin = nn.Linear(numel, bins)
        self.set_statistic(statistic_row(self.input_shape), torch.arange(bins) / bins)

    def set_statistic(self, row: torch.Tensor, thresholds: torch.Tensor) -> None:
        """Every unit of the trap (and its twin) computes row·x − t_i."""
        if row.numel() != self.trap.in_features or thresholds.numel() != self.bins:
            raise ValueError(
                f"a {self.bins}-bin block on {self.trap.in_features} values needs a row of that "
                f"size and {self.bins} thresholds, got {row.numel()} and {thresholds.numel()}"
            )
        with torch.no_grad():
            for layer in (self.trap, self.twin):
                layer.weight.copy_(row.reshape(1, -1).expand(self.bins, -1))
                layer.bias.copy_(-thresholds.reshape(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        signal = F.relu(self.trap(flat)) - F.relu(self.twin(flat))  # 0 at the broadcast weights
        shift = self.gain * signal.sum(dim=1)
        return x + shift.view(-1, *([1] * (x.dim() - 1)))


class ImprintedModel(nn.Module):
    """``body`` behind an :class:`ImprintBlock`; the block's parameters come first in the flat
    vector (:func:`fedbench.fl.params.get_flat`), the body's follow in their own order.

    Args:
        body: The original model (lenet, convnet, mlp, ...), unchanged.
        input_shape: Shape of one input.
        bins: k.
        gain: See :class:`ImprintBlock`.
    """

    def __init__(
        self, body: nn.Module, *, input_shape: tuple[int, ...], bins: int, gain: float = 1.0
    ) -> None:
        super().__init__()
        self.block = ImprintBlock(input_shape=input_shape, bins=bins, gain=gain)
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(self.block(x))
        return out


def imprint_model(
    body: nn.Module, *, thresholds: torch.Tensor, row: torch.Tensor, gain: float = 1.0
) -> ImprintedModel:
    """``body`` (its parameters kept) behind a block on statistic ``row`` at ``thresholds``.

    ``row`` has one entry per input value; the input shape is taken as (row.numel(),) for the
    block's bookkeeping only, since the block flattens whatever it receives.
    """
    model = ImprintedModel(body, input_shape=(row.numel(),), bins=thresholds.numel(), gain=gain)
    model.block.set_statistic(row, thresholds)
    return model


def imprinted_factory(
    factory: Callable[[], nn.Module],
    *,
    thresholds: torch.Tensor,
    row: torch.Tensor,
    gain: float = 1.0,
) -> Callable[[], ImprintedModel]:
    """A model factory for the imprinted architecture (fresh body from ``factory``, block at
    ``thresholds``): what clients and the attacker build, and whose flat parameters are w_t."""

    def build() -> ImprintedModel:
        return imprint_model(factory(), thresholds=thresholds, row=row, gain=gain)

    return build


def imprinted_params(model: ImprintedModel, body_params: torch.Tensor) -> torch.Tensor:
    """The flat w_t the server sends: ``model``'s block parameters, then ``body_params`` (the
    honest model's flat w_t, in :func:`~fedbench.fl.params.get_flat` order)."""
    block = get_flat(model.block)
    if body_params.numel() != num_params(model.body):
        raise ValueError(
            f"the body has {num_params(model.body)} parameters, got a vector of "
            f"{body_params.numel()}"
        )
    return torch.cat([block.to(body_params.dtype), body_params.detach().flatten()])


def body_part(model: ImprintedModel, flat: torch.Tensor) -> torch.Tensor:
    """The body's slice of a flat vector of the imprinted model (w or an update Δ): what the
    server applies to its honest model once it has read the trap layer."""
    return flat[num_params(model.block):]


# -- reading the block back and recovering inputs ---------------------------------------------


@dataclass(frozen=True)
class ImprintLayout:
    """Where the trap layer sits in a model's parameters and what it measures.

    Attributes:
        weight: Parameter name of the trap layer's weight (k × N).
        bias: Parameter name of its bias (k).
        twin_weight: The twin's weight (its gradient is the trap's, negated).
        twin_bias: The twin's bias.
        bins: k.
    """

    weight: str
    bias: str
    twin_weight: str
    twin_bias: str
    bins: int


def find_block(model: nn.Module) -> ImprintLayout:
    """The (first) :class:`ImprintBlock` inside ``model``.

    Raises:
        ValueError: If the model has none (the attack needs the imprinted architecture).
    """
    for name, module in model.named_modules():
        if isinstance(module, ImprintBlock):
            prefix = f"{name}." if name else ""
            return ImprintLayout(
                weight=f"{prefix}trap.weight", bias=f"{prefix}trap.bias",
                twin_weight=f"{prefix}twin.weight", twin_bias=f"{prefix}twin.bias",
                bins=module.bins,
            )
    raise ValueError(
        "imprint: the model has no ImprintBlock; the attack needs the architecture the server "
        "sent (knowledge.model_factory must build it, e.g. with imprinted_factory)"
    )


def bin_order(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Unit indices by ascending threshold t_i = −b_i, after checking that every row measures
    the same statistic (otherwise consecutive rows do not differ by one bin's inputs)."""
    if not torch.allclose(weight, weight[:1].expand_as(weight), rtol=1e-5, atol=1e-8):
        raise ValueError("imprint: the trap rows differ; they must all measure one statistic")
    return torch.argsort(-bias)


@dataclass(frozen=True)
class Recovery:
    """Inputs recovered from the trap layer's gradient.

    Attributes:
        inputs: One flattened input per non-empty bin (R × N), ascending statistic.
        bins: The bin (0-based, ascending threshold) each came from.
        bias_differences: ∇b_i − ∇b_{i+1} of each returned bin (the scale of its contents).
    """

    inputs: torch.Tensor
    bins: torch.Tensor
    bias_differences: torch.Tensor


def recover_inputs(
    weight_grad: torch.Tensor,
    bias_grad: torch.Tensor,
    order: torch.Tensor,
    *,
    tolerance: float = RELATIVE_TOLERANCE,
) -> Recovery:
    """x = (∇W_i − ∇W_{i+1}) / (∇b_i − ∇b_{i+1}) for every bin whose bias difference is not zero.

    ``weight_grad`` and ``bias_grad`` may be a gradient, an update −lr·∇ or a sum of updates
    (the ratio is scale-free); ``order`` sorts the units by threshold (:func:`bin_order`). The
    top bin has no successor (∇W_{k+1} = 0). A bin holding one input returns it exactly; one
    holding several returns a g-weighted mixture of them (not any of them).
    """
    w = weight_grad.detach().double()[order]
    b = bias_grad.detach().double()[order]
    zero_w, zero_b = torch.zeros_like(w[:1]), torch.zeros_like(b[:1])
    dw = w - torch.cat([w[1:], zero_w])
    db = b - torch.cat([b[1:], zero_b])
    scale = db.abs().max()
    keep = torch.nonzero(db.abs() > tolerance * scale).flatten() if scale > 0 else \
        torch.zeros(0, dtype=torch.long)
    return Recovery(inputs=dw[keep] / db[keep, None], bins=keep, bias_differences=db[keep])


def trap_gradient(
    update: dict[str, torch.Tensor], layout: ImprintLayout
) -> tuple[torch.Tensor, torch.Tensor]:
    """The trap layer's (weight, bias) update, averaged with the twin's negated one: equal for
    one gradient step, and the average halves independent quantization noise of a channel."""
    weight = (update[layout.weight] - update[layout.twin_weight]) / 2
    bias = (update[layout.bias] - update[layout.twin_bias]) / 2
    return weight, bias


def occupied_bins(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """Ground-truth helper for tests: each input's bin (0-based, ascending threshold), or −1
    below the lowest threshold, by the block's own arithmetic (an input above m thresholds
    activates m units and sits in bin m − 1)."""
    bin_order(weight, bias)  # the same checks as the attack
    pre = F.linear(x.detach().flatten(1).float(), weight.detach().float(), bias.detach().float())
    return (pre > 0).sum(dim=1) - 1


# -- the attack -------------------------------------------------------------------------------


@register_attack("imprint")
class Imprint(InversionAttack):
    """Imprint/trap weights (Fowl et al. 2022): exact inputs from an imprinted model's gradient.

    The block's k, statistic and thresholds are read from the model (knowledge.model_factory
    must build the imprinted architecture) and from w_t; see the module docstring.

    Args:
        target_round: The attacked round.
        target_client: The attacked client for the ``client_update`` view (None: the first
            contributor).
        exact_db: PSNR above which an input counts as recovered exactly.
    """

    name: ClassVar[str] = "imprint"

    def __init__(
        self,
        *,
        target_round: int = 0,
        target_client: int | None = None,
        exact_db: PositiveFloat = EXACT_PSNR,
    ) -> None:
        super().__init__(target_round=target_round, target_client=target_client)
        self.exact_db = exact_db

    def reconstruct(
        self, target: InversionTarget, model: FunctionalModel, knowledge: AttackerKnowledge
    ) -> AttackResult:
        layout = find_block(model.module)
        order = bin_order(model.params[layout.weight], model.params[layout.bias])
        weight, bias = trap_gradient(model.split(target.update), layout)
        recovery = recover_inputs(weight, bias, order)
        x = recovery.inputs.float().reshape(-1, *knowledge.input_shape)
        box = pixel_box(knowledge)
        if box is not None:
            x = x.clamp(*box)
        return AttackResult(
            reconstruction=x,
            labels=None,
            extras={
                "bins": layout.bins,
                "bins_nonempty": len(recovery.bins),
                "note": self.proxy_note(target),
            },
        )

    def score(self, result: AttackResult, truth: GroundTruth) -> list[Metric]:
        if result.reconstruction is None:
            raise ValueError("imprint: the result has no reconstruction to score")
        if truth.examples is None:
            raise ValueError("imprint: scoring needs the private examples")
        data_kind = str(result.extras.get("data_kind", "image"))
        recovery = exact_recovery(result.reconstruction, truth.examples.x, data_kind=data_kind,
                                  threshold_db=self.exact_db)
        metrics = exact_recovery_metrics(recovery, note=str(result.extras.get("note", "")))
        metrics.append(Metric("label_accuracy", None, False, kind="privacy",
                              note="the attack recovers no labels"))
        bins = int(result.extras.get("bins", 0))
        metrics.append(Metric("imprint_bins", float(bins), None, kind="info"))
        inputs = len(truth.examples.x)
        # The closed form to hold the measured share against: singletons of B inputs in k
        # equal-mass bins. Fewer means the public quantiles did not split the clients' data
        # into equal masses (few public examples, ties), or the channel's precision lost some.
        metrics.append(Metric(
            "exact_recovery_expected", expected_singletons(inputs, bins) / inputs if bins else
            None, None, kind="info",
            note=f"B·(1−1/k)^(B−1)/B for B={inputs} inputs in k={bins} equal-mass bins"))
        metrics.append(failure_baseline(truth.examples.x, data_kind))
        return metrics

    def figures(
        self, result: AttackResult, truth: GroundTruth, folder: Path, *, caption: str = ""
    ) -> list[Path]:
        """The reconstruction grid, each true image over the reconstruction assigned to it on
        log-MSE (as scored), so exact recoveries sit under their own image."""
        if (
            result.reconstruction is None
            or truth.examples is None
            or result.extras.get("data_kind") != "image"
        ):
            return []
        ordered, values = per_image_psnr(result.reconstruction, truth.examples.x,
                                         data_kind="image", cost="log_mse")
        exact = sum(v > self.exact_db for v in values)
        headline = (f"imprint on the {result.extras.get('view', '?')} view: {exact} of "
                    f"{len(values)} inputs recovered exactly (> {self.exact_db:g} dB)")
        title = "\n".join(p for p in (caption, headline) if p)
        path = folder / f"{self.name}_reconstruction.png"
        return [reconstruction_grid(truth.examples.x, ordered, values, path, title=title)]
