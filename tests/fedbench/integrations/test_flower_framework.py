"""``framework: flower``: a cell simulated by a real Flower run, recorded and attacked like a
transcript. The fast tests need no Flower; the slow ones run Flower's own simulation (Ray on
127.0.0.1, in a loopback-only network namespace where the system allows one)."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
import torch

from fedbench.config import parse_experiment
from fedbench.errors import ConfigError
from fedbench.fl.transcript_io import META_FILE, TranscriptFile, read_transcript
from fedbench.harness.cell import CellOutput, TranscribedCell, execute_cell
from fedbench.harness.checks import cell_problems
from fedbench.harness.schema import CellRecord, MetricRecord
from fedbench.harness.suite import Cell

#: Every client every round, equal shards, uniform weights: Flower's FedAvg then averages
#: exactly what fedbench's simulation sums (only the float arithmetic differs).
EXPERIMENT: dict[str, Any] = {
    "name": "digits", "data": "digits", "split": {"max_train_examples": 240},
    "model": {"name": "mlp", "hidden": [32]},
    "fl": {"algorithm": "fedavg", "num_clients": 4, "client_fraction": 1.0,
           "sampling": "poisson", "weighting": "uniform", "rounds": 3, "local_epochs": 1,
           "batch_size": 16, "client_lr": 0.1},
    "mia_candidates": 100,
}
DP_FEDAVG = {"name": "dp_fedavg", "noise": {"multiplier": 1.0}, "clip_norm": 0.05}
LDP = {"name": "ldp", "noise": {"multiplier": 0.1}, "clip_norm": 0.5}


def _cell(framework: str, defenses: list[Any] | None = None, **extra: Any) -> Cell:
    cfg = parse_experiment({**EXPERIMENT, **extra, "defenses": defenses or [],
                            "framework": framework})
    label = "+".join(d["name"] for d in defenses or []) or "none"
    return Cell("test", "digits", label, 0, cfg, {"framework": framework})


def test_an_unknown_framework_is_refused_at_load_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="field 'framework' = 'tff'"):
        parse_experiment({**EXPERIMENT, "framework": "tff"})


def test_a_defense_flower_has_no_counterpart_for_is_refused_before_any_work() -> None:
    found = cell_problems([_cell("flower", [{"name": "prune", "ratio": 0.5}]),
                           _cell("flower", [{"name": "ldp", "mechanism": "laplace"}]),
                           _cell("flower", [{**DP_FEDAVG, "noise": {"target_epsilon": 8.0}}]),
                           _cell("flower")])
    problems = {label: "\n".join(p) for label, p in found.items()}
    assert "runs at most one of the defenses dp_fedavg, ldp, secagg" in problems[
        "digits/prune/framework=flower/seed=0"]
    assert "LocalDpMod is Gaussian only" in problems["digits/ldp/framework=flower/seed=0"]
    assert "needs noise.multiplier" in problems["digits/dp_fedavg/framework=flower/seed=0"]
    # A plain FedAvg cell has nothing to refuse but a missing flwr or ray (CI's default run,
    # before the peers extra is installed, has neither).
    plain = problems.get("digits/none/framework=flower/seed=0")
    if any(importlib.util.find_spec(name) is None for name in ("flwr", "ray")):
        assert plain is not None and plain.startswith("framework flower needs ")
        assert plain.endswith("pip install 'fedbench[flower]'")
        assert "\n" not in plain
    else:
        assert plain is None


def test_poisson_sampling_of_a_fraction_is_refused_for_flower() -> None:
    fl = {**EXPERIMENT["fl"], "client_fraction": 0.5}
    (problems,) = cell_problems([_cell("flower", fl=fl)]).values()
    assert any("Flower samples a fixed number of clients" in p for p in problems)


def test_server_clipping_without_central_dp_is_the_plain_flower_cell() -> None:
    assert _cell("flower-server-clipping").id == _cell("flower").id
    assert _cell("flower-server-clipping", [DP_FEDAVG]).id != _cell("flower", [DP_FEDAVG]).id


def test_fedbench_core_imports_no_flower() -> None:
    code = ("import sys, fedbench.cli, fedbench.harness.runner, fedbench.harness.checks, "
            "fedbench.harness.replay, fedbench.integrations.flower_sim; "
            "assert 'flwr' not in sys.modules, 'flwr imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- real Flower ---------------------------------------------------------------------------------

_missing = [m for m in ("flwr", "ray") if find_spec(m) is None]


def needs_flower(test: Callable[..., None]) -> Callable[..., None]:
    """A slow test with real Flower (a simulation is about 40 s here)."""
    skip = pytest.mark.skipif(bool(_missing), reason="needs pip install 'fedbench[flower]'")
    marked: Callable[..., None] = pytest.mark.slow(skip(test))
    return marked


def _run(cell: Cell, tmp: Path) -> tuple[dict[tuple[str, str, str | None], MetricRecord],
                                         TranscriptFile]:
    """The cell's metric rows by (source, metric, view), and its transcript."""
    output: CellOutput = execute_cell(TranscribedCell.of(cell), figures=False)
    final = output.rows[-1]
    assert isinstance(final, CellRecord) and final.status == "ok", final
    for name, data in output.files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data)
    (meta,) = tmp.glob(f"transcripts/*/{META_FILE}")
    rows = {(r.source, r.metric, r.view.value if r.view else None): r
            for r in output.rows if isinstance(r, MetricRecord)}
    return rows, read_transcript(meta.parent)


