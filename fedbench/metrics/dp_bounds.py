"""Empirical lower bounds on ε from membership guesses, as small pure functions.

Two routes from an attack's guesses to a statement "the mechanism is not (ε, δ)-DP for any ε
below ε̂, at confidence 1 − α":

- **Rates** (Jagielski et al. 2020; Nasr et al. 2021): an (ε, δ)-DP mechanism forces every test
  to satisfy TPR ≤ e^ε·FPR + δ and TNR ≤ e^ε·FNR + δ, so
  ε ≥ max(ln((TPR − δ)/FPR), ln((TNR − δ)/FNR)). With counts from independent trials, a
  Clopper–Pearson lower bound on TPR and upper bound on FPR (α/2 each) make ε̂ hold with
  probability ≥ 1 − α.
- **One run** (Steinke, Nasr, Jagielski, NeurIPS 2023): m canaries, each included independently
  with probability ½; the auditor guesses r of them and gets v right. Under (ε, δ)-DP,
  P[≥ v right] ≤ P[Binomial(r, e^ε/(1+e^ε)) ≥ v] + 2mδ·max_{1≤i≤v} P[v > Binomial(r, ·) ≥ v−i]/i
  (their Theorem 3.1), so ε̂ is the largest ε whose p-value is still below α.

Example:
    >>> round(one_run_epsilon(m=1000, r=1000, v=1000, delta=0.0, confidence=0.95), 1)
    5.8
    >>> perfect = rate_epsilon(tp=100, fn=0, fp=0, tn=100, delta=0.0, confidence=0.95)
    >>> p = 0.025 ** (1 / 100)
    >>> abs(perfect - math.log(p / (1 - p))) < 1e-9
    True
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats


def _check_confidence(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return 1.0 - confidence


def _check_delta(delta: float) -> None:
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided Clopper–Pearson lower bound: P[p < bound] ≤ ``alpha``."""
    if not 0 <= successes <= trials or trials < 1:
        raise ValueError(f"need 0 <= successes <= trials, trials >= 1; got {successes}/{trials}")
    if successes == 0:
        return 0.0
    return float(stats.beta.ppf(alpha, successes, trials - successes + 1))


def clopper_pearson_upper(successes: int, trials: int, alpha: float) -> float:
    """One-sided Clopper–Pearson upper bound: P[p > bound] ≤ ``alpha``."""
    if not 0 <= successes <= trials or trials < 1:
        raise ValueError(f"need 0 <= successes <= trials, trials >= 1; got {successes}/{trials}")
    if successes == trials:
        return 1.0
    return float(stats.beta.ppf(1.0 - alpha, successes + 1, trials - successes))


def epsilon_from_rates(tpr: float, fpr: float, delta: float) -> float:
    """The ε that a test with these exact rates rules out: max of the two DP inequalities.

    Returns 0 when the rates are consistent with ε = 0, ``inf`` when FPR (or FNR) is 0 while
    TPR (or TNR) exceeds δ.
    """
    _check_delta(delta)
    for name, rate in (("tpr", tpr), ("fpr", fpr)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {rate}")

    def one_side(hit: float, miss: float) -> float:
        if hit - delta <= 0:
            return 0.0
        if miss == 0:
            return math.inf
        return max(0.0, math.log((hit - delta) / miss))

    return max(one_side(tpr, fpr), one_side(1.0 - fpr, 1.0 - tpr))


def rate_epsilon(
    *, tp: int, fn: int, fp: int, tn: int, delta: float, confidence: float = 0.95
) -> float:
    """ε lower bound at ``confidence`` from a confusion matrix of independent trials.

    TPR is bounded below and FPR above with one-sided Clopper–Pearson intervals at α/2 each;
    the second DP inequality uses TNR = 1 − FPR and FNR = 1 − TPR, so the same two intervals
    cover both and the bound holds with probability ≥ 1 − α.

    Args:
        tp, fn: Members guessed "member" / "non-member".
        fp, tn: Non-members guessed "member" / "non-member".
        delta: The δ of the DP claim being tested.
        confidence: 1 − α.
    """
    alpha = _check_confidence(confidence)
    if min(tp, fn, fp, tn) < 0 or tp + fn == 0 or fp + tn == 0:
        raise ValueError(f"need members and non-members, got tp={tp} fn={fn} fp={fp} tn={tn}")
    tpr_low = clopper_pearson_lower(tp, tp + fn, alpha / 2)
    fpr_high = clopper_pearson_upper(fp, fp + tn, alpha / 2)
    return epsilon_from_rates(tpr_low, fpr_high, delta)


def one_run_p_value(*, m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P-value of ≥ ``v`` correct out of ``r`` guesses on ``m`` canaries under (ε, δ)-DP.

    Steinke, Nasr, Jagielski (2023), Theorem 3.1: the Binomial(r, e^ε/(1+e^ε)) tail plus the δ
    term 2mδ·max_i P[v > W ≥ v − i]/i.
    """
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if epsilon < 0:
        raise ValueError(f"epsilon must be non-negative, got {epsilon}")
    _check_delta(delta)
    q = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(stats.binom.sf(v - 1, r, q))
    slack = 0.0
    if delta > 0 and v > 0:
        # P[v > W >= v - i] for i = 1..v is the running sum of pmf(v-1), pmf(v-2), ...
        below = np.cumsum(stats.binom.pmf(np.arange(v - 1, -1, -1), r, q))
        slack = float(np.max(below / np.arange(1, v + 1)))
    return min(1.0, tail + 2.0 * m * delta * slack)


def one_run_epsilon(
    *, m: int, r: int, v: int, delta: float, confidence: float = 0.95
) -> float:
    """The one-run ε lower bound: the largest ε at which ≥ ``v`` of ``r`` right is still
    rejected at level α = 1 − confidence (0 when even ε = 0 is not rejected)."""
    alpha = _check_confidence(confidence)

    def excess(eps: float) -> float:
        return one_run_p_value(m=m, r=r, v=v, epsilon=eps, delta=delta) - alpha

    if excess(0.0) >= 0:
        return 0.0
    high = 1.0
    while excess(high) < 0:  # the p-value rises to 1 as ε grows, so this ends
        high *= 2.0
    return float(optimize.brentq(excess, 0.0, high, xtol=1e-10))

