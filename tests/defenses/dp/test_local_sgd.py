"""DP-SGD through Opacus: a persistent accountant per client, real clipping and noise, refusal
of BatchNorm, and an end-to-end run whose records carry the worst client's ε."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from fedbench.config import parse_experiment
from fedbench.data.tensors import TensorData
from fedbench.defenses.dp.accounting import Accountant, GaussianNoise, epsilon
from fedbench.defenses.dp.local_sgd import DPSGD, steps_per_round
from fedbench.errors import ConfigError
from fedbench.fl.params import get_flat
from fedbench.fl.recipe import TrainingRecipe
from fedbench.harness.cell import run_cell
from fedbench.harness.suite import Cell

RECIPE = TrainingRecipe("fedavg", batch_size=8, local_epochs=1, local_steps=None, lr=0.1)


def model_factory() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 4))


def client_data(n: int, seed: int = 0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    return TensorData(torch.randn(n, 1, 4, 4, generator=g), torch.randint(0, 4, (n,), generator=g),
                      torch.arange(100 * seed, 100 * seed + n))


def test_steps_per_round_follows_opacus_sampling_rule() -> None:
    assert steps_per_round(40, RECIPE) == (1 / 5, 5)
    assert steps_per_round(41, RECIPE) == (1 / 6, 6)
    recipe = TrainingRecipe("fedavg", batch_size=8, local_epochs=3, local_steps=7, lr=0.1)
    assert steps_per_round(40, recipe) == (1 / 5, 7)
    assert steps_per_round(40, TrainingRecipe("fedsgd", None, 1, None, 0.1)) == (1.0, 1)


def test_two_rounds_for_a_client_cost_more_than_one(make_run, make_ctx) -> None:
    run = make_run(num_clients=2, client_sizes=(40, 40), model_factory=model_factory)
    defense = DPSGD(noise=GaussianNoise(multiplier=1.1), max_grad_norm=1.0)
    defense.setup(run)
    data = client_data(40)
    worker = model_factory()
    defense.local_training.train(worker, data, RECIPE, client_id=0, ctx=make_ctx(run, 0, [0]))
    one = defense.privacy_spent(1e-5).epsilon
    defense.local_training.train(worker, data, RECIPE, client_id=0, ctx=make_ctx(run, 1, [0]))
    two = defense.privacy_spent(1e-5).epsilon
    assert two > one > 0
    # The accountant saw exactly Opacus' sampled-Gaussian steps: q = 1/5, 5 steps per round.
    assert one == pytest.approx(epsilon(noise_multiplier=1.1, sample_rate=0.2, steps=5,
                                        delta=1e-5))
    assert two == pytest.approx(epsilon(noise_multiplier=1.1, sample_rate=0.2, steps=10,
                                        delta=1e-5))
    assert defense.clients[0].rounds == 2


def test_training_uses_a_private_copy_and_leaves_the_model_unhooked(make_run, make_ctx) -> None:
    run = make_run(num_clients=1, client_sizes=(40,), model_factory=model_factory)
    defense = DPSGD(noise=GaussianNoise(multiplier=1.0))
    defense.setup(run)
    worker = model_factory()
    before = get_flat(worker).clone()
    result = defense.local_training.train(worker, client_data(40), RECIPE, client_id=0,
                                          ctx=make_ctx(run, 0, [0]))
    assert torch.equal(get_flat(worker), before)
    assert not any(m._forward_hooks or m._backward_hooks for m in worker.modules())
    assert not torch.equal(result.params, before)
    assert result.num_examples == 40
    assert set(result.used_ids.tolist()) <= set(range(40))


def fedsgd_update(noise_multiplier: float, clip: float, data: TensorData, make_run, make_ctx):
    recipe = TrainingRecipe("fedsgd", batch_size=None, local_epochs=1, local_steps=None, lr=1.0)
    run = make_run(num_clients=1, client_sizes=(len(data),), model_factory=model_factory)
    defense = DPSGD(noise=GaussianNoise(multiplier=noise_multiplier), max_grad_norm=clip)
    defense.setup(run)
    worker = model_factory()
    result = defense.local_training.train(worker, data, recipe, client_id=0,
                                          ctx=make_ctx(run, 0, [0]))
    return result.params - get_flat(worker)


def test_per_example_clipping_bounds_the_step(make_run, make_ctx) -> None:
    # One full-batch step (q = 1) with lr 1: Δ = −(Σ clipped g_i + noise) / n, so ‖Δ‖ <= C.
    data = client_data(30)
    data = TensorData(data.x * 100, data.y, data.ids)  # large gradients, all clipped
    delta = fedsgd_update(1e-6, 0.01, data, make_run, make_ctx)
    assert 0.002 < float(delta.norm()) <= 0.01 * (1 + 1e-4)


def test_noise_std_is_what_the_accountant_was_told(make_run, make_ctx) -> None:
    # With z = 1000 the noise dominates: each coordinate of Δ is ~ N(0, (zC/n)²).
    n, z, clip = 30, 1000.0, 1.0
    delta = fedsgd_update(z, clip, client_data(n), make_run, make_ctx)
    assert delta.numel() == 68
    rms = float(delta.pow(2).mean().sqrt())
    assert rms == pytest.approx(z * clip / n, rel=0.25)  # 68 draws: ~9% standard error


def test_noise_std_over_many_draws(make_run, make_ctx) -> None:
    n, z, clip = 30, 1000.0, 1.0
    draws = torch.cat([
        fedsgd_update(z, clip, client_data(n, seed), make_run, make_ctx) for seed in range(15)
    ])
    assert float(draws.std()) == pytest.approx(z * clip / n, rel=0.06)  # 1020 draws: ~2.2%


def test_worst_client_and_distribution(make_run, make_ctx) -> None:
    run = make_run(num_clients=3, client_sizes=(40, 40, 16), model_factory=model_factory)
    defense = DPSGD(noise=GaussianNoise(multiplier=1.0))
    defense.setup(run)
    for t, cid, size in [(0, 0, 40), (1, 0, 40), (1, 2, 16)]:
        defense.local_training.train(model_factory(), client_data(size, cid), RECIPE,
                                     client_id=cid, ctx=make_ctx(run, t, [cid]))
    per_client = defense.client_epsilons(1e-5)
    assert set(per_client) == {0, 2}
    report = defense.privacy_spent(1e-5)
    assert report.epsilon == max(per_client.values())
    assert report.level == "example"
    metrics = {m.name: m.value for m in defense.metrics()}
    assert metrics["clients_accounted"] == 2
    assert metrics["epsilon_min"] == min(per_client.values()) < report.epsilon


def test_target_epsilon_covers_the_worst_client_size(make_run) -> None:
    run = make_run(num_clients=3, client_sizes=(40, 40, 16), model_factory=model_factory,
                   rounds=5)
    defense = DPSGD(noise=GaussianNoise(target_epsilon=3.0))
    defense.setup(run)
    z = defense.noise_multiplier
    # The 16-example client has the larger sampling rate (1/2 vs 1/5) and is the binding one.
    worst = Accountant("rdp")
    worst.step(noise_multiplier=z, sample_rate=0.5, steps=2 * 5)
    other = Accountant("rdp")
    other.step(noise_multiplier=z, sample_rate=0.2, steps=5 * 5)
    assert 0.99 * 3.0 <= worst.epsilon(1e-5) <= 3.0
    assert other.epsilon(1e-5) < 3.0


def test_batchnorm_model_is_refused_with_opacus_reason(make_run) -> None:
    def with_batchnorm() -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(),
                             nn.Linear(16, 4))

    with pytest.raises(ConfigError, match=r"BatchNorm.*norm: group"):
        DPSGD().setup(make_run(model_factory=with_batchnorm))


@pytest.mark.skipif(importlib.util.find_spec("torchcsprng") is not None,
                    reason="torchcsprng is installed")
def test_secure_mode_without_csprng_is_refused(make_run) -> None:
    with pytest.raises(ConfigError, match="torchcsprng"):
        DPSGD(noise=GaussianNoise(secure_mode=True)).setup(make_run())


def test_cell_on_digits_records_the_worst_client_epsilon() -> None:
    cfg = parse_experiment({
        "data": "digits", "model": "logreg", "split": {"population_fraction": 0.0},
        "fl": {"algorithm": "fedavg", "num_clients": 5, "rounds": 3, "batch_size": 32,
               "client_lr": 0.5, "sampling": "poisson", "client_fraction": 0.6},
        "defenses": [{"name": "dp_sgd", "noise": {"multiplier": 1.0}, "max_grad_norm": 1.0}],
    })
    rows = run_cell(Cell("test", "digits", "dp_sgd", 0, cfg))
    assert rows[-1].status == "ok", rows[-1].error
    metrics = {r.metric: r for r in rows if r.type == "metric"}
    assert metrics["epsilon"].level == "example"
    assert metrics["epsilon"].value >= metrics["epsilon_median"].value > 0
    assert metrics["accuracy"].value > 0.3  # chance is 0.1
