"""Loss-threshold membership inference (Yeom et al., CSF 2018).

Members tend to have lower loss under the trained model: the score is the negative
cross-entropy loss of a candidate. AUC and TPR@FPR sweep all thresholds; the attacker needs only
the released model.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.nn import functional as F

from fedbench.attack import AttackerKnowledge, AttackResult
from fedbench.attacks.membership.base import MembershipAttack
from fedbench.fl.views import View, ViewKind
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
class LossThreshold(MembershipAttack):
    """Score = −loss of the candidate under the released model (Yeom et al. 2018).

    Example:
        >>> from fedbench.registry import ATTACKS
        >>> ATTACKS.create("loss_threshold").views
        (<ViewKind.FINAL_MODEL: 'final_model'>,)
    """

    name: ClassVar[str] = "loss_threshold"
    views = (ViewKind.FINAL_MODEL,)

    def run(self, view: View, knowledge: AttackerKnowledge) -> AttackResult:
        candidates = self.candidates(knowledge)
        model = self.target_model(view, knowledge)
        losses = per_example_loss(model, candidates.x, candidates.y)
        return AttackResult(scores=(-losses).numpy())
