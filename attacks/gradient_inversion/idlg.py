"""Analytic label recovery (iDLG, Zhao, Mopuri, Bilen 2020) and the iDLG attack.

For cross-entropy, the last layer's bias gradient of one example is p − onehot(y): only the
true class is negative. So with one image the label is the argmin of the bias gradient (iDLG;
without a bias, of the row sums of the weight gradient, which carry the same sign when the
layer's inputs are non-negative, as after a sigmoid or ReLU).

For a batch of N, the mean bias gradient is p̄ − counts/N (p̄ the mean softmax output), so
counts ≈ N·(p̄ − ∇b). iDLG itself covers N = 1 only; this count-based extension follows the
label-counting attacks that came after it (e.g. Wainakh et al., PETS 2022). Every class with a
negative bias gradient occurs at least once; the remaining slots go to the largest estimated
counts. p̄ is estimated on the attacker's public population data (uniform when there is none).

:class:`IDLG` then runs DLG on the images only, with the recovered labels fixed.

Example:
    >>> import torch
    >>> count_labels(torch.tensor([0.25, -0.75, 0.25, 0.25]), 2, torch.full((4,), 0.25)).tolist()
    [1, 1]
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from fedbench.attack import AttackerKnowledge
from fedbench.attacks.gradient_inversion.dlg import DLG
from fedbench.attacks.gradient_inversion.objective import FunctionalModel, Params
from fedbench.attacks.gradient_inversion.views import InversionTarget
from fedbench.registry import register_attack

POPULATION_SAMPLE = 256  # public examples used to estimate the mean softmax output


def last_linear(model: FunctionalModel) -> tuple[str, str | None]:
    """Parameter names (weight, bias or None) of the model's last ``nn.Linear`` layer."""
    found: tuple[str, str | None] | None = None
    for name, module in model.module.named_modules():
        if isinstance(module, nn.Linear):
            prefix = f"{name}." if name else ""
            found = (f"{prefix}weight", f"{prefix}bias" if module.bias is not None else None)
    if found is None:
        raise ValueError("label recovery needs a model whose last layer is nn.Linear")
    return found


def label_signal(gradient: Params, model: FunctionalModel) -> torch.Tensor:
    """Per class: the last layer's mean bias gradient (or weight-gradient row sums)."""
    weight, bias = last_linear(model)
    return gradient[bias] if bias is not None else gradient[weight].sum(dim=1)


@torch.no_grad()
def public_mean_probabilities(
    model: FunctionalModel, knowledge: AttackerKnowledge
) -> torch.Tensor:
    """Mean softmax output of the model at w_t on public population data (else uniform)."""
    population = knowledge.population
    if population is None or len(population) == 0:
        return torch.full((knowledge.num_classes,), 1.0 / knowledge.num_classes,
                          device=model.device)
    x = population.x[:POPULATION_SAMPLE].to(model.device)
    return torch.softmax(model.logits(model.params, x), dim=-1).mean(dim=0)


def count_labels(signal: torch.Tensor, num_images: int, mean_probs: torch.Tensor) -> torch.Tensor:
    """Labels of a batch of ``num_images`` from its mean bias gradient, sorted.

    Args:
        signal: Mean bias gradient per class (p̄ − counts/N).
        num_images: Batch size N.
        mean_probs: Estimated mean softmax output p̄ per class.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images}")
    signal, mean_probs = signal.detach().double().cpu(), mean_probs.detach().double().cpu()
    estimate = (num_images * (mean_probs - signal)).clamp_min(0)
    counts = torch.zeros_like(signal, dtype=torch.long)
    negative = torch.nonzero(signal < 0).flatten()
    negative = negative[torch.argsort(signal[negative])][:num_images]  # most negative first
    counts[negative] = 1
    residual = estimate - counts
    for _ in range(num_images - int(counts.sum())):
        best = int(torch.argmax(residual))
        counts[best] += 1
        residual[best] -= 1
    return torch.repeat_interleave(torch.arange(len(signal)), counts)


def recover_labels(
    target: InversionTarget, model: FunctionalModel, knowledge: AttackerKnowledge
) -> tuple[torch.Tensor, str]:
    """The labels of all ``target.num_images`` images, and how they were found.

    One image: iDLG's argmin. Several: counts from the bias gradient (see the module note);
    for a FedAvg update the one-gradient proxy −Δ̄/(lr·steps) stands in for the mean gradient.
    """
    signal = label_signal(model.split(target.gradient), model)
    if target.num_images == 1:
        labels = torch.argmin(signal).reshape(1).cpu()
        method = "analytic (iDLG: argmin of the last-layer gradient)"
    else:
        mean_probs = public_mean_probabilities(model, knowledge)
        labels = count_labels(signal, target.num_images, mean_probs)
        method = "analytic (counts from the last-layer bias gradient)"
    return labels.to(model.device), method


@register_attack("idlg")
class IDLG(DLG):
    """iDLG: labels recovered analytically from the last layer, then DLG on the images only.

    Args:
        iterations: Outer L-BFGS iterations (300 as DLG's public code).
        lr: L-BFGS learning rate (1).
        inner_iterations: L-BFGS iterations inside one outer iteration (20).
        line_search: "strong_wolfe" (default) or "none" (the original fixed step).
        restarts: Independent random starts; the lowest final distance is kept.
        target_round: The attacked round.
        target_client: The attacked client (None: the first contributor).
    """

    name: ClassVar[str] = "idlg"

    def fixed_labels(
        self, target: InversionTarget, model: FunctionalModel, knowledge: AttackerKnowledge
    ) -> tuple[torch.Tensor | None, str]:
        return recover_labels(target, model, knowledge)
