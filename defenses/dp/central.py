"""User-level DP-FedAvg (McMahan et al., ICLR 2018) with fixed or adaptive clipping.

Each sampled client clips its update to norm C (client_update stage); the server adds
N(0, z_Δ²C²) to the unweighted sum and divides by the expected number of clients q·N, not the
number that arrived (server_update stage). Each round is one Poisson-sampled Gaussian release
with noise multiplier z, recorded in an Opacus accountant (see :mod:`.accounting`). With adaptive
clipping (Andrew et al., NeurIPS 2021) the noised clipped-count is released too and the update
noise is raised to z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2); see :mod:`.clipping`.

The accountant assumes Poisson client sampling and an unweighted sum; a run configured otherwise
is refused before it starts unless ``allow_insecure`` is set, and then the ε it reports is marked.

Example:
    >>> defense = DPFedAvg(noise_multiplier=1.0, clip_norm=0.5)
    >>> defense.client_update is not None and defense.server_update is not None
    True

    In a config: ``defenses: [{name: dp_fedavg, noise: {target_epsilon: 8}, clip_norm: 1.0}]``
    with
    ``fl: {sampling: poisson, weighting: uniform, client_fraction: 0.1}``.
"""

from __future__ import annotations

import math

import torch

from fedbench.defense import SECURE_MODE_NOISE, Defense, PrivacyReport
from fedbench.defenses.dp import noise
from fedbench.defenses.dp.accounting import NOISE_MOVED, Accountant, GaussianNoise
from fedbench.defenses.dp.clipping import (
    clip_to_norm,
    next_clip_norm,
    unclipped_fraction,
    update_noise_multiplier,
)
from fedbench.errors import ConfigError
from fedbench.fl.context import RoundContext, RunInfo
from fedbench.fl.stages import ClientUpdateStage, ServerUpdateStage
from fedbench.metrics.base import Metric
from fedbench.params import OpenUnitInterval, PositiveFloat
from fedbench.registry import register_defense

NOTES_KEY = "dp_fedavg.unclipped"


def sampling_mismatch(run: RunInfo) -> list[str]:
    """Why a user-level accountant's assumptions do not hold for ``run`` (empty when they do)."""
    problems = []
    if run.sampling != "poisson":
        problems.append(
            f"fl.sampling is '{run.sampling}', but the accountant assumes Poisson client "
            "sampling (set fl.sampling: poisson)"
        )
    if run.weighting != "uniform":
        problems.append(
            f"fl.weighting is '{run.weighting}', but the sensitivity assumes an unweighted sum "
            "(set fl.weighting: uniform)"
        )
    return problems


def user_level_check(
    name: str, run: RunInfo, *, allow_insecure: bool
) -> tuple[list[str], str | None]:
    """Check a user-level DP run against the accountant's assumptions.

    Returns the problems that refuse the run (empty when it may run) and the reason the run is
    insecure (when a mismatch was explicitly allowed), so that ``check`` can mark it before any
    table is written.
    """
    problems = sampling_mismatch(run)
    if not problems:
        return [], None
    if allow_insecure:
        return [], "; ".join(problems)
    return [
        f"{name}: " + "; ".join(problems)
        + ". Set allow_insecure: true to run anyway with ε marked insecure."
    ], None


