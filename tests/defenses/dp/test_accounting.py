"""The accounting adapter against Google's dp-accounting, an independent implementation."""

from __future__ import annotations

import math

import dp_accounting
import pytest
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from fedbench.defenses.dp.accounting import (
    Accountant,
    GaussianNoise,
    epsilon,
    noise_multiplier_for,
)
from fedbench.errors import ConfigError
from fedbench.registry import DEFENSES

# (q, z, T, δ): the ANCHORS examples and a spread of regimes (little/much noise and sampling).
GRID = [
    (0.1, 1.0, 100, 1e-5),  # ANCHORS: ε ≈ 7.9 (RDP)
    (1.0, 1.0, 50, 1e-5),  # ANCHORS: full participation, ε ≈ 54 (tight accountant)
    (1.0, 0.1, 1, 1e-5),  # ANCHORS: z = 0.1, one round, ε ≈ 92 (tight accountant)
    (0.01, 0.8, 1000, 1e-6),
    (0.3, 2.0, 30, 1e-5),
    (0.05, 0.6, 200, 1e-3),
    (0.5, 4.0, 10, 1e-5),
    (0.002, 1.1, 5000, 1e-5),
]


def google_event(q: float, z: float, steps: int) -> dp_accounting.DpEvent:
    gaussian = dp_accounting.GaussianDpEvent(z)
    single = gaussian if q == 1 else dp_accounting.PoissonSampledDpEvent(q, gaussian)
    return dp_accounting.SelfComposedDpEvent(single, steps)


def google_rdp(event: dp_accounting.DpEvent, delta: float) -> float:
    acc = RdpAccountant()
    acc.compose(event)
    return float(acc.get_epsilon(delta))


def google_pld(event: dp_accounting.DpEvent, delta: float) -> float:
    # A coarse grid is accurate for ε >= 2 and 10× faster; refine below that.
    for interval in (1e-3, 1e-4):
        acc = PLDAccountant(value_discretization_interval=interval)
        acc.compose(event)
        eps = float(acc.get_epsilon(delta))
        if eps >= 2:
            break
    return eps


@pytest.mark.parametrize(("q", "z", "steps", "delta"), GRID)
def test_rdp_matches_dp_accounting_rdp(q: float, z: float, steps: int, delta: float) -> None:
    ours = epsilon(noise_multiplier=z, sample_rate=q, steps=steps, delta=delta, accountant="rdp")
    theirs = google_rdp(google_event(q, z, steps), delta)
    assert ours == pytest.approx(theirs, rel=0.01)


@pytest.mark.parametrize(("q", "z", "steps", "delta"), GRID)
def test_prv_matches_dp_accounting_pld(q: float, z: float, steps: int, delta: float) -> None:
    ours = epsilon(noise_multiplier=z, sample_rate=q, steps=steps, delta=delta, accountant="prv")
    theirs = google_pld(google_event(q, z, steps), delta)
    assert ours == pytest.approx(theirs, rel=0.01)


def test_anchor_examples() -> None:
    assert epsilon(noise_multiplier=1.0, sample_rate=0.1, steps=100, delta=1e-5) == (
        pytest.approx(7.9, abs=0.05)
    )
    full = epsilon(noise_multiplier=1.0, sample_rate=1.0, steps=50, delta=1e-5, accountant="prv")
    assert full == pytest.approx(54, rel=0.02)
    tiny = epsilon(noise_multiplier=0.1, sample_rate=1.0, steps=1, delta=1e-5, accountant="prv")
    assert tiny == pytest.approx(92, rel=0.01)


@pytest.mark.parametrize("kind", ["rdp", "prv"])
def test_heterogeneous_history_matches_composed_event(kind: str) -> None:
    acc = Accountant(kind)
    acc.step(noise_multiplier=1.2, sample_rate=0.05, steps=300)
    acc.step(noise_multiplier=0.8, sample_rate=0.1, steps=20)
    for _ in range(30):  # single steps merge into one history entry
        acc.step(noise_multiplier=1.2, sample_rate=0.05)
    assert acc.steps == 350
    assert len(acc.opacus.history) == 3
    event = dp_accounting.ComposedDpEvent([
        google_event(0.05, 1.2, 300), google_event(0.1, 0.8, 20), google_event(0.05, 1.2, 30)
    ])
    theirs = google_rdp(event, 1e-5) if kind == "rdp" else google_pld(event, 1e-5)
    assert acc.epsilon(1e-5) == pytest.approx(theirs, rel=0.01)


@pytest.mark.parametrize("kind", ["rdp", "prv"])
def test_more_rounds_cost_more(kind: str) -> None:
    values = [epsilon(noise_multiplier=1.0, sample_rate=0.1, steps=t, delta=1e-5,
                      accountant=kind) for t in (1, 10, 100)]
    assert values[0] < values[1] < values[2]


