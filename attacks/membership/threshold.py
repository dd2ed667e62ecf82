"""Threshold attacks on the released model's output vector: confidence and entropy.

- ``confidence`` (Salem et al., NDSS 2019): the largest softmax probability; members are
  classified more confidently. Needs no label.
- ``entropy``: Song & Mittal's modified entropy (USENIX Security 2021), which uses the label:
  Mentr = −(1 − p_y)·log p_y − Σ_{j≠y} p_j·log(1 − p_j); it is low when the true class is
  predicted confidently and high when a wrong class is. With ``modified=False`` it is the plain
  prediction entropy −Σ_j p_j·log p_j (Salem et al.; label-free). The score is the negated value.

(The true-class probability alone would rank candidates exactly as ``loss_threshold`` does.)
"""

from __future__ import annotations

from typing import ClassVar

import torch

from fedbench.attack import AttackerKnowledge, AttackResult
from fedbench.attacks.membership.base import MembershipAttack
from fedbench.attacks.membership.signals import model_logits
from fedbench.fl.views import View, ViewKind
from fedbench.registry import register_attack

_TINY = 1e-30  # keeps log(0) finite for saturated probabilities


def modified_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Song & Mittal's Mentr per example (float64), from logits [n, C] and labels [n]."""
    p = torch.softmax(logits.double(), dim=-1)
    p_true = p.gather(1, y[:, None]).squeeze(1)
    others = -p * torch.log(torch.clamp(1 - p, min=_TINY))
    others = others.scatter(1, y[:, None], 0.0).sum(1)
    return -(1 - p_true) * torch.log(torch.clamp(p_true, min=_TINY)) + others


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of the softmax output per example (float64)."""
    log_p = torch.log_softmax(logits.double(), dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


@register_attack("confidence")
class ConfidenceThreshold(MembershipAttack):
    """Score = the largest softmax probability of the candidate (Salem et al. 2019)."""

    name: ClassVar[str] = "confidence"
    views = (ViewKind.FINAL_MODEL,)

    def run(self, view: View, knowledge: AttackerKnowledge) -> AttackResult:
        candidates = self.candidates(knowledge)
        logits = model_logits(self.target_model(view, knowledge), candidates.x)
        # log max-probability = max logit − logsumexp: exact where the probability rounds to 1.
        scores = logits.double().max(-1).values - torch.logsumexp(logits.double(), -1)
        return AttackResult(scores=scores.numpy())


@register_attack("entropy")
class EntropyThreshold(MembershipAttack):
    """Score = −(modified) entropy of the candidate's output (Song & Mittal 2021).

    Args:
        modified: Use the label-aware modified entropy (True) or the plain prediction entropy.

    Example:
        >>> from fedbench.registry import ATTACKS
        >>> ATTACKS.create("entropy", {"modified": False}).modified
        False
    """

    name: ClassVar[str] = "entropy"
    views = (ViewKind.FINAL_MODEL,)

    def __init__(self, *, modified: bool = True) -> None:
        self.modified = modified

    def run(self, view: View, knowledge: AttackerKnowledge) -> AttackResult:
        candidates = self.candidates(knowledge)
        logits = model_logits(self.target_model(view, knowledge), candidates.x)
        value = (
            modified_entropy(logits, candidates.y) if self.modified
            else prediction_entropy(logits)
        )
        return AttackResult(scores=(-value).numpy())
