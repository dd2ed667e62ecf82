"""The Likelihood Ratio Attack, LiRA (Carlini et al., IEEE S&P 2022).

For each candidate, reference models trained with (IN) and without (OUT) it give samples of the
logit-scaled true-class confidence φ = log(p_y/(1 − p_y)); LiRA fits a Gaussian to each and asks
how much likelier the target model's φ is under IN than under OUT.

- **online**: reference models on random halves of population ∪ candidates (each candidate IN
  for half of them); score = Σ_q [log N(φ_q; μ_in, σ_in²) − log N(φ_q; μ_out, σ_out²)] over the
  queries q (the example and, with ``augment``, its mirror).
- **offline**: reference models on population halves only (every candidate OUT); one-sided
  test, score = Σ_q log Φ((φ_q − μ_out)/σ_out).
- **fixed variance**: one pooled σ per side instead of per-example σ — better with few reference
  models (the paper recommends it below 64).

Reference models are trained with the target's FL recipe (:mod:`.reference`).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
from scipy import stats

from fedbench.attack import AttackerKnowledge, AttackResult
from fedbench.attacks.membership.base import MembershipAttack
from fedbench.attacks.membership.reference import Engine, references_for
from fedbench.attacks.membership.signals import (
    logit_confidence,
    model_logits,
    queries,
    stacked_logits,
)
from fedbench.fl.views import View, ViewKind
from fedbench.params import PositiveInt
from fedbench.registry import register_attack

_MIN_STD = 1e-3  # φ is in logits; a spread below this is numerical, not statistical


def gaussian_fit(
    samples: np.ndarray, mask: np.ndarray, *, fixed_variance: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example mean and std of ``samples`` [K, n, Q] over the models where ``mask`` [K, n].

    The std is per example (ddof 1) or, with ``fixed_variance`` or fewer than two samples,
    the pooled within-example std of all examples. Examples without any sample get NaN means.
    """
    weight = mask[:, :, None].astype(np.float64)
    count = weight.sum(0)  # [n, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (samples * weight).sum(0) / count
        squares = ((samples - np.nan_to_num(mean)) ** 2 * weight).sum(0)  # [n, Q]
        dof = count - 1
        pooled = np.sqrt(squares.sum(0) / max(float(dof[dof > 0].sum()), 1.0))  # [Q]
        own = np.sqrt(squares / dof)
    std = np.where(fixed_variance | (dof < 1), pooled[None, :], own)
    return mean, np.maximum(std, _MIN_STD)


def lira_scores(
    target: np.ndarray,
    reference: np.ndarray,
    in_mask: np.ndarray,
    *,
    online: bool,
    fixed_variance: bool,
) -> np.ndarray:
    """LiRA membership scores.

    Args:
        target: φ of the target model, [n, Q] (Q queries per example).
        reference: φ of the K reference models, [K, n, Q].
        in_mask: [K, n]; True where the reference model trained on the example.
        online: Use the IN models too (two-sided likelihood ratio) or only OUT (one-sided).
        fixed_variance: Pooled σ instead of per-example σ.

    Returns:
        [n] scores, higher = more likely a member.
    """
    out_mean, out_std = gaussian_fit(reference, ~in_mask, fixed_variance=fixed_variance)
    if np.isnan(out_mean).any():
        raise ValueError("lira: some candidates have no OUT reference model; train more models")
    if not online:
        return np.asarray(stats.norm.logcdf(target, out_mean, out_std).sum(-1))
    in_mean, in_std = gaussian_fit(reference, in_mask, fixed_variance=fixed_variance)
    missing = np.isnan(in_mean)
    if missing.all():
        raise ValueError("lira online: no candidate is IN for any reference model")
    if missing.any():
        # An example no model trained on (trimmed off every client shard): shift its OUT mean
        # by the average IN−OUT gap of the others.
        gap = np.nanmean(in_mean - out_mean, axis=0)
        in_mean = np.where(missing, out_mean + gap, in_mean)
    log_in = stats.norm.logpdf(target, in_mean, in_std)
    log_out = stats.norm.logpdf(target, out_mean, out_std)
    return np.asarray((log_in - log_out).sum(-1))


@register_attack("lira")
class LiRA(MembershipAttack):
    """Likelihood Ratio Attack with reference models trained by the target's FL recipe.

    Args:
        num_models: Reference models K (even when online: half IN, half OUT per candidate).
        online: Online (IN and OUT models) or offline (OUT only, cheaper to reuse).
        fixed_variance: One pooled σ per side (recommended for K ≤ 64).
        augment: Also query the horizontal mirror of image candidates (one Gaussian per
            query). Off by default: FL clients here train without augmentation, so the
            mirror is an unfamiliar input that dilutes the signal (on digits it lowers the
            AUC); turn it on for targets trained with flips.
        engine: Reference training engine: "auto", "vectorized" or "sequential".
        cache_dir: On-disk cache for reference models (shared by the cells of a suite).

    Example:
        >>> from fedbench.registry import ATTACKS
        >>> ATTACKS.create("lira", {"num_models": 8, "online": False}).num_models
        8
    """

    name: ClassVar[str] = "lira"
    views = (ViewKind.FINAL_MODEL,)

    def __init__(
        self,
        *,
        num_models: PositiveInt = 16,
        online: bool = True,
        fixed_variance: bool = True,
        augment: bool = False,
        engine: Engine = "auto",
        cache_dir: str | None = None,
    ) -> None:
        if num_models < (2 if online else 1):
            raise ValueError(f"lira: num_models must be at least 2 online, 1 offline; got "
                             f"{num_models}")
        if online and num_models % 2:
            raise ValueError(f"lira: online needs an even num_models (half IN), got {num_models}")
        self.num_models = num_models
        self.online = online
        self.fixed_variance = fixed_variance
        self.augment = augment
        self.engine: Engine = engine
        self.cache_dir = cache_dir

    def run(self, view: View, knowledge: AttackerKnowledge) -> AttackResult:
        candidates = self.candidates(knowledge)
        target = self.target_model(view, knowledge)
        pool = candidates.concat(knowledge.population) if self.online else knowledge.population
        refs = references_for(
            knowledge, pool=pool, num_models=self.num_models, paired=self.online,
            engine=self.engine, cache_dir=Path(self.cache_dir) if self.cache_dir else None,
        )
        asked = queries(candidates.x, data_kind=knowledge.data_kind, augment=self.augment)
        y = candidates.y
        target_phi = np.stack(
            [logit_confidence(model_logits(target, q), y).numpy() for q in asked], axis=-1
        )
        reference_phi = np.stack([
            logit_confidence(
                stacked_logits(knowledge.model_factory, refs.params, q, knowledge.device), y
            ).numpy()
            for q in asked
        ], axis=-1)
        n = len(candidates)
        in_mask = refs.in_mask[:, :n] if self.online else np.zeros((refs.num_models, n), bool)
        scores = lira_scores(target_phi, reference_phi, in_mask, online=self.online,
                             fixed_variance=self.fixed_variance)
        return AttackResult(scores=scores, extras={
            "reference_engine": refs.engine, "reference_seconds": refs.seconds,
            "queries": len(asked),
        })
