"""Loss-threshold membership inference (Yeom et al., CSF 2018).

Members tend to have lower loss under the trained model: the score is the negative
cross-entropy loss of a candidate. AUC and TPR@FPR sweep all thresholds; the attacker needs only
the released model.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from fedbench.attacks.base import Attack, AttackerKnowledge, AttackResult, GroundTruth
from torch.nn import functional as F

from fedbench.fl.params import set_flat
from fedbench.fl.transcript import FinalModelView, View, ViewKind
from fedbench.metrics.base import Metric
from fedbench.metrics.mia import membership_metrics
from fedbench.registry import register_attack


@torch.no_grad()
def per_example_loss(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024
) -> torch.Tensor:
    """Cross-entropy loss of every example (no reduction), on the model's device."""
    device = next(model.parameters()).device
    model.eval()
    parts = [
        F.cross_entropy(
            model(x[i : i + batch_size].to(device)), y[i : i + batch_size].to(device),
            reduction="none",
        ).cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(parts)


@register_attack("loss_threshold")
class LossThreshold(Attack):
    """Score = −loss of the candidate under the released model (Yeom et al. 2018)."""

    views: ClassVar[tuple[ViewKind, ...]] = (ViewKind.FINAL_MODEL,)

    def run(self, view: View, knowledge: AttackerKnowledge) -> AttackResult:
        if not isinstance(view, FinalModelView):
            raise TypeError(f"loss_threshold needs the final_model view, got {view.kind}")
        if knowledge.candidates is None:
            raise ValueError("loss_threshold needs candidate records to score")
        model = knowledge.model_factory().to(knowledge.device)
        set_flat(model, view.params)
        losses = per_example_loss(model, knowledge.candidates.x, knowledge.candidates.y)
        return AttackResult(scores=(-losses).numpy())

    def score(self, result: AttackResult, truth: GroundTruth) -> list[Metric]:
        if result.scores is None or truth.membership is None:
            raise ValueError("loss_threshold: scoring needs scores and membership labels")
        return membership_metrics(result.scores, truth.membership)
