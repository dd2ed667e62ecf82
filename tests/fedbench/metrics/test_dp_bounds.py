"""ε lower bounds: closed forms, the binomial definitions, and coverage under a known ε."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedbench.metrics.dp_bounds import (
    clopper_pearson_lower,
    clopper_pearson_upper,
    epsilon_from_rates,
    one_run_epsilon,
    one_run_p_value,
    rate_epsilon,
)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (37, 200), (199, 200)])
def test_clopper_pearson_bounds_solve_the_binomial_tails(k: int, n: int) -> None:
    alpha = 0.025
    low, high = clopper_pearson_lower(k, n, alpha), clopper_pearson_upper(k, n, alpha)
    assert 0 <= low <= k / n <= high <= 1
    # By definition: at p = low, seeing >= k successes has probability alpha (k > 0);
    # at p = high, seeing <= k has probability alpha (k < n).
    if k > 0:
        assert stats.binom.sf(k - 1, n, low) == pytest.approx(alpha, rel=1e-6)
    else:
        assert low == 0
    if k < n:
        assert stats.binom.cdf(k, n, high) == pytest.approx(alpha, rel=1e-6)
    else:
        assert high == 1


@pytest.mark.parametrize("m", [10, 100, 1000])
@pytest.mark.parametrize("delta", [0.0, 1e-5])
def test_perfect_separation_gives_the_closed_form(m: int, delta: float) -> None:
    # m members all above the threshold, m non-members all below: TPR >= (α/2)^(1/m) and
    # FPR <= 1 − (α/2)^(1/m) at 95%, so ε̂ = ln((p − δ)/(1 − p)).
    p = 0.025 ** (1 / m)
    expected = math.log((p - delta) / (1 - p))
    assert rate_epsilon(tp=m, fn=0, fp=0, tn=m, delta=delta, confidence=0.95) == pytest.approx(
        expected, rel=1e-9
    )


@pytest.mark.parametrize("m", [10, 100, 1000])
def test_one_run_perfect_attacker_gives_the_closed_form(m: int) -> None:
    # r = v = m guesses all right: P[Binomial(m, q) >= m] = q^m = β, so q = β^(1/m).
    q = 0.05 ** (1 / m)
    assert one_run_epsilon(m=m, r=m, v=m, delta=0.0, confidence=0.95) == pytest.approx(
        math.log(q / (1 - q)), rel=1e-7
    )


def test_one_run_ceiling_with_1000_canaries_matches_steinke_et_al() -> None:
    # "With 1,000 canaries even a perfect attacker certifies only ε ≈ 5.8" (ANCHORS.md).
    assert one_run_epsilon(m=1000, r=1000, v=1000, delta=0.0) == pytest.approx(5.8, abs=0.05)


def test_one_run_p_value_without_delta_is_the_binomial_tail() -> None:
    q = 1 / (1 + math.exp(-1.5))
    assert one_run_p_value(m=500, r=200, v=150, epsilon=1.5, delta=0.0) == pytest.approx(
        stats.binom.sf(149, 200, q), rel=1e-12
    )


def test_one_run_delta_term_follows_the_theorem() -> None:
    # 2mδ · max_i P[v > W >= v − i] / i, written out with a loop here.
    m, r, v, eps, delta = 300, 100, 80, 1.0, 1e-4
    q = 1 / (1 + math.exp(-eps))
    slack = max(sum(stats.binom.pmf(v - j, r, q) for j in range(1, i + 1)) / i
                for i in range(1, v + 1))
    expected = stats.binom.sf(v - 1, r, q) + 2 * m * delta * slack
    assert one_run_p_value(m=m, r=r, v=v, epsilon=eps, delta=delta) == pytest.approx(expected)


def test_one_run_bound_orders() -> None:
    base = one_run_epsilon(m=1000, r=200, v=170, delta=0.0)
    assert one_run_epsilon(m=1000, r=200, v=190, delta=0.0) > base > 0
    assert one_run_epsilon(m=1000, r=200, v=170, delta=1e-3) < base
    assert one_run_epsilon(m=1000, r=200, v=170, delta=0.0, confidence=0.99) < base
    assert one_run_epsilon(m=1000, r=200, v=100, delta=0.0) == 0.0  # chance level


def test_epsilon_from_rates_edges() -> None:
    assert epsilon_from_rates(0.3, 0.3, 0.0) == 0.0
    assert epsilon_from_rates(0.5, 0.0, 0.0) == math.inf
    assert epsilon_from_rates(0.9, 0.5, 0.0) == pytest.approx(math.log(0.5 / 0.1))  # TNR side
    assert epsilon_from_rates(0.5, 0.0, 0.6) == 0.0  # δ above TPR: nothing ruled out
    assert epsilon_from_rates(0.8, 0.1, 0.0) == pytest.approx(max(math.log(8), math.log(4.5)))
    with pytest.raises(ValueError, match="tpr"):
        epsilon_from_rates(1.5, 0.1, 0.0)
    with pytest.raises(ValueError, match="delta"):
        epsilon_from_rates(0.5, 0.1, 1.0)
    with pytest.raises(ValueError, match="members"):
        rate_epsilon(tp=0, fn=0, fp=3, tn=3, delta=0.0)
    with pytest.raises(ValueError, match="v <= r <= m"):
        one_run_p_value(m=10, r=20, v=5, epsilon=1.0, delta=0.0)


def test_bounds_cover_a_mechanism_with_known_epsilon() -> None:
    # Randomised response with ε0 is exactly ε0-DP: the auditor's guess about each canary is
    # right with probability e^ε0/(1 + e^ε0). A valid 95% bound exceeds ε0 in at most ~5% of
    # repetitions (and a useful one is not far below it).
    eps0, trials = 1.0, 200
    rng = np.random.default_rng(0)
    right = 1 / (1 + math.exp(-eps0))
    one_run, rates = [], []
    for _ in range(trials):
        v = int(rng.binomial(1000, right))
        one_run.append(one_run_epsilon(m=1000, r=1000, v=v, delta=0.0))
        # Rates from 500 members and 500 non-members: TPR = TNR = right.
        tp, tn = int(rng.binomial(500, right)), int(rng.binomial(500, right))
        rates.append(rate_epsilon(tp=tp, fn=500 - tp, fp=500 - tn, tn=tn, delta=0.0))
    for values in (np.array(one_run), np.array(rates)):
        assert np.mean(values > eps0) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / trials)
        assert np.median(values) > 0.6 * eps0
