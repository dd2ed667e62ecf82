"""Empirical DP auditing: lower bounds on ε from membership guesses.

A DP claim (ε, δ) caps how well *any* test can tell members from non-members, so an attack that
does better than the cap proves the claim false: its success gives an ε̂ with
"the mechanism is not (ε, δ)-DP for any ε < ε̂" at 95% confidence. An audited ε̂ above the
claimed ε therefore means a bug in the mechanism or its accountant; ε̂ far below ε is expected
(the attack is not optimal, and few samples give loose bounds).

Two audits, on the scores of any membership attack (maths in :mod:`fedbench.metrics.dp_bounds`):

- :func:`one_run_audit` (Steinke, Nasr, Jagielski 2023): the auditor guesses "in" for the
  k₊ highest and "out" for the k₋ lowest scores and abstains on the rest; the count of correct
  guesses bounds ε through a binomial tail. Valid when each candidate's inclusion was an
  independent fair coin, which the auditor arranges by inserting canaries (records or clients)
  with probability ½. A few (k₊, k₋) are tried, with a Bonferroni correction.
- :func:`threshold_audit` (Jagielski et al. 2020): a threshold chosen on a random half of the
  candidates, Clopper–Pearson bounds on TPR and FPR on the other half.

The ``audit`` attack runs a membership attack in the harness and reports its metrics plus both
bounds, ``epsilon_lower_bound`` (one run) and ``epsilon_lower_bound_threshold``, so tables show
the defense's claimed ε next to the audited ε̂.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fedbench.attack import Attack, AttackerKnowledge, AttackResult, GroundTruth
from fedbench.errors import ConfigError
from fedbench.fl.views import View
from fedbench.metrics.base import Metric
from fedbench.metrics.dp_bounds import one_run_epsilon, rate_epsilon
from fedbench.params import HalfOpenFraction, OpenUnitInterval
from fedbench.registry import ATTACKS, register_attack
from fedbench.seeding import Streams

# Fractions of the candidates guessed on (half "in" from the top, half "out" from the bottom).
GUESS_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


@dataclass(frozen=True)
class OneRunAudit:
    """The best one-run bound over the guess counts tried.

    Attributes:
        epsilon: ε̂ (with the Bonferroni-corrected confidence).
        canaries: m, the number of candidates.
        guesses: r, the guesses made at the best setting.
        correct: v, how many of them were right.
        confidence: The overall confidence.
    """

    epsilon: float
    canaries: int
    guesses: int
    correct: int
    confidence: float


@dataclass(frozen=True)
class ThresholdAudit:
    """A Clopper–Pearson bound at one threshold.

    Attributes:
        epsilon: ε̂.
        threshold: Scores ≥ threshold are guessed "member".
        tp, fn, fp, tn: Counts on the evaluation half.
    """

    epsilon: float
    threshold: float
    tp: int
    fn: int
    fp: int
    tn: int


def _check(scores: np.ndarray, included: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    included = np.asarray(included).astype(bool)
    if scores.ndim != 1 or scores.shape != included.shape:
        raise ValueError(f"scores {scores.shape} and inclusion {included.shape} must be 1-D, "
                         "equal length")
    if not np.isfinite(scores).all():
        raise ValueError("audit: scores contain NaN or Inf")
    if included.all() or not included.any():
        raise ValueError("audit: need both included and excluded canaries")
    return scores, included


def one_run_audit(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    delta: float,
    confidence: float = 0.95,
    fractions: tuple[float, ...] = GUESS_FRACTIONS,
) -> OneRunAudit:
    """Steinke et al.'s one-run ε lower bound from canary scores.

    Args:
        scores: One score per canary, higher = "included".
        included: Whether each canary was included (each by an independent fair coin).
        delta: δ of the claim under test.
        confidence: Overall confidence; each of the ``fractions`` tried gets
            1 − (1 − confidence)/len(fractions) (Bonferroni).
        fractions: Fractions of the canaries to guess on.

    Example:
        >>> result = one_run_audit(np.arange(1000.0), np.arange(1000) >= 500, delta=0.0)
        >>> round(result.epsilon, 1), result.guesses
        (5.3, 1000)
    """
    scores, included = _check(scores, included)
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"fractions must be in (0, 1], got {fractions}")
    m = len(scores)
    each = 1.0 - (1.0 - confidence) / len(fractions)
    order = np.argsort(-scores, kind="stable")
    tried = []
    for fraction in fractions:
        half = max(1, int(fraction * m) // 2)
        top, bottom = order[:half], order[m - half:]
        correct = int(included[top].sum() + (~included[bottom]).sum())
        epsilon = one_run_epsilon(m=m, r=2 * half, v=correct, delta=delta, confidence=each)
        tried.append(OneRunAudit(epsilon, m, 2 * half, correct, confidence))
    # The largest bound; among equal bounds (e.g. all 0) the most accurate guesses.
    return max(tried, key=lambda a: (a.epsilon, a.correct / a.guesses))


def threshold_audit(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    delta: float,
    confidence: float = 0.95,
    seed: int = 0,
    max_thresholds: int = 200,
) -> ThresholdAudit:
    """ε lower bound from TPR/FPR at a threshold chosen on a held-out half.

    The threshold maximising the Clopper–Pearson bound on a random half of the candidates is
    applied to the other half, whose counts alone give the reported bound, so choosing the
    threshold costs no confidence.

    Args:
        scores: One score per candidate, higher = "member".
        included: Membership of each candidate.
        delta: δ of the claim under test.
        confidence: Confidence of the bound.
        seed: Seed of the random split.
        max_thresholds: At most this many candidate thresholds (score quantiles) are tried.
    """
    scores, included = _check(scores, included)
    rng = Streams(seed).numpy("threshold_audit")
    order = rng.permutation(len(scores))
    pick, judge = order[: len(order) // 2], order[len(order) // 2 :]

    def bound(where: np.ndarray, threshold: float) -> tuple[float, int, int, int, int]:
        guess, truth = scores[where] >= threshold, included[where]
        tp, fn = int((guess & truth).sum()), int((~guess & truth).sum())
        fp, tn = int((guess & ~truth).sum()), int((~guess & ~truth).sum())
        if tp + fn == 0 or fp + tn == 0:
            return 0.0, tp, fn, fp, tn
        eps = rate_epsilon(tp=tp, fn=fn, fp=fp, tn=tn, delta=delta, confidence=confidence)
        return eps, tp, fn, fp, tn

    candidates = np.unique(np.quantile(scores[pick], np.linspace(0, 1, max_thresholds)))
    threshold = max(candidates, key=lambda t: bound(pick, float(t))[0])
    eps, tp, fn, fp, tn = bound(judge, float(threshold))
    return ThresholdAudit(eps, float(threshold), tp, fn, fp, tn)


@register_attack("audit")
class Audit(Attack):
    """Run a membership attack and turn its success into empirical ε lower bounds.

    The one-run bound assumes each candidate's membership was an independent fair coin. That
    holds exactly when the experiment sets ``canaries`` (the harness keeps each canary in
    training with probability ½ before training starts); otherwise the candidates are members
    and as many test non-members, which holds only approximately (fixed member count, class
    balance), and the note says so.

    Args:
        attack: The registered membership attack whose scores are audited.
        attack_params: That attack's parameters.
        delta: δ of the DP claim being audited (the harness reports ε at the experiment's δ).
        confidence: Confidence of the bounds.

    Example:
        >>> from fedbench.registry import ATTACKS
        >>> audit = ATTACKS.create("audit", {"attack": "lira", "attack_params": {"num_models": 4}})
        >>> [v.value for v in audit.views]
        ['final_model']
    """

    guesses_membership: ClassVar[bool] = True

    def __init__(
        self,
        *,
        attack: str = "loss_threshold",
        attack_params: dict[str, Any] | None = None,
        delta: HalfOpenFraction = 1e-5,
        confidence: OpenUnitInterval = 0.95,
    ) -> None:
        if attack == "audit":
            raise ConfigError("audit: 'attack' must be a membership attack, not audit itself")
        if not 0 <= delta < 1:
            raise ConfigError(f"audit: delta must be in [0, 1), got {delta}")
        if not 0 < confidence < 1:
            raise ConfigError(f"audit: confidence must be in (0, 1), got {confidence}")
        self.inner: Attack = ATTACKS.create(attack, attack_params or {})
        self.attack = attack
        self.delta = delta
        self.confidence = confidence
        self.views = self.inner.views  # the wrapped attack's views
        self.target = self.inner.target

    def run(self, view: View, knowledge: AttackerKnowledge) -> AttackResult:
        result = self.inner.run(view, knowledge)
        if result.scores is None:
            raise ValueError(f"audit: attack '{self.attack}' produced no membership scores")
        result.extras["audit_seed"] = knowledge.seed
        return result

    def score(self, result: AttackResult, truth: GroundTruth) -> list[Metric]:
        if result.scores is None or truth.membership is None:
            raise ValueError("audit: scoring needs scores and membership labels")
        one_run = one_run_audit(result.scores, truth.membership, delta=self.delta,
                                confidence=self.confidence)
        rates = threshold_audit(result.scores, truth.membership, delta=self.delta,
                                confidence=self.confidence,
                                seed=int(result.extras.get("audit_seed", 0)))
        level = f"δ={self.delta:g}, {self.confidence:.0%} confidence, attack={self.attack}"
        return [
            *self.inner.score(result, truth),  # the success the bounds are computed from
            Metric("epsilon_lower_bound", one_run.epsilon, False, kind="privacy",
                   note=f"one-run audit (Steinke et al. 2023): {one_run.correct}/"
                        f"{one_run.guesses} guesses right on {one_run.canaries} candidates; "
                        f"{level}; " + (
                            "canaries kept in training by independent fair coins"
                            if truth.canaries
                            else "approximate: member/test split treated as fair coins"
                        )),
            Metric("epsilon_lower_bound_threshold", rates.epsilon, False, kind="privacy",
                   note=f"Clopper–Pearson TPR/FPR on a held-out half (tp={rates.tp}, "
                        f"fn={rates.fn}, fp={rates.fp}, tn={rates.tn}); {level}"),
            Metric("audit_guesses", one_run.guesses, None, kind="info"),
            Metric("audit_correct", one_run.correct, None, kind="info"),
        ]

    def figures(
        self, result: AttackResult, truth: GroundTruth, folder: Path, *, caption: str = ""
    ) -> list[Path]:
        return self.inner.figures(result, truth, folder, caption=caption)
