"""Exact input recovery through a first fully connected layer with bias (Geiping et al. 2020).

For y = W·x + b and one example, ∂L/∂W = (∂L/∂b)·xᵀ: every row i with ∂L/∂b_i ≠ 0 holds the
input scaled by ∂L/∂b_i, so x = ∂L/∂W_i / ∂L/∂b_i. The attack takes the least-squares solution
over all rows, x = Σ_i b_i·W_i / Σ_i b_i², which is exact without noise and averages noise away
when there is some. The ratio is scale-free, so it holds for the update Δ = −lr·g too, and even
for a FedAvg update of one example (every step's rows are multiples of the same x).

With N > 1 examples a row mixes the examples active at that unit: each row ratio is a
weighted mean of inputs. The attack then returns N of those row ratios, chosen far apart
(greedy farthest-point), which are exact only for units that a single example activates.

Example:
    >>> import torch
    >>> x = torch.tensor([0.2, 0.7, 0.1])
    >>> b = torch.tensor([0.5, -1.0])
    >>> invert_linear(b[:, None] * x, b, 1)
    tensor([[0.2000, 0.7000, 0.1000]])
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from fedbench.attack import AttackerKnowledge, AttackResult
from fedbench.attacks.gradient_inversion.base import InversionAttack, pixel_box
from fedbench.attacks.gradient_inversion.idlg import recover_labels
from fedbench.attacks.gradient_inversion.objective import FunctionalModel
from fedbench.attacks.gradient_inversion.views import InversionTarget
from fedbench.registry import register_attack

# Rows whose bias gradient is this small next to the largest one carry only rounding noise.
_RELATIVE_TOLERANCE = 1e-6


def first_linear(model: FunctionalModel, input_numel: int) -> tuple[str, str]:
    """Parameter names (weight, bias) of the first layer, which must be Linear with bias.

    Raises:
        ValueError: If the first layer with parameters is not an ``nn.Linear`` with bias on the
            flattened input.
    """
    for name, module in model.module.named_modules():
        if not list(module.parameters(recurse=False)):
            continue
        if not isinstance(module, nn.Linear) or module.bias is None:
            raise ValueError(
                f"analytic_fc needs a first layer nn.Linear with bias; the model's first layer "
                f"'{name}' is {type(module).__name__} (use mlp or logreg)"
            )
        if module.in_features != input_numel:
            raise ValueError(
                f"analytic_fc: first layer '{name}' takes {module.in_features} inputs, the data "
                f"has {input_numel} values per example"
            )
        prefix = f"{name}." if name else ""
        return f"{prefix}weight", f"{prefix}bias"
    raise ValueError("analytic_fc: the model has no parameters")


def invert_linear(
    weight_grad: torch.Tensor, bias_grad: torch.Tensor, num_images: int
) -> torch.Tensor:
    """Inputs (num_images, in_features) behind a Linear layer's weight and bias gradients."""
    weight_grad, bias_grad = weight_grad.detach(), bias_grad.detach()
    scale = bias_grad.abs().max()
    rows = torch.nonzero(bias_grad.abs() > _RELATIVE_TOLERANCE * scale).flatten()
    if scale == 0 or len(rows) == 0:
        return torch.zeros(num_images, weight_grad.shape[1], device=weight_grad.device)
    if num_images == 1:
        b = bias_grad[rows]
        return ((b[:, None] * weight_grad[rows]).sum(0) / (b**2).sum()).unsqueeze(0)
    candidates = weight_grad[rows] / bias_grad[rows, None]
    chosen = [int(torch.argmax(bias_grad[rows].abs()))]
    distance = torch.cdist(candidates, candidates[chosen[0]][None]).flatten()
    while len(chosen) < min(num_images, len(rows)):
        chosen.append(int(torch.argmax(distance)))
        distance = torch.minimum(
            distance, torch.cdist(candidates, candidates[chosen[-1]][None]).flatten()
        )
    picks = candidates[chosen]
    repeats = math.ceil(num_images / len(picks))
    return picks.repeat(repeats, 1)[:num_images]


@register_attack("analytic_fc")
class AnalyticFC(InversionAttack):
    """Exact input recovery from the gradient of a first fully connected layer with bias.

    Args:
        target_round: The attacked round.
        target_client: The attacked client (None: the first contributor).
    """

    name: ClassVar[str] = "analytic_fc"

    def reconstruct(
        self, target: InversionTarget, model: FunctionalModel, knowledge: AttackerKnowledge
    ) -> AttackResult:
        input_numel = math.prod(knowledge.input_shape)
        weight, bias = first_linear(model, input_numel)
        # The update itself: the ratio is scale-free and exact over several local steps too.
        update = model.split(target.update)
        x = invert_linear(update[weight], update[bias], target.num_images)
        x = x.reshape(target.num_images, *knowledge.input_shape)
        box = pixel_box(knowledge)
        if box is not None:
            x = x.clamp(*box)
        labels, label_source = recover_labels(target, model, knowledge)
        exact = target.num_images == 1
        return AttackResult(
            reconstruction=x,
            labels=labels,
            extras={
                "labels": label_source,
                "note": "" if exact else "batch > 1: row ratios mix the examples of each unit",
            },
        )
