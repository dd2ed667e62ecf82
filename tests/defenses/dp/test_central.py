"""DP-FedAvg: clipping, the noise the accountant is told about, adaptive clipping, refusals,
and an end-to-end run on digits whose records carry ε."""

from __future__ import annotations

import dp_accounting
import pytest
import torch
from dp_accounting.rdp import RdpAccountant

from fedbench.config import parse_experiment
from fedbench.defenses.dp.accounting import GaussianNoise, epsilon
from fedbench.defenses.dp.central import DPFedAvg
from fedbench.errors import ConfigError
from fedbench.harness.cell import run_cell
from fedbench.harness.suite import Cell
from fedbench.registry import DEFENSES


def test_clipping_bounds_each_client_contribution(make_run, make_ctx) -> None:
    defense = DPFedAvg(noise=GaussianNoise(multiplier=1.0), clip_norm=0.5)
    run = make_run(dim=50)
    defense.setup(run)
    ctx = make_ctx(run, 0, list(range(20)))
    g = torch.Generator().manual_seed(0)
    for cid in range(20):
        update = torch.randn(50, generator=g) * (10.0 ** (cid % 5 - 2))
        out = defense.client_update.apply(cid, update, ctx)
        assert float(out.norm()) <= 0.5 * (1 + 1e-6)
        if float(update.norm()) <= 0.5:
            assert torch.equal(out, update)
    assert len(ctx.notes["dp_fedavg.unclipped"]) == 20


@pytest.mark.parametrize("secure", [False, True])
def test_noise_std_is_z_times_c_and_rounds_are_accounted(make_run, make_ctx, secure) -> None:
    run = make_run(dim=100_000, rounds=3, expected_clients=10.0)
    defense = DPFedAvg(noise=GaussianNoise(multiplier=1.3, secure_mode=secure), clip_norm=0.4)
    defense.setup(run)
    for t in range(3):
        total = torch.zeros(run.dim, dtype=torch.float64)
        noised, denominator = defense.server_update.apply(total, 7.0, make_ctx(run, t, [1, 2]))
        assert denominator == 10.0  # the expected number of clients, not the 7 that arrived
        assert float(noised.std()) == pytest.approx(1.3 * 0.4, rel=0.01)
        assert abs(float(noised.mean())) < 0.01
    report = defense.privacy_spent(1e-5)
    assert report.secure_mode is secure
    assert report.level == "user" and report.accountant == "rdp"
    assert report.epsilon == pytest.approx(
        epsilon(noise_multiplier=1.3, sample_rate=0.1, steps=3, delta=1e-5)
    )
    google = RdpAccountant()
    google.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(1.3)), 3))
    assert report.epsilon == pytest.approx(google.get_epsilon(1e-5), rel=0.01)


def test_seeded_noise_repeats_secure_noise_does_not(make_run, make_ctx) -> None:
    def one(secure: bool) -> torch.Tensor:
        run = make_run(dim=100)
        defense = DPFedAvg(noise=GaussianNoise(multiplier=1.0, secure_mode=secure))
        defense.setup(run)
        total = torch.zeros(100, dtype=torch.float64)
        return defense.server_update.apply(total, 1.0, make_ctx(run, 0, [0]))[0]

    assert torch.equal(one(False), one(False))
    assert not torch.equal(one(True), one(True))


def test_target_epsilon_chooses_z_for_q_and_t(make_run) -> None:
    defense = DPFedAvg(noise=GaussianNoise(target_epsilon=2.0))
    defense.setup(make_run(rounds=50, expected_clients=20.0, num_clients=100))
    z = defense.noise_multiplier
    reached = epsilon(noise_multiplier=z, sample_rate=0.2, steps=50, delta=1e-5)
    assert 0.99 * 2.0 <= reached <= 2.0


def test_adaptive_noise_multiplier_and_count_noise(make_run, make_ctx) -> None:
    run = make_run(dim=200_000, expected_clients=40.0)
    defense = DPFedAvg(noise=GaussianNoise(multiplier=1.0), adaptive=True, clip_norm=0.3)
    defense.setup(run)
    sigma_b = 40.0 / 20  # Andrew et al.'s default m/20
    z_update = (1.0 - (2 * sigma_b) ** -2) ** -0.5
    assert defense.update_noise_multiplier == pytest.approx(z_update)
    total = torch.zeros(run.dim, dtype=torch.float64)
    noised, _ = defense.server_update.apply(total, 40.0, make_ctx(run, 0, []))
    assert float(noised.std()) == pytest.approx(z_update * 0.3, rel=0.01)
    assert defense.privacy_spent(1e-5).epsilon == pytest.approx(
        epsilon(noise_multiplier=1.0, sample_rate=0.4, steps=1, delta=1e-5)
    )


def test_adaptive_clipping_moves_towards_the_target_quantile(make_run, make_ctx) -> None:
    # Update norms are uniform on [1, 3]: the 0.5-quantile is 2.
    run = make_run(dim=10, num_clients=1000, expected_clients=100.0, rounds=80)
    g = torch.Generator().manual_seed(0)
    for start in (0.1, 20.0):
        defense = DPFedAvg(noise=GaussianNoise(multiplier=0.5), adaptive=True, clip_norm=start)
        defense.setup(run)
        for t in range(80):
            ctx = make_ctx(run, t, list(range(100)))
            for cid in range(100):
                direction = torch.randn(10, generator=g)
                norm = 1.0 + 2.0 * float(torch.rand(1, generator=g))
                defense.client_update.apply(cid, direction / direction.norm() * norm, ctx)
            defense.server_update.apply(torch.zeros(10, dtype=torch.float64), 100.0, ctx)
        assert defense.clip_norm == pytest.approx(2.0, rel=0.15)
        assert defense.clip_history[0] == start
        history = defense.clip_history
        moved_towards = abs(history[10] - 2.0) < abs(start - 2.0)
        assert moved_towards


