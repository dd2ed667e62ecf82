"""Inverting Gradients (Geiping, Bauermeister, Dröge, Moeller, NeurIPS 2020).

Cosine distance between the dummy batch's gradient and the target over all layers, plus a
total-variation prior; Adam (lr 0.1) on the *sign* of the input gradient; pixels boxed to the
valid range after every step; learning rate ×0.1 at 3/8, 5/8 and 7/8 of the run (4,000
iterations for CIFAR); several restarts, and the one with the lowest final distance wins.
Labels come from the analytic recovery step (:func:`.idlg.recover_labels`).

Restarts run together: the objective is ``vmap``ped over a leading restart dimension, and since
Adam works coordinate-wise on independent losses, one optimiser over the stacked inputs is
exactly the same as separate runs.

Example:
    >>> milestones(4000)
    [1500, 2500, 3500]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from fedbench.attack import AttackerKnowledge, AttackResult
from fedbench.attacks.gradient_inversion.base import (
    InversionAttack,
    check_positive,
    pixel_box,
    progress,
    random_inputs,
)
from fedbench.attacks.gradient_inversion.idlg import recover_labels
from fedbench.attacks.gradient_inversion.objective import (
    FunctionalModel,
    MatchingObjective,
    known_layers,
)
from fedbench.attacks.gradient_inversion.views import InversionTarget
from fedbench.params import NonNegativeFloat, PositiveFloat, PositiveInt
from fedbench.registry import register_attack


def milestones(iterations: int) -> list[int]:
    """Iterations after which the learning rate drops ×0.1: 3/8, 5/8 and 7/8 of the run."""
    return [iterations * k // 8 for k in (3, 5, 7)]


@dataclass
class AdamOutcome:
    """Signed-Adam reconstruction: the best restart's inputs and labels, every restart's loss."""

    x: torch.Tensor
    labels: torch.Tensor
    losses: torch.Tensor
    best: int


def signed_adam(
    objective: MatchingObjective,
    x0: torch.Tensor,
    labels: torch.Tensor,
    *,
    iterations: int,
    lr: float,
    box: tuple[float, float] | None,
    desc: str,
    label_logits0: torch.Tensor | None = None,
) -> AdamOutcome:
    """Run all restarts at once: ``x0`` is (restarts, N, ...), ``labels`` (N,).

    With ``label_logits0`` (restarts, N, classes) the labels are soft and optimised too (plain
    Adam on the logits; only the input gradient is signed), and ``labels`` is ignored.
    Returns the restart with the lowest final matching distance (TV excluded, as in the paper's
    scoring by loss).
    """
    restarts = x0.shape[0]
    x = x0.clone()
    if box is not None:
        x = x.clamp(*box)
    x.requires_grad_(True)
    variables = [x]
    logits = None
    if label_logits0 is not None:
        logits = label_logits0.clone().requires_grad_(True)
        variables.append(logits)

    def current_labels() -> torch.Tensor:
        if logits is not None:
            return torch.softmax(logits, dim=-1)
        return labels.expand(restarts, *labels.shape)

    loss_fn = objective.batched()
    optimizer = torch.optim.Adam(variables, lr=lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=milestones(iterations), gamma=0.1
    )
    for _ in progress(range(iterations), desc):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(x, current_labels()).sum().backward()  # independent restarts: the sum splits
        assert x.grad is not None
        x.grad.sign_()
        optimizer.step()
        scheduler.step()
        if box is not None:
            with torch.no_grad():
                x.clamp_(*box)
    with torch.no_grad():
        final_labels = current_labels().detach()
        losses = objective.batched(tv=False)(x, final_labels).detach()
    finite = torch.where(torch.isfinite(losses), losses, torch.full_like(losses, float("inf")))
    best = int(torch.argmin(finite))
    chosen = final_labels[best] if logits is None else final_labels[best].argmax(dim=-1)
    return AdamOutcome(x.detach()[best], chosen, losses.cpu(), best)


@register_attack("inverting_gradients")
class InvertingGradients(InversionAttack):
    """Inverting Gradients: cosine distance + TV, signed Adam, boxed inputs, restarts.

    Args:
        iterations: Optimisation steps (4,000 for CIFAR in the paper; 24,000 for ImageNet).
        lr: Adam learning rate (0.1), decayed ×0.1 at 3/8, 5/8 and 7/8 of the run.
        tv_weight: Weight of the total-variation prior (1e-4, the public code's default).
        restarts: Random starts, run batched; the lowest final distance wins.
        target_round: The attacked round.
        target_client: The attacked client (None: the first contributor).
    """

    name: ClassVar[str] = "inverting_gradients"

    def __init__(
        self,
        *,
        iterations: PositiveInt = 4000,
        lr: PositiveFloat = 0.1,
        tv_weight: NonNegativeFloat = 1e-4,
        restarts: PositiveInt = 4,
        target_round: int = 0,
        target_client: int | None = None,
    ) -> None:
        super().__init__(target_round=target_round, target_client=target_client)
        check_positive("iterations", iterations)
        check_positive("lr", lr)
        check_positive("restarts", restarts)
        if tv_weight < 0:
            raise ValueError(f"tv_weight must be non-negative, got {tv_weight}")
        self.iterations = iterations
        self.lr = lr
        self.tv_weight = tv_weight
        self.restarts = restarts

    def objective(self, target: InversionTarget, model: FunctionalModel) -> MatchingObjective:
        """Cosine distance to the (mean) gradient, plus TV."""
        return MatchingObjective(
            model, model.split(target.gradient), distance="cosine", tv_weight=self.tv_weight,
            known=known_layers(model, target.known),
        )

    def note(self, target: InversionTarget) -> str:
        """Caveat recorded with the result."""
        return self.proxy_note(target)

    def label_logits(
        self, target: InversionTarget, labels: torch.Tensor, knowledge: AttackerKnowledge
    ) -> torch.Tensor | None:
        """Initial logits when labels are optimised with the images (None: keep them fixed)."""
        return None

    def reconstruct(
        self, target: InversionTarget, model: FunctionalModel, knowledge: AttackerKnowledge
    ) -> AttackResult:
        labels, label_source = recover_labels(target, model, knowledge)
        x0 = random_inputs((self.restarts, target.num_images, *knowledge.input_shape), knowledge)
        logits0 = self.label_logits(target, labels, knowledge)
        outcome = signed_adam(
            self.objective(target, model), x0, labels,
            iterations=self.iterations, lr=self.lr, box=pixel_box(knowledge),
            desc=f"{self.name} ({self.restarts} restarts)", label_logits0=logits0,
        )
        if logits0 is not None:
            label_source += ", then optimised jointly per local batch"
        return AttackResult(
            reconstruction=outcome.x,
            labels=outcome.labels,
            extras={
                "final_loss": float(outcome.losses[outcome.best]),
                "restart_losses": outcome.losses.tolist(),
                "labels": label_source,
                "note": self.note(target),
            },
        )
