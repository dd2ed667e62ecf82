"""Colluding clients against each channel, with real crypto and real training: the views they
open are held against every client's true update, read from an identical plaintext run (the
same seeds train the same updates whatever the channel)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fedbench.adversary import SetUp
from fedbench.attack import AttackTarget
from fedbench.config import parse_experiment
from fedbench.defenses.secagg.channel import SecAggChannel
from fedbench.errors import ConfigError
from fedbench.fl.pipeline import Pipeline
from fedbench.fl.simulation import Simulation
from fedbench.fl.threat import PrivateLog, ThreatModel
from fedbench.fl.transcript import Transcript
from fedbench.fl.views import AggregateView, ClientUpdateView, ViewKind
from fedbench.harness.build import build_defenses, cell_data, model_factory
from fedbench.harness.cell import run_cell
from fedbench.harness.schema import CellRecord, MetricRecord
from fedbench.harness.suite import Cell
from fedbench.registry import ADVERSARIES
from fedbench.seeding import Streams

CLIENTS = 10
FL = {"algorithm": "fedsgd", "num_clients": CLIENTS, "client_fraction": 1.0,
      "sampling": "poisson", "weighting": "uniform", "rounds": 1, "batch_size": 1,
      "client_lr": 0.1}
EVERYONE_ELSE = list(range(1, CLIENTS))
WANTED = [(ViewKind.AGGREGATE, AttackTarget(0)), (ViewKind.CLIENT_UPDATE, AttackTarget(0))]


def _experiment(defenses: list[dict[str, Any]], adversary: dict[str, Any]) -> Any:
    return parse_experiment({
        "name": "collusion", "data": "digits", "model": {"name": "mlp", "hidden": [32]},
        "fl": FL, "attacks": [{"name": "idlg", "iterations": 20}], "adversary": adversary,
        "defenses": defenses,
    })


def _run(
    defenses: list[dict[str, Any]], adversary: dict[str, Any]
) -> tuple[ThreatModel, Transcript]:
    """One round of the experiment, as a cell sets it up, without the attacks."""
    cfg = _experiment(defenses, adversary)
    streams = Streams(cfg.seed)
    data, _ = cell_data(cfg, streams)
    chosen = ADVERSARIES.create(cfg.adversary.name, cfg.adversary.params)
    setup = SetUp(input_shape=data.input_shape, num_classes=data.num_classes,
                  population=data.population, num_clients=CLIENTS, seed=0,
                  server_lr=cfg.fl.server_lr)
    factory = chosen.model_factory(model_factory(cfg, data, streams), setup)
    pipeline = Pipeline(build_defenses(cfg))
    chosen.setup_channel(pipeline.channel)
    threat = ThreatModel(channel=pipeline.channel, adversary=chosen)
    sim = Simulation(model_factory=factory, data=data, fl=cfg.fl, pipeline=pipeline,
                     streams=streams, transcript=threat.transcript(rounds=1, wanted=WANTED),
                     choose_clients=chosen.sample)
    return threat, sim.run().transcript


@pytest.fixture(scope="module")
def true_updates() -> dict[int, torch.Tensor]:
    """Every client's update of the round, as a plaintext server reads it."""
    _, transcript = _run([], {"name": "honest_but_curious"})
    updates = transcript.rounds[0].client_updates
    assert updates is not None and len(updates) == CLIENTS
    return updates


def _view(threat: ThreatModel, transcript: Transcript, kind: ViewKind) -> Any:
    """The view the adversary cuts for round 0 (and the clients behind it)."""
    assert kind in threat.open_views()
    made = threat.adversary.cut_view(kind, target_round=0, target_client=None,
                                     transcript=transcript, private=PrivateLog(),
                                     channel=threat.channel)
    assert made is not None
    return made


def _honest_sum(updates: dict[int, torch.Tensor], colluders: list[int]) -> torch.Tensor:
    return sum((u for c, u in updates.items() if c not in colluders), torch.zeros_like(updates[0]))


