"""A cell simulated by real Flower (``framework: flower``): what Flower runs for an experiment,
why an experiment cannot run on Flower, and the simulation itself, in a child process.

This module imports no Flower (the pre-run checks and ``mypy`` run without it); the Flower
app is :mod:`fedbench.integrations.flower_app`, run as ``python -m`` in a child process that
sees only the loopback interface (``unshare --net``) where the system allows it, and Ray bound
to 127.0.0.1 either way. The child writes the transcript the
:class:`~fedbench.integrations.flower.TranscriptRecorder` records; the cell then attacks it as
``fedbench attack`` does (:class:`fedbench.harness.replay.FlowerRun`).

Each fedbench defense of the cell stands for the Flower mechanism that does the same:

==================================  =========================================================
fedbench                            Flower
==================================  =========================================================
(none)                              ``FedAvg``
``dp_fedavg`` (z, C)                ``DifferentialPrivacyClientSideFixedClipping(z, C, m)`` and
                                    ``fixedclipping_mod`` on the clients (they clip, the server
                                    noises the mean with std z·C/m); with ``framework:
                                    flower-server-clipping`` the server-side wrapper (the server
                                    reads each raw update, then clips it)
``ldp`` (gaussian, z, C)            ``LocalDpMod(C, sensitivity=C, ε, δ)`` with ε chosen so that
                                    its std C·√(2 ln(1.25/δ))/ε is fedbench's z·C
``secagg`` (k neighbours, t)        ``SecAggPlusWorkflow(num_shares=k + 1, threshold=t)`` and
                                    ``secaggplus_mod`` (``neighbours: full``: every client)
==================================  =========================================================
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal

from fedbench.config import ComponentConfig, ExperimentConfig
from fedbench.errors import ConfigError

#: Supported fedbench defenses (one at most per Flower cell).
SUPPORTED = ("dp_fedavg", "ldp", "secagg")

#: How long one Flower simulation may take before the cell fails.
TIMEOUT_S = 1800


@dataclass(frozen=True)
class CentralDP:
    """Flower's fixed-clipping DP wrapper: who clips, z, C, and m (``num_sampled_clients``)."""

    clipping: Literal["client", "server"]
    noise_multiplier: float
    clipping_norm: float
    num_sampled_clients: int

    @property
    def noise_std(self) -> float:
        """The std Flower adds to each coordinate of the mean (z·C/m)."""
        return self.noise_multiplier * self.clipping_norm / self.num_sampled_clients


@dataclass(frozen=True)
class LocalDP:
    """Flower's ``LocalDpMod`` arguments."""

    clipping_norm: float
    sensitivity: float
    epsilon: float
    delta: float

    @property
    def noise_std(self) -> float:
        """The std LocalDpMod adds to each parameter: sensitivity·√(2 ln(1.25/δ))/ε."""
        return self.sensitivity * math.sqrt(2 * math.log(1.25 / self.delta)) / self.epsilon


@dataclass(frozen=True)
class SecAggPlus:
    """Flower's ``SecAggPlusWorkflow`` arguments (``num_shares`` 1.0: every client)."""

    num_shares: int | float
    reconstruction_threshold: float
    max_weight: float


@dataclass(frozen=True)
class FlowerPlan:
    """What the Flower run of a cell is made of (JSON for the child process).

    Attributes:
        sampled: Clients per round (Flower's ``min_fit_clients``; ``fraction_fit`` = sampled/N).
        uniform: Each client reports ``num_examples`` = 1, so Flower's FedAvg takes an
            unweighted mean (``fl.weighting: uniform``).
        notes: Where Flower's mechanism differs from fedbench's, for the records.
    """

    sampled: int
    uniform: bool
    central_dp: CentralDP | None = None
    local_dp: LocalDP | None = None
    secagg: SecAggPlus | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The plan as the child process reads it."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FlowerPlan:
        """The plan the parent wrote."""
        parts: dict[str, Any] = {"central_dp": CentralDP, "local_dp": LocalDP,
                                 "secagg": SecAggPlus}
        values = {k: (parts[k](**v) if k in parts and v is not None else v)
                  for k, v in data.items()}
        return cls(**values)


