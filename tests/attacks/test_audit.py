"""DP auditing: ε̂ from canary scores stays below an honest claim and exceeds a false one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dp_accounting
import numpy as np
import pytest
import torch

from fedbench.attacks.audit import one_run_audit, threshold_audit
from fedbench.config import parse_experiment
from fedbench.errors import ConfigError
from fedbench.harness.cell import run_cell
from fedbench.harness.suite import Cell
from fedbench.metrics.dp_bounds import one_run_epsilon
from fedbench.registry import ATTACKS

DELTA = 1e-5
CLAIMED_SIGMA = 2.0


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Small models: a second intra-op thread costs more than it gains on a shared 2-core box.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _claimed_epsilon(sigma: float) -> float:
    """ε of one Gaussian mechanism with sensitivity 1, from an independent accountant (PLD)."""
    accountant = dp_accounting.pld.PLDAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier=sigma))
    return float(accountant.get_epsilon(DELTA))


def _gaussian_mechanism_audit(actual_sigma: float, seed: int, m: int = 1000) -> tuple[Any, Any]:
    """One run of the Gaussian mechanism on m canaries, each included with probability ½.

    The mechanism releases the sum of the included canaries' indicator vectors e_i plus
    N(0, σ²I): adding or removing one canary moves the output by a unit vector, so it is
    (ε(σ), δ)-DP per canary. The auditor's score for canary i is coordinate i of the release.
    """
    rng = np.random.default_rng(seed)
    included = rng.random(m) < 0.5
    release = included.astype(float) + actual_sigma * rng.normal(size=m)
    return (one_run_audit(release, included, delta=DELTA),
            threshold_audit(release, included, delta=DELTA, seed=seed))


@pytest.mark.parametrize("seed", range(3))
def test_an_honest_gaussian_mechanism_passes_the_audit(seed: int) -> None:
    claimed = _claimed_epsilon(CLAIMED_SIGMA)
    assert 1.5 < claimed < 2.5  # σ = 2 at δ = 1e-5
    one_run, rates = _gaussian_mechanism_audit(CLAIMED_SIGMA, seed)
    assert one_run.epsilon < claimed
    assert rates.epsilon < claimed


@pytest.mark.parametrize("seed", range(3))
def test_an_under_noised_mechanism_is_caught(seed: int) -> None:
    # A bug that adds a tenth of the noise the accountant was told about.
    claimed = _claimed_epsilon(CLAIMED_SIGMA)
    one_run, rates = _gaussian_mechanism_audit(CLAIMED_SIGMA / 10, seed)
    assert one_run.epsilon > claimed + 1.0
    assert rates.epsilon > claimed + 1.0


def test_one_run_audit_counts_the_guesses() -> None:
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    included = np.array([True, True, False, True, False, False])
    result = one_run_audit(scores, included, delta=0.0, fractions=(1.0,))
    # Top 3 guessed in (2 right), bottom 3 guessed out (2 right).
    assert (result.guesses, result.correct, result.canaries) == (6, 4, 6)
    assert result.epsilon == one_run_epsilon(m=6, r=6, v=4, delta=0.0)
    with pytest.raises(ValueError, match="both"):
        one_run_audit(scores, np.ones(6, bool), delta=0.0)


def test_threshold_audit_judges_on_the_held_out_half() -> None:
    rng = np.random.default_rng(0)
    included = rng.random(400) < 0.5
    scores = included + rng.normal(size=400)
    result = threshold_audit(scores, included, delta=0.0, seed=1)
    assert result.tp + result.fn + result.fp + result.tn == 200
    assert result.tp + result.fn > 50 and result.fp + result.tn > 50


def test_audit_of_a_dp_sgd_model_stays_below_the_claimed_epsilon() -> None:
    # End to end: DP-SGD clients (Opacus, from the DP issue), the harness's ε from its
    # accountant, and the audit attack's ε̂ in the same records.
    config = {
        "data": "digits",
        "split": {"test_fraction": 0.2, "population_fraction": 0.3, "max_train_examples": 120},
        "model": {"name": "mlp", "hidden": [64]},
        "fl": {"num_clients": 2, "rounds": 10, "local_epochs": 2, "batch_size": 32,
               "client_lr": 0.3},
        "defenses": [{"name": "dp_sgd", "noise": {"multiplier": 1.0}}],
        "attacks": [{"name": "audit", "attack": "rmia", "attack_params": {"num_models": 2}}],
        "seed": 5,
    }
    cfg = parse_experiment(config)
    rows = run_cell(Cell("t", "dp", "dp_sgd", cfg.seed, cfg))
    assert rows[-1].status == "ok", rows[-1].error
    by_metric = {r.metric: r for r in rows if r.type == "metric"}
    claimed = by_metric["epsilon"].value
    audited = by_metric["epsilon_lower_bound"].value
    assert 0 <= audited < claimed
    assert 0 <= by_metric["epsilon_lower_bound_threshold"].value < claimed
    assert "one-run" in by_metric["epsilon_lower_bound"].note
    assert by_metric["mia_auc"].source == "attack:audit"


def test_audit_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="unknown attack"):
        ATTACKS.create("audit", {"attack": "no_such_attack"})
    with pytest.raises(ConfigError, match="audit itself"):
        ATTACKS.create("audit", {"attack": "audit"})
    with pytest.raises(ConfigError, match="confidence"):
        ATTACKS.create("audit", {"confidence": 1.0})
    audit = ATTACKS.create("audit", {"attack": "update_mia"})
    assert audit.views == ATTACKS.create("update_mia").views
    assert audit.target.round == -1