class ClipUpdate(ClientUpdateStage):
    """Client side: clip Δ_i to the current clip norm and note whether it was inside it."""

    def __init__(self, owner: DPFedAvg) -> None:
        self.owner = owner

    def apply(self, client_id: int, update: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        clipped, norm = clip_to_norm(update, self.owner.clip_norm)
        ctx.notes.setdefault(NOTES_KEY, {})[client_id] = norm <= self.owner.clip_norm
        return clipped


class GaussianSumNoise(ServerUpdateStage):
    """Server side: add N(0, z_Δ²C²) to the sum, account the round, adapt C, divide by q·N."""

    def __init__(self, owner: DPFedAvg) -> None:
        self.owner = owner

    def apply(
        self, total: torch.Tensor, denominator: float, ctx: RoundContext
    ) -> tuple[torch.Tensor, float]:
        return self.owner.release(total, ctx), ctx.expected_clients


@register_defense("dp_fedavg", moved=NOISE_MOVED)
class DPFedAvg(Defense):
    """User-level DP-FedAvg: clip each client update, Gaussian noise on the sum, RDP/PRV ε.

    Args:
        noise: The accounted Gaussian noise on the sum (z over the clip norm, or a target ε
            for the run's q and T; see :class:`~.accounting.GaussianNoise`). z = 0 clips only.
        clip_norm: C, the L2 clip norm (the initial one with adaptive clipping).
        adaptive: Track C towards ``target_quantile`` of the update norms.
        target_quantile: γ, the quantile of update norms C is moved towards.
        clip_learning_rate: η of the geometric clip update.
        clipped_count_stddev: σ_b of the noise on the clipped count; default m/20 for m
            expected clients per round (Andrew et al.).
        allow_insecure: Run even when the sampling is not Poisson or the sum is weighted; the
            reported ε then assumes Poisson sampling and is marked insecure.

    Example:
        >>> DPFedAvg(noise=GaussianNoise(target_epsilon=8.0)).noise_multiplier is None
        True
    """

    def __init__(
        self,
        *,
        noise: GaussianNoise = GaussianNoise(),
        clip_norm: PositiveFloat = 1.0,
        adaptive: bool = False,
        target_quantile: OpenUnitInterval = 0.5,
        clip_learning_rate: PositiveFloat = 0.2,
        clipped_count_stddev: PositiveFloat | None = None,
        allow_insecure: bool = False,
    ) -> None:
        noise_multiplier = noise.start("dp_fedavg", zero_noise=True)
        if adaptive and noise_multiplier == 0:
            raise ConfigError("dp_fedavg: adaptive clipping needs noise.multiplier > 0")
        self.noise = noise
        self.noise_multiplier = noise_multiplier
        self.initial_clip_norm = clip_norm
        self.clip_norm = clip_norm
        self.adaptive = adaptive
        self.target_quantile = target_quantile
        self.clip_learning_rate = clip_learning_rate
        self.clipped_count_stddev = clipped_count_stddev
        self.secure_mode = noise.secure_mode
        self.irreproducible = SECURE_MODE_NOISE if noise.secure_mode else None
        self.allow_insecure = allow_insecure
        self.accountant = Accountant(noise.accountant)
        self.client_update = ClipUpdate(self)
        self.server_update = GaussianSumNoise(self)
        self.sampling_rate = math.nan
        self.update_noise_multiplier = math.nan
        self.count_stddev = math.nan
        self.clip_history: list[float] = []
        self.unclipped_history: list[float] = []

    def check(self, run: RunInfo) -> list[str]:
        problems, self.insecure = user_level_check(
            "dp_fedavg", run, allow_insecure=self.allow_insecure
        )
        return problems + super().check(run)

    def prepare(self, run: RunInfo) -> None:
        self.noise_multiplier = self.noise.for_run(
            sample_rate=run.sampling_rate, steps=run.rounds, given=self.noise_multiplier
        )
        self.sampling_rate = run.sampling_rate
        self.count_stddev = self.clipped_count_stddev or run.expected_clients / 20
        if self.adaptive:
            try:
                self.update_noise_multiplier = update_noise_multiplier(
                    self.noise_multiplier, clipped_count_stddev=self.count_stddev
                )
            except ValueError as err:
                raise ConfigError(f"dp_fedavg: {err}") from None
        else:
            self.update_noise_multiplier = self.noise_multiplier
        self.accountant = Accountant(self.noise.accountant)
        self.clip_norm = self.initial_clip_norm
        self.clip_history = []
        self.unclipped_history = []

    def _noise(self, count: int, std: float, ctx: RoundContext, key: int) -> torch.Tensor:
        generator = None if self.secure_mode else ctx.generator("dp_fedavg.noise", key)
        return noise.gaussian(count, std=std, generator=generator, secure=self.secure_mode)

    def release(self, total: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        """The noised sum of one round; records the round and moves the clip norm."""
        assert self.noise_multiplier is not None
        std = self.update_noise_multiplier * self.clip_norm
        noised = total + self._noise(total.numel(), std, ctx, 0).to(total.device, total.dtype)
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sampling_rate)
        self.clip_history.append(self.clip_norm)
        bits = ctx.notes.get(NOTES_KEY, {})
        if self.adaptive:
            centred = sum(1.0 if b else 0.0 for b in bits.values()) - len(bits) / 2
            centred += float(self._noise(1, self.count_stddev, ctx, 1)[0])
            fraction = unclipped_fraction(centred, ctx.expected_clients)
            self.unclipped_history.append(fraction)
            self.clip_norm = next_clip_norm(
                self.clip_norm,
                unclipped=fraction,
                target_quantile=self.target_quantile,
                learning_rate=self.clip_learning_rate,
            )
        elif bits:
            # Fixed clipping releases no count; this is the true fraction, for the metrics only.
            self.unclipped_history.append(sum(bits.values()) / len(bits))
        return noised

    def privacy_spent(self, delta: float) -> PrivacyReport:
        z = math.nan if self.noise_multiplier is None else self.noise_multiplier
        note = f"z={z:.4g}, q={self.sampling_rate:.4g}, rounds={self.accountant.steps}"
        if self.insecure:
            note += f"; INSECURE: {self.insecure}"
        return PrivacyReport(
            epsilon=self.accountant.epsilon(delta),
            delta=delta,
            accountant=self.noise.accountant,
            secure_mode=self.secure_mode,
            level="user",
            note=note,
        )

    def metrics(self) -> list[Metric]:
        out = [
            Metric("noise_multiplier", float(self.noise_multiplier or 0.0), None, kind="privacy",
                   note="z given to the accountant"),
            Metric("update_noise_multiplier", float(self.update_noise_multiplier), None,
                   kind="privacy",
                   note="z_Δ on the update sum (> z with adaptive clipping)"),
            Metric("final_clip_norm", float(self.clip_norm), None, kind="info"),
        ]
        if self.unclipped_history:
            out.append(Metric(
                "unclipped_fraction", sum(self.unclipped_history) / len(self.unclipped_history),
                None, kind="info",
                note="noised estimate (adaptive)" if self.adaptive else "true mean over rounds",
            ))
        return out
