"""Robust Membership Inference Attack, RMIA (Zarifzadeh, Liu, Shokri, ICML 2024).

RMIA compares a candidate x with population samples z pairwise. With p(x|θ) the target's
probability of x's true class and p(x) its average over reference models,

    LR(x, z) = [p(x|θ) / p(x)] / [p(z|θ) / p(z)],   score(x) = Pr_z[LR(x, z) ≥ γ],

the fraction of population samples that x "dominates" by a factor γ. Dividing by p(z) calibrates
away how easy the target finds typical data, which is why RMIA stays strong with 1–4 reference
models.

- **offline** (default): reference models never train on the candidates, so p(x) is estimated
  from OUT models only and corrected towards the missing IN half with the paper's linear
  approximation p(x) ≈ ½((1 + a)·p_OUT(x) + (1 − a)). Population samples z get the same
  estimator from the models that did not train on them, so x and z are treated alike.
- **online**: reference models on halves of population ∪ candidates; p(x) and p(z) are the
  averages over all reference models (half IN, half OUT).

Scores are averaged over the queries (the example and, with ``augment``, its mirror).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from fedbench.attack import AttackerKnowledge, AttackResult
from fedbench.attacks.membership.base import MembershipAttack
from fedbench.attacks.membership.reference import Engine, references_for
from fedbench.attacks.membership.signals import (
    model_logits,
    queries,
    stacked_logits,
    true_class_probability,
)
from fedbench.fl.views import View, ViewKind
from fedbench.params import PositiveFloat, PositiveInt, UnitInterval
from fedbench.registry import register_attack
from fedbench.seeding import Streams

_TINY = 1e-300  # keeps ratios finite when a probability underflows


def marginal_probability(
    reference: np.ndarray, in_mask: np.ndarray, *, online: bool, a: float
) -> np.ndarray:
    """p(x) from reference probabilities [K, n, Q] and the IN mask [K, n].

    Online: the mean over all models. Offline: the mean over OUT models, corrected with
    ½((1 + a)·p_OUT + (1 − a)).
    """
    if online:
        return np.asarray(reference.mean(0))
    out = (~in_mask)[:, :, None].astype(np.float64)
    count = out.sum(0)
    if (count == 0).any():
        raise ValueError("rmia offline: an example has no OUT reference model")
    p_out = (reference * out).sum(0) / count
    return np.asarray(0.5 * ((1.0 + a) * p_out + (1.0 - a)))


def rmia_scores(ratio_x: np.ndarray, ratio_z: np.ndarray, gamma: float) -> np.ndarray:
    """Fraction of population samples z with ratio_x / ratio_z ≥ γ, averaged over queries.

    Args:
        ratio_x: p(x|θ)/p(x) for the candidates, [n, Q].
        ratio_z: p(z|θ)/p(z) for the population samples, [m, Q].
        gamma: The domination factor γ (> 0).
    """
    scores = np.zeros(ratio_x.shape[0])
    for q in range(ratio_x.shape[1]):
        ordered = np.sort(ratio_z[:, q])
        # ratio_x/ratio_z ≥ γ  ⇔  ratio_z ≤ ratio_x/γ
        scores += np.searchsorted(ordered, ratio_x[:, q] / gamma, side="right") / len(ordered)
    return np.asarray(scores / ratio_x.shape[1])


@register_attack("rmia")
class RMIA(MembershipAttack):
    """RMIA with reference models trained by the target's FL recipe.

    Args:
        num_models: Reference models (1–4 suffice; even when online).
        online: Train reference models on candidates too (IN and OUT) or not (offline).
        a: Offline correction p(x) ≈ ½((1 + a)·p_OUT(x) + (1 − a)), in [0, 1].
        gamma: Domination factor γ (> 0). With γ = 1 the score is the rank of x's ratio
            among the population's; larger γ counts only clear dominations, which loses
            the signal when the target is confident on nearly everything (on digits,
            γ = 2 drops the AUC from 0.75 to 0.63).
        num_population: Population samples z compared against (at most).
        augment: Also query the horizontal mirror of image candidates (see ``lira``).
        engine: Reference training engine: "auto", "vectorized" or "sequential".
        cache_dir: On-disk cache for reference models.

    Example:
        >>> from fedbench.registry import ATTACKS
        >>> ATTACKS.create("rmia", {"num_models": 1}).a
        0.3
    """

    name: ClassVar[str] = "rmia"
    views = (ViewKind.FINAL_MODEL,)

    def __init__(
        self,
        *,
        num_models: PositiveInt = 2,
        online: bool = False,
        a: UnitInterval = 0.3,
        gamma: PositiveFloat = 1.0,
        num_population: PositiveInt = 1000,
        augment: bool = False,
        engine: Engine = "auto",
        cache_dir: str | None = None,
    ) -> None:
        if online and num_models % 2:
            raise ValueError(f"rmia: num_models must be even when online, got {num_models}")
        self.num_models = num_models
        self.online = online
        self.a = a
        self.gamma = gamma
        self.num_population = num_population
        self.augment = augment
        self.engine: Engine = engine
        self.cache_dir = cache_dir

    def run(self, view: View, knowledge: AttackerKnowledge) -> AttackResult:
        candidates = self.candidates(knowledge)
        population = knowledge.population
        target = self.target_model(view, knowledge)
        n = len(candidates)
        pool = candidates.concat(population) if self.online else population
        offset = n if self.online else 0  # where the population starts in the pool
        refs = references_for(
            knowledge, pool=pool, num_models=self.num_models, paired=self.online,
            engine=self.engine, cache_dir=Path(self.cache_dir) if self.cache_dir else None,
        )
        # z: population samples that at least one reference model did not train on.
        population_mask = refs.in_mask[:, offset : offset + len(population)]
        usable = np.flatnonzero(~population_mask.all(0))
        rng = Streams(knowledge.seed).numpy("rmia_population")
        chosen = rng.permutation(usable)[: self.num_population]
        z = population.subset(chosen)
        if len(z) == 0:
            raise ValueError("rmia: no population sample is OUT for any reference model")

        x_mask = refs.in_mask[:, :n] if self.online else np.zeros((refs.num_models, n), bool)
        z_mask = population_mask[:, chosen]
        ratio = []
        for records, mask in ((candidates, x_mask), (z, z_mask)):
            asked = queries(records.x, data_kind=knowledge.data_kind, augment=self.augment)
            own = np.stack([
                true_class_probability(model_logits(target, q), records.y).numpy()
                for q in asked
            ], axis=-1)
            reference = np.stack([
                true_class_probability(
                    stacked_logits(knowledge.model_factory, refs.params, q, knowledge.device),
                    records.y,
                ).numpy()
                for q in asked
            ], axis=-1)
            marginal = marginal_probability(reference, mask, online=self.online, a=self.a)
            ratio.append(own / np.maximum(marginal, _TINY))
        scores = rmia_scores(ratio[0], ratio[1], self.gamma)
        return AttackResult(scores=scores, extras={
            "reference_engine": refs.engine, "population_samples": len(z),
        })