@needs_flower
def test_membership_auc_on_the_flower_final_model_is_fedbenchs(tmp_path: Path) -> None:
    """Same split, init, batch schedule, local SGD and attack seeds: the two final models agree
    to float rounding (Flower averages float32 models, fedbench sums float64 updates), and
    loss-threshold and LiRA give the same AUC."""
    attacks = [{"name": "loss_threshold"}, {"name": "lira", "num_models": 2}]
    own, own_file = _run(_cell("fedbench", attacks=attacks), tmp_path / "own")
    flower, flower_file = _run(_cell("flower", attacks=attacks), tmp_path / "flower")
    assert flower_file.writer.name == "flower"
    torch.testing.assert_close(flower_file.transcript.final_params,
                               own_file.transcript.final_params, rtol=0, atol=1e-5)
    for attack in ("loss_threshold", "lira"):
        key = (f"attack:{attack}", "mia_auc", "final_model")
        assert flower[key].value == pytest.approx(own[key].value, abs=2e-3), attack
    assert flower[("fl", "accuracy", None)].value == pytest.approx(
        own[("fl", "accuracy", None)].value, abs=1e-2)


def _norms(loaded: TranscriptFile) -> list[float]:
    record = loaded.transcript.rounds[0]
    return [float(loaded.transcript.client_update_view(0, c).update.norm())
            for c in record.contributors]


@needs_flower
def test_client_side_clipping_the_server_reads_only_clipped_updates(tmp_path: Path) -> None:
    """DifferentialPrivacyClientSideFixedClipping + fixedclipping_mod: every update the server
    receives is clipped to C (fedbench's raw ones are longer); Flower claims no ε, fedbench's
    accountant over the recorded rounds gives its own dp_fedavg run's ε."""
    flower, flower_file = _run(_cell("flower", [DP_FEDAVG]), tmp_path / "flower")
    _, own_file = _run(_cell("fedbench"), tmp_path / "own")
    clip = DP_FEDAVG["clip_norm"]
    assert max(_norms(own_file)) > 2 * clip  # so the clip bites
    assert all(n <= clip * (1 + 1e-5) for n in _norms(flower_file))
    dp_own, _ = _run(_cell("fedbench", [DP_FEDAVG]), tmp_path / "dp_own")
    eps = ("defense:dp_fedavg", "epsilon", None)
    assert flower[eps].value == pytest.approx(dp_own[eps].value, rel=1e-9)
    claimed = flower[("defense:dp_fedavg", "flower_epsilon_claimed", None)]
    assert claimed.value is None and "account no ε" in (claimed.note or "")


@needs_flower
def test_localdpmod_noise_is_fedbenchs_and_its_claimed_epsilon_is_not(tmp_path: Path) -> None:
    """LocalDpMod clips to C and adds N(0, σ²) with σ = C·√(2 ln(1.25/δ))/ε, here fedbench's
    z·C. Flower claims ε per update (sensitivity C, no composition); fedbench accounts
    sensitivity 2C over every round a client took part in, and says so in the records."""
    flower, flower_file = _run(_cell("flower", [LDP], fl={**EXPERIMENT["fl"], "rounds": 1}),
                               tmp_path / "flower")
    _, own_file = _run(_cell("fedbench", fl={**EXPERIMENT["fl"], "rounds": 1}),
                       tmp_path / "own")
    clip, z = LDP["clip_norm"], LDP["noise"]["multiplier"]
    for cid in flower_file.transcript.rounds[0].contributors:
        raw = own_file.transcript.client_update_view(0, cid).update
        clipped = raw * min(1.0, clip / float(raw.norm()))
        noise = flower_file.transcript.client_update_view(0, cid).update - clipped
        assert float(noise.std()) == pytest.approx(z * clip, rel=0.05)
    delta = parse_experiment(EXPERIMENT).delta
    claimed = flower[("defense:ldp", "flower_epsilon_claimed", None)].value
    assert claimed == pytest.approx(math.sqrt(2 * math.log(1.25 / delta)) / z)
    accounted = flower[("defense:ldp", "epsilon", None)].value
    assert accounted is not None and claimed is not None and accounted != pytest.approx(claimed)
