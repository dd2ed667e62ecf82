"""The ``distributed_dp`` defense: discrete-Gaussian distributed DP under secure aggregation.

It owns the channel: the secure-aggregation protocol of :mod:`fedbench.defenses.secagg` with
:class:`~.distributed.DistributedEncoder` as its integer encoding. Each client clips, rotates,
scales, rounds and adds its discrete Gaussian share before masking; the server unmasks only the
noisy sum, divides it by the expected number of clients (as DP-FedAvg does) and never holds the
noise-free sum. Each round is accounted as a Poisson-sampled Gaussian release whose noise
multiplier is that of the shares the sum actually held (√k·σ_loc/Δ̃): clients that drop before
sending their masked input take their share with them, and ε grows accordingly.

Example:
    >>> defense = DistributedDP(noise=GaussianNoise(multiplier=1.0), clip_norm=0.5, bits=32)
    >>> defense.channel.reveals_client_updates
    False

    In a config: ``defenses: [{name: distributed_dp, noise: {target_epsilon: 8}, clip_norm: 1.0,
    secagg: {neighbours: auto}}]`` with
    ``fl: {sampling: poisson, weighting: uniform, client_fraction: 0.3}``.
"""

from __future__ import annotations

import math
import statistics
from typing import Annotated

import numpy as np
import torch
from pydantic import Field

from fedbench.defense import SECURE_MODE_NOISE, Defense, PrivacyReport
from fedbench.defenses.dp import distributed as dd
from fedbench.defenses.dp.accounting import NOISE_MOVED, Accountant, GaussianNoise
from fedbench.defenses.dp.central import user_level_check
from fedbench.defenses.secagg.channel import SecAggChannel, SecAggProtocol
from fedbench.defenses.secagg.ring import Ring
from fedbench.errors import ConfigError
from fedbench.fl.context import RoundContext, RunInfo
from fedbench.fl.stages import ServerUpdateStage
from fedbench.metrics.base import Metric
from fedbench.params import PositiveFloat
from fedbench.registry import register_defense


class DistributedDPChannel(SecAggChannel):
    """Secure aggregation whose encoder needs the round's public rotation before encoding."""

    encoder: dd.DistributedEncoder

    def check(self, run: RunInfo) -> list[str]:
        # The headroom is the encoding plan's (checked by the defense); the protocol's here.
        return self.protocol_problems(run)

    def begin_round(self, ctx: RoundContext) -> None:
        rng = ctx.streams.numpy("distributed_dp.rotation", ctx.round)
        self.encoder.begin_round(dd.rotation_signs(self.encoder.plan.padded, rng))
        super().begin_round(ctx)


class ExpectedClientsMean(ServerUpdateStage):
    """Server side: the noisy sum is divided by the expected number of clients q·N."""

    def apply(
        self, total: torch.Tensor, denominator: float, ctx: RoundContext
    ) -> tuple[torch.Tensor, float]:
        return total, ctx.expected_clients


# Before the nested groups, distributed_dp took the noise and protocol settings flat.
MOVED = {
    **NOISE_MOVED,
    **{name: f"secagg.{name}" for name in (
        "neighbours", "threshold", "dropout", "dropout_stage", "tolerated_dropout",
        "tolerated_corruption",
    )},
}


