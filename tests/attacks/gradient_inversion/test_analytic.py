"""analytic_fc: exact recovery through a first Linear layer, and what defenses do to it."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fedbench.attack import GroundTruth
from fedbench.attacks.gradient_inversion.analytic import AnalyticFC, invert_linear
from fedbench.attacks.gradient_inversion.scoring import score_reconstruction
from fedbench.data.tensors import TensorData
from fedbench.fl.recipe import TrainingRecipe
from fedbench.fl.views import ClientUpdateView
from fedbench.harness.build import model_factory
from fedbench.seeding import Streams

from .helpers import examples_behind, factory, fedsgd, knowledge, run_experiment, simulate

DIGITS = (1, 8, 8)


def experiment(defenses: list[dict[str, Any]] | None = None, **fl: Any) -> dict[str, Any]:
    return {
        "data": "digits", "model": {"name": "mlp", "hidden": [32]}, "seed": 0,
        "fl": {"algorithm": "fedsgd", "batch_size": 1, "num_clients": 10, "rounds": 1,
               "clients_per_round": 1, "client_lr": 1.0, **fl},
        "defenses": defenses or [],
        "attacks": ["analytic_fc"],
    }


def test_invert_linear_is_exact_for_one_example() -> None:
    x = torch.rand(20)
    bias_grad = torch.randn(7)
    torch.testing.assert_close(invert_linear(bias_grad[:, None] * x, bias_grad, 1)[0], x)


def test_analytic_fc_recovers_an_mlp_input_exactly(tmp_path) -> None:
    metrics, _ = run_experiment(experiment(), figures=tmp_path)
    assert metrics["psnr"].value >= 60.0
    assert metrics["ssim"].value >= 0.999
    assert metrics["label_accuracy"].value == 1.0
    assert list(tmp_path.glob("figures/*/analytic_fc_reconstruction-client_update.png"))


def test_analytic_fc_on_logreg_and_on_a_multi_step_update_of_one_example(
    digits: TensorData,
) -> None:
    # logreg: the first layer is the last; FedAvg with 3 steps on one example stays exact.
    build = factory("logreg", DIGITS, seed=2)
    x, y = digits.x[7:8], digits.y[7:8]
    model = build()
    start = torch.cat([p.detach().flatten() for p in model.parameters()])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    update = torch.cat([p.detach().flatten() for p in model.parameters()]) - start
    view = ClientUpdateView(round=0, client_id=0, params=start, update=update, weight=1.0,
                            num_examples=1)
    recipe = TrainingRecipe("fedavg", batch_size=1, local_epochs=1, local_steps=3, lr=0.5)
    result = AnalyticFC().run(view, knowledge(build, recipe, digits, input_shape=DIGITS))
    scores = {m.name: m.value for m in score_reconstruction(
        result.reconstruction, result.labels, x, y, data_kind="image")}
    assert scores["psnr"] >= 60.0


def test_analytic_fc_refuses_a_convolutional_model(patches: TensorData) -> None:
    build = factory("lenet", (3, 32, 32), seed=0)
    view = ClientUpdateView(round=0, client_id=0, params=torch.cat(
        [p.detach().flatten() for p in build().parameters()]), update=torch.zeros(
        sum(p.numel() for p in build().parameters())), weight=1.0, num_examples=1)
    with pytest.raises(ValueError, match="Conv2d"):
        AnalyticFC().run(view, knowledge(build, fedsgd(1), patches, input_shape=(3, 32, 32)))


def test_gaussian_update_noise_of_variance_0_1_stops_it() -> None:
    # ldp clips to L2 norm C and adds N(0, (zC)²); C = 100 leaves this update unclipped and
    # zC = √0.1 gives variance 1e-1. lr = 1 makes the update the gradient (DLG's setting).
    noise = {"name": "ldp", "noise": {"multiplier": 0.1**0.5 / 100}, "clip_norm": 100.0}
    clean, _ = run_experiment(experiment())
    noisy, _ = run_experiment(experiment([noise]))
    assert clean["psnr"].value >= 60.0
    assert noisy["psnr"].value < 15.0


def test_pruning_90_percent_costs_it_tens_of_decibels() -> None:
    # Digits are mostly black, and pruning keeps the largest entries (bright pixels × large
    # bias gradients), so the analytic attack degrades but does not fall below 15 dB; the
    # below-15 dB property of pruning is DLG's (test_dlg.py).
    clean, _ = run_experiment(experiment())
    pruned, _ = run_experiment(experiment([{"name": "prune", "ratio": 0.9}]))
    assert pruned["psnr"].value <= clean["psnr"].value - 30.0


def test_the_aggregate_of_eight_clients_leaks_far_less_than_one_client() -> None:
    sim, data, cfg = simulate({**experiment(num_clients=8, clients_per_round=8,
                                            weighting="uniform"), "attacks": []})
    recipe = cfg.fl.recipe
    build = model_factory(cfg, data, Streams(cfg.seed))
    know = knowledge(build, recipe, data.population, input_shape=DIGITS)
    attack = AnalyticFC()

    def psnr_of(view, clients) -> float:
        truth = examples_behind(sim, data, clients)
        result = attack.run(view, know)
        scores = {m.name: m.value for m in attack.score(result, GroundTruth(examples=truth))}
        return float(scores["psnr"])

    single = sim.transcript.client_update_view(0)
    aggregate = sim.transcript.aggregate_view(0)
    assert len(aggregate.contributors) == 8
    one, many = psnr_of(single, (single.client_id,)), psnr_of(aggregate, aggregate.contributors)
    assert one >= 60.0
    assert many <= one - 30.0