def flower_problems(cfg: ExperimentConfig) -> list[str]:
    """Why ``cfg`` cannot run on Flower (empty when it can, or when fedbench simulates it)."""
    if cfg.framework == "fedbench":
        return []
    problems = [p for p in (_installed(), _fl_problem(cfg), _device_problem(cfg)) if p]
    try:
        flower_plan(cfg)
    except ConfigError as err:
        problems.append(str(err))
    return problems


def _installed() -> str | None:
    missing = [name for name in ("flwr", "ray") if find_spec(name) is None]
    if missing:
        return (f"framework flower needs {', '.join(missing)} installed: pip install "
                "'fedbench[flower]'")
    return None


def _fl_problem(cfg: ExperimentConfig) -> str | None:
    fl = cfg.fl
    if fl.sampling == "poisson" and fl.expected_clients < fl.num_clients:
        return ("framework flower: Flower samples a fixed number of clients per round, not "
                "Poisson; set fl.sampling: fixed (or every client: client_fraction 1.0)")
    if fl.server_lr != 1.0:
        return "framework flower: Flower's FedAvg has no server learning rate (fl.server_lr: 1)"
    return None


def _device_problem(cfg: ExperimentConfig) -> str | None:
    if cfg.device != "cpu":
        return f"framework flower: the Flower simulation runs on the CPU (device is {cfg.device})"
    return None


def sampled_clients(cfg: ExperimentConfig) -> int:
    """Clients per round: m, or q·N rounded (every client under Poisson with q = 1)."""
    return max(1, round(cfg.fl.expected_clients))


def flower_plan(cfg: ExperimentConfig) -> FlowerPlan:
    """The Flower mechanism for each of ``cfg``'s defenses.

    Raises:
        ConfigError: A defense (or setting) Flower has no counterpart for.
    """
    names = [d.name for d in cfg.defenses]
    unsupported = [n for n in names if n not in SUPPORTED]
    if unsupported or len(names) > 1:
        raise ConfigError(
            f"framework {cfg.framework}: runs at most one of the defenses "
            f"{', '.join(SUPPORTED)} (Flower's FedAvg, its fixed-clipping DP wrappers, "
            f"LocalDpMod, SecAgg+); got {', '.join(names)}")
    sampled = sampled_clients(cfg)
    plan = FlowerPlan(sampled=sampled, uniform=cfg.fl.weighting == "uniform")
    if not names:
        return plan
    defense = cfg.defenses[0]
    builders = {"dp_fedavg": _central_dp, "ldp": _local_dp, "secagg": _secagg}
    return builders[defense.name](cfg, defense, plan)


def _multiplier(cfg: ExperimentConfig, defense: ComponentConfig) -> float:
    noise = defense.params.get("noise") or {}
    multiplier = noise.get("multiplier")
    if noise.get("target_epsilon") is not None or multiplier is None:
        raise ConfigError(
            f"framework {cfg.framework}: {defense.name} needs noise.multiplier (Flower takes "
            "a noise multiplier, not a target ε)")
    if noise.get("secure_mode"):
        raise ConfigError(
            f"framework {cfg.framework}: {defense.name} noise.secure_mode: Flower draws its "
            "noise from numpy's global generator, it has no secure mode")
    return float(multiplier)


def _central_dp(cfg: ExperimentConfig, defense: ComponentConfig, plan: FlowerPlan) -> FlowerPlan:
    if defense.params.get("adaptive"):
        raise ConfigError(f"framework {cfg.framework}: dp_fedavg adaptive: Flower's adaptive "
                          "clipping wrappers are not mapped (use fixed clipping)")
    server = cfg.framework == "flower-server-clipping"
    dp = CentralDP("server" if server else "client", _multiplier(cfg, defense),
                   float(defense.params["clip_norm"]), plan.sampled)
    notes = [
        "Flower's legacy DifferentialPrivacy*FixedClipping wrappers account no ε; the "
        "ε here is fedbench's accountant over the rounds the transcript records",
        f"noise: N(0, (z·C/m)²) = std {dp.noise_std:.4g} on the mean, from numpy's global "
        "generator (unseeded: the noise differs between runs)",
    ]
    if server:
        notes.append("clipping at the server: the server reads each raw update")
    return FlowerPlan(plan.sampled, plan.uniform, central_dp=dp, notes=notes)


