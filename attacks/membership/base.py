"""What every membership-inference attack shares: scoring, ROC figures, the target model.

An attack's ``run`` returns one score per candidate (higher = "member"); ``score`` turns the
scores into the standard metrics of :mod:`fedbench.metrics.mia` and ``figures`` draws the ROC
curve on log-log axes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar

from sklearn.metrics import roc_auc_score
from torch import nn

from fedbench.attack import Attack, AttackerKnowledge, AttackResult, GroundTruth
from fedbench.data.tensors import TensorData
from fedbench.fl.params import set_flat
from fedbench.fl.views import FinalModelView, View
from fedbench.metrics.base import Metric
from fedbench.metrics.mia import membership_metrics, plot_roc, roc, tpr_at_fpr


class MembershipAttack(Attack):
    """Base of membership-inference attacks: metrics and an ROC figure from the scores.

    Attributes:
        name: Registry name (used in errors and figure file names).
    """

    name: ClassVar[str] = "membership"
    guesses_membership: ClassVar[bool] = True

    def settings(self) -> dict[str, Any]:
        """The attack's constructor settings (for figure names and result extras)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def candidates(self, knowledge: AttackerKnowledge) -> TensorData:
        """The candidate records, or a clear error when the harness gave none."""
        if knowledge.candidates is None or len(knowledge.candidates) == 0:
            raise ValueError(f"{self.name}: needs candidate records to score")
        return knowledge.candidates

    def target_model(self, view: View, knowledge: AttackerKnowledge) -> nn.Module:
        """The released model w_T of a ``final_model`` view, on the attack's device."""
        if not isinstance(view, FinalModelView):
            raise TypeError(f"{self.name} needs the final_model view, got {view.kind}")
        model = knowledge.model_factory().to(knowledge.device)
        set_flat(model, view.params)
        return model.eval()

    def score(self, result: AttackResult, truth: GroundTruth) -> list[Metric]:
        if result.scores is None or truth.membership is None:
            raise ValueError(f"{self.name}: scoring needs scores and membership labels")
        return membership_metrics(result.scores, truth.membership)

    def figures(
        self, result: AttackResult, truth: GroundTruth, folder: Path, *, caption: str = ""
    ) -> list[Path]:
        if result.scores is None or truth.membership is None:
            return []
        settings = repr(sorted(self.settings().items())).encode()
        tag = hashlib.sha256(settings).hexdigest()[:8]
        path = Path(folder) / f"roc_{self.name}_{tag}.png"
        curve = roc(result.scores, truth.membership)
        auc = roc_auc_score(truth.membership, result.scores)
        tpr = tpr_at_fpr(result.scores, truth.membership, 0.01)
        headline = f"{self.name}: AUC {auc:.3f}, TPR@1%FPR " + (
            "not measurable" if tpr is None else f"{tpr:.3f}"
        )
        title = "\n".join(p for p in (caption, headline) if p)
        return [plot_roc({self.name: curve}, path, title=title)]
