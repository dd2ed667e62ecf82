"""Multi-step FedAvg inversion (Geiping et al. 2020, §6; breaching's multi-step attack).

A FedAvg update is not one gradient: the client took several SGD steps, each on its own batch.
The client's lr, batch size and number of steps are public configuration, so the attack
simulates exactly those steps on the dummy images inside the objective (a differentiable
unrolled training loop, ``torch.func`` all the way) and matches the simulated update to the
received one with the cosine distance + TV of Inverting Gradients. On the aggregate each of the
n clients is simulated on its own share of the dummy images and the updates are averaged. For
FedSGD views the simulation is one step and the attack equals Inverting Gradients.

The client's private shuffling is unknown: the simulation visits the dummy images in a fixed
order, which is without loss of generality in the first epoch.

Example:
    >>> attack = FedAvgInversion(iterations=200, restarts=2)
    >>> attack.name, attack.tv_weight
    ('fedavg_inversion', 0.0001)
"""

from __future__ import annotations

from typing import ClassVar

import torch

from fedbench.attack import AttackerKnowledge
from fedbench.attacks.gradient_inversion.base import standard_normal
from fedbench.attacks.gradient_inversion.inverting import InvertingGradients
from fedbench.attacks.gradient_inversion.objective import (
    FunctionalModel,
    LocalSteps,
    MatchingObjective,
    known_layers,
)
from fedbench.attacks.gradient_inversion.views import InversionTarget
from fedbench.registry import register_attack


def local_steps(target: InversionTarget) -> LocalSteps:
    """The public local-training schedule behind ``target``."""
    return LocalSteps(
        schedule=tuple(target.schedule()),
        lr=target.lr,
        momentum=target.momentum,
        clients=target.num_clients,
    )


@register_attack("fedavg_inversion")
class FedAvgInversion(InvertingGradients):
    """Inverting Gradients against a FedAvg update, simulating the client's local steps.

    Args:
        iterations: Optimisation steps (4,000).
        lr: Adam learning rate (0.1), ×0.1 at 3/8, 5/8 and 7/8.
        tv_weight: Total-variation weight (1e-4).
        restarts: Random starts, run batched.
        target_round: The attacked round.
        target_client: The attacked client (None: the first contributor).
    """

    name: ClassVar[str] = "fedavg_inversion"

    def objective(self, target: InversionTarget, model: FunctionalModel) -> MatchingObjective:
        return MatchingObjective(
            model, model.split(target.update), distance="cosine", tv_weight=self.tv_weight,
            steps=local_steps(target), known=known_layers(model, target.known),
        )

    def label_logits(
        self, target: InversionTarget, labels: torch.Tensor, knowledge: AttackerKnowledge
    ) -> torch.Tensor | None:
        """Soft labels around the recovered counts when several local batches exist.

        Label recovery finds how often each class occurs, not which local batch held it, and
        the simulated steps depend on that. Every image starts from the class frequencies (plus
        noise that differs between restarts) and the optimisation assigns the labels.
        """
        if target.steps == 1 or target.images_per_client <= target.batch_size:
            return None
        counts = torch.bincount(labels.cpu(), minlength=knowledge.num_classes).float()
        prior = torch.log(counts / counts.sum() + 1e-3)
        shape = (self.restarts, target.num_images, knowledge.num_classes)
        return prior.to(knowledge.device) + 0.5 * standard_normal(shape, knowledge, stream=1)

    def note(self, target: InversionTarget) -> str:
        return (
            f"simulated {target.steps} local step(s) per client on {target.num_clients} client(s)"
        )