def _local_dp(cfg: ExperimentConfig, defense: ComponentConfig, plan: FlowerPlan) -> FlowerPlan:
    if defense.params.get("mechanism", "gaussian") != "gaussian":
        raise ConfigError(f"framework {cfg.framework}: ldp mechanism laplace: LocalDpMod is "
                          "Gaussian only")
    z = _multiplier(cfg, defense)
    clip = float(defense.params["clip_norm"])
    # Sensitivity C (what LocalDpMod's docs suggest for an update clipped to C) and the
    # run's δ; ε is then whatever makes Flower's std equal fedbench's z·C.
    epsilon = math.sqrt(2 * math.log(1.25 / cfg.delta)) / z
    local = LocalDP(clipping_norm=clip, sensitivity=clip, epsilon=epsilon, delta=cfg.delta)
    notes = [
        f"LocalDpMod(clipping_norm={clip:g}, sensitivity={clip:g}, epsilon={epsilon:.4g}, "
        f"delta={cfg.delta:g}) claims ({epsilon:.4g}, {cfg.delta:g})-DP per update by the "
        "classic Gaussian mechanism, proven only for ε < 1; it composes nothing over rounds "
        "and takes the sensitivity as given (two updates clipped to C differ by up to 2C)",
        f"noise std {local.noise_std:.4g} per parameter from numpy's global generator "
        "(unseeded: the noise differs between runs)",
    ]
    return FlowerPlan(plan.sampled, plan.uniform, local_dp=local, notes=notes)


def _secagg(cfg: ExperimentConfig, defense: ComponentConfig, plan: FlowerPlan) -> FlowerPlan:
    params = defense.params
    neighbours = params.get("neighbours", "full")
    if params.get("dropout", 0.0):
        raise ConfigError(f"framework {cfg.framework}: secagg dropout: Flower's simulation "
                          "drops no client")
    if neighbours == "auto":
        raise ConfigError(f"framework {cfg.framework}: secagg neighbours: auto; give an even "
                          "k (Flower's num_shares is k + 1) or full")
    shares: int | float = 1.0 if neighbours == "full" else int(neighbours) + 1
    threshold = float(params.get("threshold") or 2 / 3)
    largest = 1 if plan.uniform else max(_client_sizes(cfg))
    secagg = SecAggPlus(num_shares=shares, reconstruction_threshold=threshold,
                        max_weight=float(largest))
    notes = ["SecAgg+ quantizes each weighted upload to 2^22 levels over [-8, 8] (Flower's "
             "defaults); the server reads only the unmasked mean"]
    return FlowerPlan(plan.sampled, plan.uniform, secagg=secagg, notes=notes)


def _client_sizes(cfg: ExperimentConfig) -> list[int]:
    """Each client's example count (SecAgg+'s max_weight must bound every weight)."""
    from fedbench.harness.build import cell_data  # the harness imports this module
    from fedbench.seeding import Streams

    data, _ = cell_data(cfg, Streams(cfg.seed))
    return [len(c) for c in data.clients]


# -- running it ----------------------------------------------------------------------------------


def loopback_only() -> list[str]:
    """The command prefix that gives the child only the loopback interface, or none where the
    system allows no network namespace (Ray is bound to 127.0.0.1 either way)."""
    if not (shutil.which("unshare") and shutil.which("ip")):
        return []
    probe = subprocess.run(["unshare", "--net", "--fork", "true"], capture_output=True,
                           check=False)
    if probe.returncode != 0:
        return []
    return ["unshare", "--net", "--fork", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]


def simulate(cfg: ExperimentConfig, folder: Path, *, timeout: float = TIMEOUT_S) -> Path:
    """Run ``cfg`` as a real Flower simulation; the recorded transcript goes to ``folder``.

    Raises:
        RuntimeError: The simulation failed (its output's tail says why).
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    request = folder.parent / f"{folder.name}.request.json"
    request.write_text(json.dumps({"experiment": cfg.model_dump(mode="json"),
                                   "plan": flower_plan(cfg).to_json()}), encoding="utf-8")
    command = [*loopback_only(), sys.executable, "-m", "fedbench.integrations.flower_app",
               str(request), str(folder)]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "FLWR_TELEMETRY_ENABLED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the Flower simulation failed (exit {done.returncode}):\n"
                           f"{(done.stdout + done.stderr)[-3000:]}")
    return folder
