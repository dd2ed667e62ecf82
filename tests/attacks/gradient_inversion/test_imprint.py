"""imprint (Fowl et al. 2022): the block, exact recovery of every singleton bin, the bin-occupancy
law for one client and for the SecAgg / Paillier / CKKS aggregate of many, and scoring that does
not undercount exact recoveries.

Real training gradients throughout: one torch.optim.SGD step per client on the imprinted model,
and the aggregate summed by the real channels (masks, Shamir shares, ciphertexts).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from fedbench.attack import AttackResult, GroundTruth
from fedbench.attacks.gradient_inversion.imprint import (
    Imprint,
    ImprintedModel,
    Statistic,
    bin_order,
    body_part,
    expected_singletons,
    find_block,
    imprint_model,
    imprint_thresholds,
    imprinted_factory,
    imprinted_params,
    occupied_bins,
    recover_inputs,
    singleton_variance,
    statistic_row,
    statistic_values,
)
from fedbench.attacks.gradient_inversion.scoring import exact_recovery, match
from fedbench.data.tensors import TensorData
from fedbench.fl.channel import Channel, PlaintextChannel
from fedbench.fl.context import RoundContext
from fedbench.fl.params import get_flat, set_flat
from fedbench.fl.views import AggregateView, ClientUpdateView, ViewKind
from fedbench.metrics.base import Metric
from fedbench.registry import ATTACKS, MODELS
from fedbench.seeding import Streams

from .helpers import fedsgd, knowledge

DIGITS = (1, 8, 8)
LR = 0.1
Z = 4.0  # a 4σ band: a correct attack leaves it with probability ~6e-5


@dataclass(frozen=True)
class Split:
    """The attacker's public half of digits (thresholds) and the clients' private half."""

    public: TensorData
    private: TensorData


@pytest.fixture(scope="module")
def split() -> Split:
    from fedbench.registry import DATASETS

    data = DATASETS.create("digits", {}).train
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    half = len(data) // 2
    return Split(data.subset(order[:half]), data.subset(order[half:]))


def body_factory(name: str, in_shape: tuple[int, ...] = DIGITS) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            model: nn.Module = MODELS.create(name, {}, in_shape=in_shape, num_classes=10)
        return model

    return build


def imprinted(
    split: Split, bins: int, model: str = "mlp", gain: float = 1.0,
    statistic: Statistic = "mean",
) -> Callable[[], ImprintedModel]:
    row = statistic_row(DIGITS, statistic, seed=3)
    thresholds = imprint_thresholds(split.public.x, bins, row)
    return imprinted_factory(body_factory(model), thresholds=thresholds, row=row, gain=gain)


def sgd_update(build: Callable[[], nn.Module], batch: TensorData) -> tuple[torch.Tensor, ...]:
    """(w_t, Δ) of one real SGD step on ``batch``."""
    model = build()
    start = get_flat(model).clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    F.cross_entropy(model(batch.x), batch.y).backward()
    optimizer.step()
    return start, get_flat(model) - start


def draw(private: TensorData, size: int, gen: torch.Generator) -> TensorData:
    return private.subset(torch.randperm(len(private), generator=gen)[:size])


def draw_clients(
    private: TensorData, clients: int, size: int, gen: torch.Generator
) -> list[TensorData]:
    """Disjoint batches (clients hold different examples; a shared one would sit in its bin
    twice and come back exactly although its bin is not a singleton)."""
    batch = draw(private, clients * size, gen)
    return [batch.subset(torch.arange(c * size, (c + 1) * size)) for c in range(clients)]


def singletons(build: Callable[[], ImprintedModel], x: torch.Tensor) -> int:
    """Ground truth: inputs alone in their bin (by the block's own arithmetic)."""
    block = build().block
    bins = occupied_bins(x, block.trap.weight, block.trap.bias)
    counts = torch.bincount(bins + 1, minlength=block.bins + 1)[1:]
    return int((counts == 1).sum())


def attack_and_score(
    view: ClientUpdateView | AggregateView,
    build: Callable[[], ImprintedModel],
    split: Split,
    truth: TensorData,
    batch_size: int,
) -> tuple[AttackResult, dict[str, Metric]]:
    attack = Imprint()
    known = knowledge(build, fedsgd(batch_size, LR), split.public, input_shape=DIGITS)
    result = attack.run(view, known)
    metrics = {m.name: m for m in attack.score(result, GroundTruth(examples=truth))}
    return result, metrics


def client_view(
    build: Callable[[], ImprintedModel], batch: TensorData
) -> ClientUpdateView:
    start, update = sgd_update(build, batch)
    return ClientUpdateView(round=0, client_id=0, params=start, update=update, weight=1.0,
                            num_examples=len(batch))


def aggregate_view(
    build: Callable[[], ImprintedModel],
    batches: list[TensorData],
    channel: Channel,
    round_index: int = 0,
) -> AggregateView:
    """Each client's real SGD update, encoded and summed by ``channel``."""
    updates = {}
    start = torch.zeros(0)
    for client, batch in enumerate(batches):
        start, update = sgd_update(build, batch)
        updates[client] = update.numpy().astype(np.float32)
    clients = list(updates)
    channel.begin_round(RoundContext(
        round=round_index, sampled=clients, num_clients=len(clients),
        expected_clients=len(clients), dim=start.numel(), streams=Streams(round_index),
    ))
    messages = {c: channel.encode(c, u) for c, u in updates.items()}
    result = channel.aggregate(messages)
    assert result.contributors == tuple(clients)
    return AggregateView(round=round_index, params=start,
                         aggregate=torch.from_numpy(result.total), contributors=tuple(clients),
                         num_examples=sum(len(b) for b in batches))


def concat(batches: list[TensorData]) -> TensorData:
    return TensorData(torch.cat([b.x for b in batches]), torch.cat([b.y for b in batches]),
                      torch.cat([b.ids for b in batches]))


def assert_singletons_recovered(exact: int, alone: int) -> None:
    """The exact recoveries are the singletons, up to two rare exceptions either way: a
    singleton whose downstream gradient g(x) is so small that float32 rounding of Δ = w − w_t
    (or a channel's quantization) shows in the ratio (measured: 1 of 316, at 51 dB), and a
    crowded bin whose other inputs' g(x) are so small that the mixture is its one input above
    60 dB (measured: 1 of 800 inputs, at 65 dB; a real recovery, correctly counted)."""
    assert abs(alone - exact) <= max(1, round(0.02 * alone)), (exact, alone)


def within_band(total: float, rounds: int, inputs: int, bins: int) -> tuple[float, float]:
    """(expected total of exact recoveries over ``rounds`` rounds, its Z·σ tolerance)."""
    mean = rounds * expected_singletons(inputs, bins)
    return mean, Z * math.sqrt(rounds * singleton_variance(inputs, bins))


# -- the block --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "lenet", "convnet"])
def test_the_block_leaves_the_model_unchanged_at_the_broadcast_weights(
    split: Split, name: str
) -> None:
    body = body_factory(name)
    model = imprinted(split, 8, name)()
    plain = body()
    x, y = split.private.x[:6], split.private.y[:6]
    assert torch.equal(model.block(x), x)
    torch.testing.assert_close(model(x), plain(x), rtol=0, atol=0)
    F.cross_entropy(model(x), y).backward()
    F.cross_entropy(plain(x), y).backward()
    for (_, p), q in zip(model.body.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)
    # The trap layer does learn: its gradient carries the inputs.
    assert model.block.trap.weight.grad is not None
    assert model.block.trap.weight.grad.abs().sum() > 0


def test_the_block_comes_first_in_the_flat_parameters(split: Split) -> None:
    model = imprinted(split, 4)()
    flat = get_flat(model)
    torch.testing.assert_close(flat[: model.block.trap.weight.numel()],
                               model.block.trap.weight.detach().flatten())
    torch.testing.assert_close(flat[-10:], model.body[-1].bias.detach())  # type: ignore[index]


def test_the_server_sends_the_block_with_the_honest_body_and_reads_the_body_update_back(
    split: Split,
) -> None:
    honest = body_factory("mlp")()
    with torch.no_grad():
        for p in honest.parameters():
            p.add_(0.01)  # some later w_t of the honest model
    w_t = get_flat(honest)
    build = imprinted(split, 8)
    sent = imprinted_params(build(), w_t)
    model = build()
    set_flat(model, sent)
    x = split.private.x[:4]
    torch.testing.assert_close(model(x), honest(x), rtol=0, atol=0)
    torch.testing.assert_close(body_part(model, sent), w_t)
    with pytest.raises(ValueError, match="parameters"):
        imprinted_params(model, w_t[:-1])


def test_thresholds_split_the_public_data_into_equal_mass_bins(split: Split) -> None:
    # A random projection has no ties, so every bin holds n/k public examples to within one.
    row = statistic_row(DIGITS, "projection", seed=3)
    thresholds = imprint_thresholds(split.public.x, 8, row)
    assert torch.all(thresholds[1:] > thresholds[:-1])
    model = imprint_model(body_factory("mlp")(), thresholds=thresholds, row=row)
    bins = occupied_bins(split.public.x, model.block.trap.weight, model.block.trap.bias)
    counts = torch.bincount(bins + 1, minlength=9)
    assert counts[0] == 0  # nothing below the first threshold
    assert counts[1:].min() >= len(split.public) // 8 - 1
    assert counts[1:].max() <= len(split.public) // 8 + 2
    # The statistic itself: a·x.
    torch.testing.assert_close(statistic_values(split.public.x[:3], row),
                               split.public.x[:3].flatten(1).double() @ row.double())


def test_a_model_without_a_block_is_refused() -> None:
    with pytest.raises(ValueError, match="no ImprintBlock"):
        find_block(body_factory("mlp")())


def test_trap_rows_that_measure_different_statistics_are_refused() -> None:
    with pytest.raises(ValueError, match="must all measure one statistic"):
        bin_order(torch.eye(3), torch.zeros(3))


# -- recovery ---------------------------------------------------------------------------------


def test_recovery_divides_consecutive_row_differences() -> None:
    # Two inputs, in bins 0 and 2 of four, with downstream gradients 0.5 and −2. Row i sums
    # g(x)·x over the inputs above t_i: a is above t_0 only, b above t_0, t_1 and t_2.
    inputs = torch.rand(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g = torch.tensor([0.5, -2.0], dtype=torch.float64)
    above = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.float64).T  # unit × input
    weight_grad = (above * g) @ inputs
    bias_grad = above @ g
    recovery = recover_inputs(weight_grad, bias_grad, torch.arange(4))
    assert recovery.bins.tolist() == [0, 2]
    torch.testing.assert_close(recovery.inputs, inputs)


@pytest.mark.parametrize("name", ["mlp", "lenet", "convnet"])
def test_one_input_comes_back_exactly_from_a_client_update(split: Split, name: str) -> None:
    build = imprinted(split, 8, name)
    batch = split.private.subset(torch.tensor([5]))
    result, metrics = attack_and_score(client_view(build, batch), build, split, batch, 1)
    assert metrics["exact_recovery"].value == 1.0
    assert (metrics["psnr"].value or 0) > 60
    assert result.extras["bins_nonempty"] == 1


def test_every_singleton_is_recovered_and_nothing_else(split: Split) -> None:
    build = imprinted(split, 16, "lenet")
    gen = torch.Generator().manual_seed(1)
    for _ in range(10):
        batch = draw(split.private, 8, gen)
        _, metrics = attack_and_score(client_view(build, batch), build, split, batch, 8)
        value = metrics["images_recovered"].value
        assert value is not None
        assert_singletons_recovered(int(value), singletons(build, batch.x))


def measure_client_rounds(
    split: Split, *, bins: int, batch_size: int, rounds: int, seed: int
) -> tuple[int, int]:
    """(exact recoveries, true singletons) summed over ``rounds`` single-client updates."""
    build = imprinted(split, bins)
    gen = torch.Generator().manual_seed(seed)
    exact = alone = 0
    for _ in range(rounds):
        batch = draw(split.private, batch_size, gen)
        _, metrics = attack_and_score(client_view(build, batch), build, split, batch,
                                      batch_size)
        value = metrics["images_recovered"].value
        assert value is not None
        exact += int(value)
        alone += singletons(build, batch.x)
    return exact, alone


def test_exact_fraction_matches_the_bin_occupancy_law_for_one_client(split: Split) -> None:
    bins, batch_size, rounds = 16, 8, 60
    exact, alone = measure_client_rounds(split, bins=bins, batch_size=batch_size,
                                         rounds=rounds, seed=2)
    expected, tolerance = within_band(exact, rounds, batch_size, bins)
    assert_singletons_recovered(exact, alone)
    assert abs(exact - expected) <= tolerance, (exact, expected, tolerance)
    # The band is narrow enough to catch a broken attack: no recovery, or only half the bins.
    assert expected - tolerance > 0
    assert abs(rounds * expected_singletons(batch_size, bins // 2) - expected) > tolerance


def test_where_it_fails_a_batch_much_larger_than_the_bins(split: Split) -> None:
    # 64 inputs in 8 bins: (7/8)^63 ≈ 0.0002 of them alone; a handful of rounds finds ~none.
    bins, batch_size, rounds = 8, 64, 5
    exact, alone = measure_client_rounds(split, bins=bins, batch_size=batch_size,
                                         rounds=rounds, seed=3)
    expected, tolerance = within_band(exact, rounds, batch_size, bins)
    assert_singletons_recovered(exact, alone)
    assert expected < 0.1 and exact <= expected + tolerance


def test_a_fedavg_update_of_several_steps_is_only_approximately_a_gradient(
    split: Split,
) -> None:
    build = imprinted(split, 16)
    batch = draw(split.private, 4, torch.Generator().manual_seed(4))
    model = build()
    start = get_flat(model).clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(batch.x), batch.y).backward()
        optimizer.step()
    view = ClientUpdateView(round=0, client_id=0, params=start, update=get_flat(model) - start,
                            weight=1.0, num_examples=4)
    attack = Imprint()
    recipe = fedsgd(4, LR)
    recipe = type(recipe)("fedavg", batch_size=4, local_epochs=3, local_steps=None, lr=LR)
    result = attack.run(view, knowledge(build, recipe, split.public, input_shape=DIGITS))
    assert "FedAvg update of 3 local steps" in result.extras["note"]
    recovery = exact_recovery(result.reconstruction, batch.x)  # type: ignore[arg-type]
    # The singletons still come back (the bins barely move in 3 small steps), not bit-exact.
    assert int((np.nan_to_num(recovery.psnr) > 40).sum()) >= singletons(build, batch.x) - 1


# -- the aggregate of many clients, through the real channels ---------------------------------


def secagg_channel(quant_bits: int = 32) -> Channel:
    from fedbench.defenses.secagg.channel import SecAggChannel
    from fedbench.defenses.secagg.encoding import FloatQuantizer

    bits = quant_bits + 8
    return SecAggChannel(encoder=FloatQuantizer(clip_range=(-1.0, 1.0), quant_bits=quant_bits,
                                                bits=bits))


def paillier_channel(clients: int) -> Channel:
    from fedbench.defenses.he.paillier import PaillierKeys
    from fedbench.defenses.he.paillier_channel import PaillierChannel

    channel = PaillierChannel(keys=PaillierKeys.generate(768, allow_insecure=True), bits=32)
    channel.configure(clients=clients, streams=Streams(0))
    return channel


def ckks_channel(clients: int) -> Channel:
    from fedbench.defenses.he.ckks import PRESETS, CKKSKeys
    from fedbench.defenses.he.ckks_channel import CKKSChannel

    channel = CKKSChannel(keys=CKKSKeys.generate(PRESETS["n4096"]))
    channel.configure(clients=clients, streams=Streams(0))
    return channel


CHANNELS: Mapping[str, Callable[[int], Channel]] = {
    "plaintext": lambda clients: PlaintextChannel(),
    "secagg": lambda clients: secagg_channel(),
    "paillier": paillier_channel,
    "ckks": ckks_channel,
}


def measure_aggregate_rounds(
    split: Split, channel: Channel, *, bins: int, clients: int, batch_size: int, rounds: int,
    seed: int, build: Callable[[], ImprintedModel] | None = None,
) -> tuple[int, int]:
    """(exact recoveries, true singletons over all clients' inputs), summed over rounds."""
    build = build or imprinted(split, bins)
    gen = torch.Generator().manual_seed(seed)
    exact = alone = 0
    for r in range(rounds):
        batches = draw_clients(split.private, clients, batch_size, gen)
        truth = concat(batches)
        view = aggregate_view(build, batches, channel, round_index=r)
        result, metrics = attack_and_score(view, build, split, truth, batch_size)
        assert result.extras["num_clients"] == clients
        value = metrics["images_recovered"].value
        assert value is not None
        exact += int(value)
        alone += singletons(build, truth.x)
    return exact, alone


@pytest.mark.parametrize("name", list(CHANNELS))
def test_the_aggregate_of_many_clients_gives_up_every_singleton(split: Split, name: str) -> None:
    clients, batch_size, bins = 4, 2, 16
    channel = CHANNELS[name](clients)
    exact, alone = measure_aggregate_rounds(split, channel, bins=bins, clients=clients,
                                            batch_size=batch_size, rounds=3, seed=5)
    assert_singletons_recovered(exact, alone)
    assert alone > 0


@pytest.mark.parametrize("name", ["plaintext", "secagg"])
def test_the_aggregate_follows_the_occupancy_law_of_one_batch_of_n_times_b(
    split: Split, name: str
) -> None:
    # N clients × B inputs behave like one client with N·B inputs.
    clients, batch_size, bins, rounds = 4, 2, 16, 40
    channel = CHANNELS[name](clients)
    exact, alone = measure_aggregate_rounds(split, channel, bins=bins, clients=clients,
                                            batch_size=batch_size, rounds=rounds, seed=6)
    expected, tolerance = within_band(exact, rounds, clients * batch_size, bins)
    assert_singletons_recovered(exact, alone)
    assert abs(exact - expected) <= tolerance, (exact, expected, tolerance)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["paillier", "ckks"])
def test_the_he_aggregate_follows_the_occupancy_law(split: Split, name: str) -> None:
    clients, batch_size, bins, rounds = 4, 2, 16, 40
    channel = CHANNELS[name](clients)
    exact, alone = measure_aggregate_rounds(split, channel, bins=bins, clients=clients,
                                            batch_size=batch_size, rounds=rounds, seed=7)
    expected, tolerance = within_band(exact, rounds, clients * batch_size, bins)
    assert_singletons_recovered(exact, alone)
    assert abs(exact - expected) <= tolerance, (exact, expected, tolerance)


@pytest.mark.slow
@pytest.mark.parametrize(("bins", "statistic"), [(16, "mean"), (256, "projection")])
def test_where_the_aggregate_fails_ten_clients_of_eight(
    split: Split, bins: int, statistic: Statistic
) -> None:
    # The headline setting: n = 10 clients × B = 8 under SecAgg, 80 inputs. With k = 16
    # bins (15/16)^79 ≈ 0.6% of them are alone; k = 256 bins leave 73% alone. The mean of
    # digits' 4-bit pixels takes only ~160 values, so 256 bins on it cannot be equal-mass (ties
    # share a bin): the many-bin case uses a random projection, which has no ties.
    rounds = 5
    build = imprinted(split, bins, statistic=statistic)
    exact, alone = measure_aggregate_rounds(split, secagg_channel(), bins=bins, clients=10,
                                            batch_size=8, rounds=rounds, seed=8, build=build)
    expected, tolerance = within_band(exact, rounds, 80, bins)
    assert_singletons_recovered(exact, alone)
    assert abs(exact - expected) <= tolerance, (bins, exact, expected, tolerance)


def test_coarse_secagg_quantization_blurs_the_recovery_unless_the_gain_fits_the_clip_range(
    split: Split,
) -> None:
    # 16-bit quantization over [−1, 1] moves each coordinate by up to 3e-5: the trap rows of a
    # gain-1 block are ~1e-3, so singletons come back at ~40-50 dB, none above 60. The server
    # chooses the gain (the body is unchanged): 30 lifts the trap gradient well above the
    # quantization step; 1000 pushes it past the clip range, and clipping destroys the ratio.
    clients, batch_size, bins = 4, 2, 16
    gen = torch.Generator().manual_seed(9)
    batches = draw_clients(split.private, clients, batch_size, gen)
    truth = concat(batches)
    alone = singletons(imprinted(split, bins), truth.x)
    assert alone > 0
    found = {}
    for gain in (1.0, 30.0, 1000.0):
        build = imprinted(split, bins, gain=gain)
        view = aggregate_view(build, batches, secagg_channel(quant_bits=16))
        found[gain] = attack_and_score(view, build, split, truth, batch_size)[1]
    assert found[1.0]["images_recovered"].value == 0
    assert (found[1.0]["psnr_max"].value or 0) > 35  # still a recognisable image
    assert found[30.0]["images_recovered"].value == alone
    assert found[1000.0]["images_recovered"].value == 0


def test_end_to_end_a_secagg_simulation_with_the_imprinted_model_leaks_its_singletons() -> None:
    # The real round: the harness's data split, client SGD engine, SecAgg defense in the
    # pipeline, transcript and threat model. The imprinted model stands in for what a
    # malicious server broadcasts (its thresholds from the run's own population split).
    from fedbench.attack import AttackTarget
    from fedbench.config import parse_experiment
    from fedbench.defenses.secagg.channel import SecAgg
    from fedbench.fl.pipeline import Pipeline
    from fedbench.fl.simulation import Simulation
    from fedbench.fl.threat import ThreatModel
    from fedbench.fl.transcript import Transcript
    from fedbench.harness.build import build_data, model_factory

    cfg = parse_experiment({
        "data": "digits", "model": {"name": "mlp", "hidden": [32]}, "seed": 0,
        "fl": {"algorithm": "fedsgd", "num_clients": 20, "clients_per_round": 5, "rounds": 1,
               "batch_size": 2, "client_lr": LR},
    })
    streams = Streams(cfg.seed)
    data = build_data(cfg, streams)
    row = statistic_row(data.input_shape)
    build = imprinted_factory(model_factory(cfg, data, streams), row=row,
                              thresholds=imprint_thresholds(data.population.x, 32, row))
    defense = SecAgg(quant_bits=32, bits=40)
    sim = Simulation(
        model_factory=build, data=data, fl=cfg.fl, pipeline=Pipeline([("secagg", defense)]),
        streams=streams, transcript=Transcript(rounds=1, keep_rounds={0}),
    ).run()
    threat = ThreatModel(channel=defense.channel)
    assert ViewKind.CLIENT_UPDATE not in threat.open_views()
    view, truth = threat.view(ViewKind.AGGREGATE, AttackTarget(round=0),
                              transcript=sim.transcript, private=sim.private, data=data)
    assert truth.examples is not None and len(truth.examples) == 10
    attack = Imprint()
    known = knowledge(build, cfg.fl.recipe, data.population, input_shape=data.input_shape)
    result = attack.run(view, known)
    metrics = {m.name: m for m in attack.score(result, truth)}
    alone = singletons(build, truth.examples.x)
    assert alone > 0
    value = metrics["images_recovered"].value
    assert value is not None
    assert_singletons_recovered(int(value), alone)


# -- the registered attack and its scoring ----------------------------------------------------


def test_imprint_is_registered_with_both_update_views() -> None:
    attack = ATTACKS.create("imprint", {"exact_db": 50.0})
    assert isinstance(attack, Imprint)
    assert attack.views == (ViewKind.CLIENT_UPDATE, ViewKind.AGGREGATE)
    assert attack.exact_db == 50.0


def test_metrics_carry_directions_and_intervals(split: Split) -> None:
    build = imprinted(split, 16)
    batch = draw(split.private, 8, torch.Generator().manual_seed(10))
    _, metrics = attack_and_score(client_view(build, batch), build, split, batch, 8)
    exact = metrics["exact_recovery"]
    assert exact.higher_is_better is False and exact.kind == "privacy"
    assert exact.interval is not None and exact.interval.method == "Wilson, n=8"
    assert exact.value is not None and exact.interval.contains(exact.value)
    assert metrics["psnr"].higher_is_better is False
    assert metrics["psnr"].value is not None and metrics["psnr"].value <= 120
    assert metrics["label_accuracy"].value is None
    assert metrics["imprint_bins"].value == 16


def test_the_figure_puts_each_exact_recovery_under_its_own_image(split: Split, tmp_path) -> None:
    build = imprinted(split, 16)
    batch = draw(split.private, 8, torch.Generator().manual_seed(13))
    result, _ = attack_and_score(client_view(build, batch), build, split, batch, 8)
    paths = Imprint().figures(result, GroundTruth(examples=batch), tmp_path, caption="digits")
    assert [p.name for p in paths] == ["imprint_reconstruction.png"] and paths[0].stat().st_size


def test_log_mse_assignment_counts_an_exact_recovery_that_summed_mse_moves() -> None:
    # Truth A = 0.5, B = 1; reconstruction r1 = A exactly, r2 = 0 (garbage from a crowded bin).
    # Summed MSE: r1→A, r2→B costs 0 + 1; r1→B, r2→A costs 0.25 + 0.25, so it swaps and the
    # exact recovery of A is lost. Log-MSE keeps r1 on A.
    truth = torch.stack([torch.full((1, 4, 4), 0.5), torch.ones(1, 4, 4)])
    reconstruction = torch.stack([truth[0], torch.zeros(1, 4, 4)])
    rows, cols = match(reconstruction, truth)
    assert dict(zip(rows.tolist(), cols.tolist(), strict=True)) == {0: 1, 1: 0}
    rows, cols = match(reconstruction, truth, cost="log_mse")
    assert dict(zip(rows.tolist(), cols.tolist(), strict=True)) == {0: 0, 1: 1}
    recovery = exact_recovery(reconstruction, truth)
    assert recovery.exact.tolist() == [True, False]
    assert recovery.psnr[0] == 120.0  # capped


def test_every_exact_recovery_is_counted_among_many_garbage_reconstructions() -> None:
    gen = torch.Generator().manual_seed(11)
    truth = torch.rand(12, 1, 8, 8, generator=gen)
    exact = [0, 3, 4, 9]
    garbage = (truth.mean(0, keepdim=True) + 0.3 * torch.randn(8, 1, 8, 8, generator=gen))
    reconstruction = torch.cat([truth[exact] + 1e-5, garbage.clamp(0, 1)])
    reconstruction = reconstruction[torch.randperm(len(reconstruction), generator=gen)]
    recovery = exact_recovery(reconstruction, truth)
    assert np.flatnonzero(recovery.exact).tolist() == exact
    assert recovery.fraction == pytest.approx(4 / 12)


def test_inputs_without_a_reconstruction_count_as_not_recovered() -> None:
    truth = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(12))
    recovery = exact_recovery(truth[:1], truth)
    assert recovery.exact.tolist() == [True, False, False]
    assert np.isnan(recovery.psnr[1:]).all()
    empty = exact_recovery(truth[:0], truth)
    assert empty.fraction == 0.0 and empty.reconstructions == 0