def test_n_minus_1_colluders_with_the_server_read_the_last_update_through_secagg(
    true_updates: dict[int, torch.Tensor],
) -> None:
    threat, transcript = _run([{"name": "secagg"}], {
        "name": "colluding_clients", "colluders": EVERYONE_ELSE})
    assert isinstance(threat.channel, SecAggChannel)
    step = threat.channel.encoder.step
    view, behind = _view(threat, transcript, ViewKind.CLIENT_UPDATE)
    assert isinstance(view, ClientUpdateView) and view.client_id == 0 and behind == [0]
    # t colluding neighbours unmask its input itself: exact up to its own rounding (a step).
    assert float((view.update - true_updates[0]).abs().max()) <= step
    # The sum minus the colluders' updates is too, up to the rounding of all ten inputs.
    summed, behind = _view(threat, transcript, ViewKind.AGGREGATE)
    assert isinstance(summed, AggregateView) and summed.contributors == (0,) and behind == [0]
    assert float((summed.aggregate - true_updates[0]).abs().max()) <= CLIENTS * step


def test_fewer_than_t_colluders_with_the_server_learn_only_the_honest_sum(
    true_updates: dict[int, torch.Tensor],
) -> None:
    colluders = [1, 2]
    threat, transcript = _run([{"name": "secagg"}], {
        "name": "colluding_clients", "colluders": colluders})
    assert isinstance(threat.channel, SecAggChannel)
    summed, behind = _view(threat, transcript, ViewKind.AGGREGATE)
    assert behind == [c for c in range(CLIENTS) if c not in colluders]
    expected = _honest_sum(true_updates, colluders)
    assert float((summed.aggregate - expected).abs().max()) <= CLIENTS * threat.channel.encoder.step
    with pytest.raises(KeyError, match="leave 8 honest clients in the sum; unmasking it failed"):
        _view(threat, transcript, ViewKind.CLIENT_UPDATE)


@pytest.mark.parametrize("channel", ["paillier", "ckks"])
def test_one_colluding_client_with_the_server_decrypts_every_he_update(
    true_updates: dict[int, torch.Tensor], channel: str,
) -> None:
    threat, transcript = _run([{"name": channel}], {
        "name": "colluding_clients", "colluders": [5]})
    assert not threat.channel.reveals_client_updates  # the server alone reads no update
    view, behind = _view(threat, transcript, ViewKind.CLIENT_UPDATE)
    assert behind == [0]
    assert torch.allclose(view.update.float(), true_updates[0], atol=1e-3)
    honest, _ = _run([{"name": channel}], {"name": "honest_but_curious"})
    assert ViewKind.CLIENT_UPDATE not in honest.open_views()


def test_clients_without_the_server_read_the_last_update_from_the_model_step(
    true_updates: dict[int, torch.Tensor],
) -> None:
    threat, transcript = _run([], {
        "name": "colluding_clients", "colluders": EVERYONE_ELSE, "with_server": False})
    view, _ = _view(threat, transcript, ViewKind.CLIENT_UPDATE)
    scale = float(true_updates[0].abs().max())
    assert float((view.update - true_updates[0]).abs().max()) <= 1e-4 * scale
    fewer, transcript = _run([], {
        "name": "colluding_clients", "colluders": EVERYONE_ELSE[1:], "with_server": False})
    with pytest.raises(KeyError, match="leave 2 honest clients"):
        _view(fewer, transcript, ViewKind.CLIENT_UPDATE)


def test_without_the_server_the_colluders_sum_carries_the_central_noise(
    true_updates: dict[int, torch.Tensor],
) -> None:
    """DP-FedAvg's noise is added by the server: clients see the sum with it, std z·C."""
    dp = {"name": "dp_fedavg", "noise": {"multiplier": 1.0}, "clip_norm": 0.5}
    threat, transcript = _run([dp], {
        "name": "colluding_clients", "colluders": [1, 2], "with_server": False})
    released, _ = _view(threat, transcript, ViewKind.AGGREGATE)
    with_server, server_transcript = _run([dp], {
        "name": "colluding_clients", "colluders": [1, 2]})
    clean, _ = _view(with_server, server_transcript, ViewKind.AGGREGATE)
    noise = released.aggregate - clean.aggregate  # same seeds: the same clipped updates
    assert 0.45 < float(noise.std()) < 0.55