def test_degenerate_releases() -> None:
    acc = Accountant("rdp")
    assert acc.epsilon(1e-5) == 0.0
    acc.step(noise_multiplier=1.0, sample_rate=0.0, steps=10)  # nobody can be sampled
    acc.step(noise_multiplier=1.0, sample_rate=0.5, steps=0)
    assert acc.epsilon(1e-5) == 0.0
    acc.step(noise_multiplier=0.0, sample_rate=0.5)  # a noiseless release
    assert math.isinf(acc.epsilon(1e-5))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"noise_multiplier": -1.0, "sample_rate": 0.1, "steps": 1}, "noise_multiplier"),
        ({"noise_multiplier": 1.0, "sample_rate": 1.5, "steps": 1}, "sample_rate"),
        ({"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": -1}, "steps"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Accountant("rdp").step(**kwargs)


def test_bad_accountant_and_delta() -> None:
    with pytest.raises(ValueError, match="rdp, prv"):
        Accountant("gdp")
    with pytest.raises(ValueError, match="delta"):
        Accountant("rdp").epsilon(0.0)


@pytest.mark.parametrize(
    ("kind", "target", "q", "steps"),
    [("rdp", 8.0, 0.1, 100), ("rdp", 1.0, 0.3, 30), ("prv", 2.0, 0.01, 1000)],
)
def test_noise_multiplier_for_meets_target_tightly(
    kind: str, target: float, q: float, steps: int
) -> None:
    z = noise_multiplier_for(target_epsilon=target, delta=1e-5, sample_rate=q, steps=steps,
                             accountant=kind)
    reached = epsilon(noise_multiplier=z, sample_rate=q, steps=steps, delta=1e-5, accountant=kind)
    assert reached <= target
    assert reached >= 0.99 * target  # not much more noise than needed
    independent = google_rdp if kind == "rdp" else google_pld
    assert independent(google_event(q, z, steps), 1e-5) == pytest.approx(target, rel=0.015)


def test_noise_multiplier_for_rejects_impossible_targets() -> None:
    with pytest.raises(ValueError, match="target_epsilon"):
        noise_multiplier_for(target_epsilon=0.0, delta=1e-5, sample_rate=0.1, steps=10)
    with pytest.raises(ValueError, match="at least one release"):
        noise_multiplier_for(target_epsilon=1.0, delta=1e-5, sample_rate=0.1, steps=0)


def test_gaussian_noise_defaults_keeps_and_defers() -> None:
    assert GaussianNoise().start("d") == 1.0
    assert GaussianNoise(multiplier=0.7).start("d") == 0.7
    assert GaussianNoise(target_epsilon=2.0).start("d") is None
    assert GaussianNoise(multiplier=0.0).start("d", zero_noise=True) == 0.0
    with pytest.raises(ConfigError, match=r"d: noise\.multiplier must be positive, got 0"):
        GaussianNoise(multiplier=0.0).start("d")


def test_gaussian_noise_for_a_target_meets_it_with_the_accountant() -> None:
    noise = GaussianNoise(target_epsilon=8.0, accountant="rdp")
    z = noise.for_run(sample_rate=0.1, steps=100, given=None)
    spent = epsilon(noise_multiplier=z, sample_rate=0.1, steps=100, delta=1e-5)
    assert 0.995 * 8.0 <= spent <= 8.0
    assert GaussianNoise(multiplier=0.7).for_run(sample_rate=0.1, steps=100, given=0.7) == 0.7


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"multiplier": 1.0, "target_epsilon": 2.0}, "set multiplier or target_epsilon"),
        ({"multiplier": -0.1}, "noise.multiplier"),
        ({"multiplier": float("inf")}, "noise.multiplier"),
        ({"target_epsilon": 0.0}, "noise.target_epsilon"),
        ({"target_delta": 1.0}, "noise.target_delta"),
        ({"accountant": "gdp"}, "noise.accountant"),
        ({"secure_mode": 1}, "noise.secure_mode"),
        ({"multipler": 1.0}, "noise.multipler"),
    ],
)
def test_the_noise_group_is_validated_at_load_with_the_field_named(
    params: dict[str, object], field: str
) -> None:
    for defense in ("dp_fedavg", "dp_sgd", "ldp", "distributed_dp"):
        with pytest.raises(ConfigError, match=f"defense '{defense}'.*{field}"):
            DEFENSES.validate(defense, {"noise": params})


def test_a_flat_noise_parameter_names_its_new_place() -> None:
    with pytest.raises(ConfigError, match=r"'noise_multiplier': it is now 'noise\.multiplier'"):
        DEFENSES.validate("dp_fedavg", {"noise_multiplier": 1.0})