@register_defense("distributed_dp", moved=MOVED)
class DistributedDP(Defense):
    """Distributed DP: each client adds a discrete Gaussian share, summed under SecAgg.

    Args:
        noise: z of the summed noise (with the expected number of shares) over the integer
            sensitivity, or a target ε after all rounds with every share present; the
            accountant and secure mode (CSPRNG discrete Gaussian noise). See
            :class:`~.accounting.GaussianNoise`.
        clip_norm: C, the L2 clip norm of each client update.
        bits: b: the sum lives in Z/2^b (the secure-aggregation ring).
        scale: s, integers per unit; None chooses the largest whose sum cannot wrap. A scale
            whose sum could wrap is refused.
        secagg: The secure-aggregation protocol the shares are summed under (graph, threshold,
            simulated dropouts: "masked_input" loses the client's noise share, "unmasking"
            keeps its input and share in the sum); see :class:`~fedbench.defenses.secagg.
            channel.SecAggProtocol`.
        allow_insecure: Run even when the sampling is not Poisson or the sum is weighted; ε is
            then marked insecure.

    Example:
        >>> DistributedDP(noise=GaussianNoise(target_epsilon=4.0)).noise.target_epsilon
        4.0
    """

    def __init__(
        self,
        *,
        noise: GaussianNoise = GaussianNoise(),
        clip_norm: PositiveFloat = 1.0,
        bits: Annotated[int, Field(ge=8, le=62)] = 32,  # 62: int64 sums of shares stay exact
        scale: PositiveFloat | None = None,
        secagg: SecAggProtocol = SecAggProtocol(),
        allow_insecure: bool = False,
    ) -> None:
        self.noise = noise
        self.noise_multiplier = noise.start("distributed_dp")
        self.clip_norm = clip_norm
        self.bits = bits
        self.scale = scale
        self.secure_mode = noise.secure_mode
        self.irreproducible = SECURE_MODE_NOISE if noise.secure_mode else None
        self.allow_insecure = allow_insecure
        self.encoder = dd.DistributedEncoder(Ring(bits), secure=noise.secure_mode)
        self.channel: DistributedDPChannel = DistributedDPChannel(
            encoder=self.encoder, protocol=secagg
        )
        self.server_update = ExpectedClientsMean()
        self.sampling_rate = math.nan

    def check(self, run: RunInfo) -> list[str]:
        problems, self.insecure = user_level_check(
            "distributed_dp", run, allow_insecure=self.allow_insecure
        )
        try:
            self._encoding_plan(run, self._calibrated(run))
        except ConfigError as err:  # e.g. a scale or ring whose sum could wrap
            problems.append(str(err))
        return problems + super().check(run)

    def _calibrated(self, run: RunInfo) -> float:
        """z for ``run``: the one given, or the one that meets the target ε."""
        return self.noise.for_run(
            sample_rate=run.sampling_rate, steps=run.rounds, given=self.noise_multiplier
        )

    def _encoding_plan(self, run: RunInfo, noise_multiplier: float) -> dd.Plan:
        """The encoding for ``run`` at noise multiplier z (scale, sensitivity, shares)."""
        most = run.num_clients if run.sampling == "poisson" else round(run.expected_clients)
        return dd.plan(
            dim=run.dim,
            clip_norm=self.clip_norm,
            noise_multiplier=noise_multiplier,
            expected_clients=run.expected_clients,
            max_clients=most,
            bits=self.bits,
            scale=self.scale,
        )

    def prepare(self, run: RunInfo) -> None:
        self.noise_multiplier = self._calibrated(run)
        self.sampling_rate = run.sampling_rate
        self.encoder.configure(self._encoding_plan(run, self.noise_multiplier))
        self.channel.history = []

    def _accountant(self, shares: list[int] | list[float]) -> Accountant:
        plan = self.encoder.plan
        accountant = Accountant(self.noise.accountant)
        for count in shares:
            accountant.step(noise_multiplier=plan.shares_noise_multiplier(count),
                            sample_rate=self.sampling_rate)
        return accountant

    def privacy_spent(self, delta: float) -> PrivacyReport:
        shares = self.encoder.shares
        realised = self._accountant(shares).epsilon(delta)
        planned = self.encoder.plan.expected_clients
        complete = self._accountant([planned] * len(shares)).epsilon(delta)
        note = (
            f"distributed discrete Gaussian under SecAgg; {len(shares)} rounds, noise shares "
            f"per round min {min(shares, default=0)} (planned {planned:g}); with every planned "
            f"share ε would be {complete:.4g}"
        )
        if self.insecure:
            note += f"; INSECURE: {self.insecure}"
        return PrivacyReport(
            epsilon=realised,
            delta=delta,
            accountant=self.noise.accountant,
            secure_mode=self.secure_mode,
            level="user",
            note=note,
        )

    def metrics(self) -> list[Metric]:
        plan = self.encoder.plan
        shares = self.encoder.shares
        out = [
            Metric("noise_multiplier", plan.noise_multiplier, None, kind="privacy",
                   note="accounted z with the planned number of noise shares"),
            Metric("central_noise_std", plan.central_std, None, kind="privacy",
                   note="std of the summed noise, real units, planned shares"),
            Metric("scale", plan.scale, None, kind="info", note="integers per unit"),
            Metric("sensitivity_inflation", plan.sensitivity / (plan.scale * plan.clip_norm),
                   False, kind="info", note="Δ̃ / (s·C): what rounding adds to the sensitivity"),
        ]
        if shares:
            out += [
                Metric("noise_shares_min", min(shares), None, kind="privacy"),
                Metric("noise_shares_mean", statistics.fmean(shares), None, kind="privacy"),
            ]
        errors = [h["decode_error_max"] for h in self.channel.history]
        if errors:
            out.append(Metric(
                "decode_error_max", float(np.max(errors)), False, kind="utility",
                note="max |decoded sum − float sum of the updates|: clipping, rounding, noise",
            ))
        return out
