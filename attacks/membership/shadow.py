"""Shadow-model attack (Shokri et al., IEEE S&P 2017).

The attacker trains shadow models on population data the way the target was trained (here: the
target's FL recipe, :mod:`.reference`), labels each shadow model's outputs on its own training
half "in" and on the other half "out", and fits one attack classifier on them; its member
probability for the target model's outputs on a candidate is the score. The classifier is a
scikit-learn multi-layer perceptron on standardised features with early stopping: shadow models
memorise less than the target when the population is small, and an unregularised classifier
(boosted trees, say) then learns the shadows' noise instead of a rule that transfers.

Features per example: the softmax vector sorted in decreasing order (label-free shape of the
prediction, as in Shokri et al.), plus the true class's log-probability and logit-scaled
confidence (the label-aware signal that Shokri et al. obtain with one attack model per class).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fedbench.attack import AttackerKnowledge, AttackResult
from fedbench.attacks.membership.base import MembershipAttack
from fedbench.attacks.membership.reference import Engine, references_for
from fedbench.attacks.membership.signals import logit_confidence, model_logits, stacked_logits
from fedbench.fl.views import View, ViewKind
from fedbench.params import PositiveInt
from fedbench.registry import register_attack
from fedbench.seeding import Streams


def shadow_features(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Attack-classifier features from logits [..., n, C] and labels [n]: [..., n, C + 2]."""
    log_p = torch.log_softmax(logits.double(), dim=-1)
    ordered = log_p.exp().sort(dim=-1, descending=True).values
    index = y.expand(*logits.shape[:-1]).unsqueeze(-1)
    true_log_p = log_p.gather(-1, index)
    phi = logit_confidence(logits.double(), y).unsqueeze(-1)
    return torch.cat([ordered, true_log_p, phi], dim=-1).numpy()


@register_attack("shadow")
class ShadowModels(MembershipAttack):
    """Shokri et al.'s shadow-model attack with a scikit-learn attack classifier.

    Args:
        num_models: Shadow models (even: pairs trained on complementary population halves, so
            the attack classifier sees as many "in" as "out" examples).
        hidden: Width of the attack classifier's hidden layer.
        engine: Shadow training engine: "auto", "vectorized" or "sequential".
        cache_dir: On-disk cache for shadow models.

    Example:
        >>> from fedbench.registry import ATTACKS
        >>> ATTACKS.create("shadow").num_models
        4
    """

    name: ClassVar[str] = "shadow"
    views = (ViewKind.FINAL_MODEL,)

    def __init__(
        self,
        *,
        num_models: PositiveInt = 4,
        hidden: PositiveInt = 64,
        engine: Engine = "auto",
        cache_dir: str | None = None,
    ) -> None:
        if num_models < 2 or num_models % 2:
            raise ValueError(f"shadow: num_models must be even and >= 2, got {num_models}")
        if hidden < 1:
            raise ValueError(f"shadow: hidden must be positive, got {hidden}")
        self.num_models = num_models
        self.hidden = hidden
        self.engine: Engine = engine
        self.cache_dir = cache_dir

    def run(self, view: View, knowledge: AttackerKnowledge) -> AttackResult:
        candidates = self.candidates(knowledge)
        target = self.target_model(view, knowledge)
        population = knowledge.population
        shadows = references_for(
            knowledge, pool=population, num_models=self.num_models, paired=True,
            engine=self.engine, cache_dir=Path(self.cache_dir) if self.cache_dir else None,
        )
        logits = stacked_logits(knowledge.model_factory, shadows.params, population.x,
                                knowledge.device)
        features = shadow_features(logits, population.y)  # [K, n, F]
        inputs = features.reshape(-1, features.shape[-1])
        labels = shadows.in_mask.reshape(-1).astype(int)
        classifier = make_pipeline(StandardScaler(), MLPClassifier(
            hidden_layer_sizes=(self.hidden,), early_stopping=True, max_iter=500,
            random_state=int(Streams(knowledge.seed).integer_seed("shadow") % 2**32),
        ))
        classifier.fit(inputs, labels)
        target_features = shadow_features(model_logits(target, candidates.x), candidates.y)
        scores = classifier.predict_proba(target_features)[:, 1]
        train_accuracy = float(classifier.score(inputs, labels))
        return AttackResult(scores=scores, extras={
            "reference_engine": shadows.engine, "attack_train_accuracy": train_accuracy,
        })