def test_adaptive_refuses_too_little_count_noise(make_run) -> None:
    defense = DPFedAvg(noise=GaussianNoise(multiplier=2.0), adaptive=True)
    with pytest.raises(ConfigError, match="clipped_count_stddev"):
        defense.setup(make_run(expected_clients=10.0))  # σ_b = 0.5: 2σ_b < z


@pytest.mark.parametrize(
    ("sampling", "weighting", "field"),
    [("fixed", "uniform", "fl.sampling"), ("poisson", "weighted", "fl.weighting")],
)
def test_refuses_runs_the_accountant_does_not_describe(
    make_run, sampling, weighting, field
) -> None:
    run = make_run(sampling=sampling, weighting=weighting)
    with pytest.raises(ConfigError, match=field):
        DPFedAvg().setup(run)
    allowed = DPFedAvg(allow_insecure=True)
    allowed.setup(run)
    assert allowed.insecure is not None and field in allowed.insecure
    assert "INSECURE" in allowed.privacy_spent(1e-5).note


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"noise": {"multiplier": 1.0, "target_epsilon": 1.0}}, "not both"),
        ({"clip_norm": 0.0}, "clip_norm"),
        ({"target_quantile": 1.0}, "target_quantile"),
        ({"noise": {"multiplier": -0.1}}, r"noise\.multiplier"),
        ({"nois_multiplier": 1.0}, "nois_multiplier"),
    ],
)
def test_bad_parameters_are_refused_by_name(params: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        DEFENSES.create("dp_fedavg", params)


def digits_dp_cell(target_epsilon: float | None) -> Cell:
    defenses = [] if target_epsilon is None else [
        {"name": "dp_fedavg", "noise": {"target_epsilon": target_epsilon}, "clip_norm": 0.3}
    ]
    cfg = parse_experiment({
        "name": "digits-dp",
        "data": "digits",
        "model": "logreg",
        "split": {"population_fraction": 0.0},
        "fl": {
            "algorithm": "fedavg", "num_clients": 100, "rounds": 30, "client_fraction": 0.3,
            "sampling": "poisson", "weighting": "uniform", "local_epochs": 3,
            "batch_size": 8, "client_lr": 0.5, "eval_every": 30,
        },
        "defenses": defenses,
        "seed": 0,
    })
    return Cell("test", "digits-dp", f"eps={target_epsilon}", 0, cfg)


def test_fedavg_on_digits_at_epsilon_8_and_1_records_epsilon() -> None:
    accuracy = {}
    for target in (8.0, 1.0):
        rows = run_cell(digits_dp_cell(target))
        assert rows[-1].status == "ok", rows[-1].error
        metrics = {r.metric: r for r in rows if r.type == "metric"}
        eps = metrics["epsilon"]
        assert eps.source == "defense:dp_fedavg"
        assert 0.99 * target <= eps.value <= target
        assert eps.higher_is_better is False
        assert (eps.delta, eps.level, eps.accountant, eps.secure_mode) == (1e-5, "user", "rdp",
                                                                           False)
        assert rows[-1].insecure is None
        assert rows[-1].irreproducible is None and eps.irreproducible is None  # seeded
        accuracy[target] = metrics["accuracy"].value
    # Recorded on seed 0: 0.914 at ε≈8 and 0.705 at ε≈1 (no defense: 0.936; chance: 0.1).
    assert accuracy[8.0] >= 0.8
    assert 0.4 <= accuracy[1.0] < accuracy[8.0]


def test_non_poisson_cell_is_refused_before_training() -> None:
    cfg = digits_dp_cell(8.0).config.model_dump()
    cfg["fl"]["sampling"] = "fixed"
    cfg["fl"]["client_fraction"] = None
    cfg["fl"]["clients_per_round"] = 30
    rows = run_cell(Cell("test", "x", "x", 0, parse_experiment(cfg)))
    assert rows[-1].status == "failed"
    assert "fl.sampling" in rows[-1].error


def test_an_allowed_insecure_run_is_marked_in_records_and_tables(tmp_path) -> None:
    from fedbench.harness.records import read_records
    from fedbench.harness.tables import main_table, to_markdown

    cfg = digits_dp_cell(8.0).config.model_dump()
    cfg["fl"].update(sampling="fixed", client_fraction=None, clients_per_round=30, rounds=2)
    cfg["defenses"][0]["params"]["allow_insecure"] = True
    rows = run_cell(Cell("test", "digits-dp", "dp insecure", 0, parse_experiment(cfg)))
    assert rows[-1].status == "ok", rows[-1].error
    why = "dp_fedavg: fl.sampling is 'fixed', but the accountant assumes Poisson"
    assert rows[-1].insecure is not None and rows[-1].insecure.startswith(why)
    assert all(r.insecure == rows[-1].insecure for r in rows)
    from fedbench.harness.records import append_records

    append_records(tmp_path / "records.jsonl", rows)
    table = to_markdown(main_table(read_records(tmp_path / "records.jsonl")))
    assert "dp insecure †" in table and "† insecure setting, explicitly allowed" in table