def test_colluders_subtract_their_own_distributed_dp_noise_shares(
    true_updates: dict[int, torch.Tensor],
) -> None:
    """Under distributed DP each client adds a share of the noise (std z·C/√n); nine
    colluders know theirs, so only the last client's share (std z·C/√10) stays on its update,
    not the whole z·C the accountant counts."""
    dp = {"name": "distributed_dp", "noise": {"multiplier": 1.0}, "clip_norm": 1.0}
    threat, transcript = _run([dp], {"name": "colluding_clients", "colluders": EVERYONE_ELSE})
    view, _ = _view(threat, transcript, ViewKind.CLIENT_UPDATE)
    left = float((view.update - true_updates[0]).std())
    assert 0.8 / CLIENTS**0.5 < left < 1.2 / CLIENTS**0.5


def test_a_colluder_that_is_not_a_client_fails_at_set_up() -> None:
    with pytest.raises(ConfigError, match=r"colluders \[12\] are not clients"):
        _run([], {"name": "colluding_clients", "colluders": [1, 12]})


def _cell(defense: str, adversary: dict[str, Any]) -> dict[tuple[str, str], MetricRecord]:
    cfg = _experiment([{"name": defense}] if defense != "none" else [], adversary)
    rows = run_cell(Cell("t", "collusion", defense, 0, cfg))
    assert isinstance(rows[-1], CellRecord) and rows[-1].status == "ok", rows[-1].error
    return {(r.view.value if r.view else "", r.metric): r for r in rows
            if isinstance(r, MetricRecord)}


def test_idlg_inverts_the_last_client_under_secagg_when_the_others_collude() -> None:
    metrics = _cell("secagg", {"name": "colluding_clients", "colluders": EVERYONE_ELSE})
    assert metrics[("client_update", "label_accuracy")].value == 1.0
    psnr = metrics[("client_update", "psnr")].value
    assert psnr is not None and psnr > 30


def test_colluders_with_the_server_of_a_plaintext_channel_are_labelled_moot() -> None:
    metrics = _cell("none", {"name": "colluding_clients", "colluders": [1]})
    assert metrics[("", "adversary_effect")].note.startswith("moot: the channel already shows")


def test_a_server_sampling_only_its_target_and_two_sybils_reads_it_through_secagg(
    true_updates: dict[int, torch.Tensor],
) -> None:
    threat, transcript = _run([{"name": "secagg"}], {
        "name": "sybil_sampling", "target": 0, "sybils": [1, 2]})
    assert transcript.rounds[0].sampled == (0, 1, 2)  # the honest draw had all ten
    view, behind = _view(threat, transcript, ViewKind.CLIENT_UPDATE)
    assert behind == [0]
    assert isinstance(threat.channel, SecAggChannel)
    # Three encoded inputs' rounding at most: the target's own update.
    assert float((view.update - true_updates[0]).abs().max()) <= 3 * threat.channel.encoder.step


def test_a_server_choosing_clients_that_do_not_exist_is_refused() -> None:
    with pytest.raises(ConfigError, match="cannot be one of the sybils"):
        ADVERSARIES.create("sybil_sampling", {"target": 1, "sybils": [1, 2]})
    with pytest.raises(ConfigError, match=r"the target 10 is not a client"):
        _run([], {"name": "sybil_sampling", "target": 10, "sybils": [1, 2]})


def test_the_simulation_refuses_a_server_choice_of_clients_outside_the_federation() -> None:
    cfg = _experiment([], {"name": "honest_but_curious"})
    streams = Streams(cfg.seed)
    data, _ = cell_data(cfg, streams)
    sim = Simulation(model_factory=model_factory(cfg, data, streams), data=data, fl=cfg.fl,
                     pipeline=Pipeline([]), streams=streams, transcript=Transcript(rounds=1),
                     choose_clients=lambda t, drawn: [*drawn, 12])
    with pytest.raises(ValueError, match=r"round 0: the server chose clients \[12\]"):
        sim.run()
