"""The ``distributed_dp`` defense: discrete-Gaussian distributed DP under secure aggregation.

It owns the channel: the secure-aggregation protocol of :mod:`fedbench.defenses.secagg` with
:class:`~.distributed.DistributedEncoder` as its integer encoding. Each client clips, rotates,
scales, rounds and adds its discrete Gaussian share before masking; the server unmasks only the
noisy sum, divides it by the expected number of clients (as DP-FedAvg does) and never holds the
noise-free sum. Each round is accounted as a Poisson-sampled Gaussian release whose noise
multiplier is that of the shares the sum actually held (√k·σ_loc/Δ̃): clients that drop before
sending their masked input take their share with them, and ε grows accordingly.

Example:
    >>> defense = DistributedDP(noise_multiplier=1.0, clip_norm=0.5, bits=32)
    >>> defense.channel.reveals_client_updates
    False

    In a config: ``defenses: [{name: distributed_dp, target_epsilon: 8, clip_norm: 1.0}]`` with
    ``fl: {sampling: poisson, weighting: uniform, client_fraction: 0.3}``.
"""

from __future__ import annotations

import math
import statistics
from typing import Literal

import numpy as np
import torch

from fedbench.defenses.base import SECURE_MODE_NOISE, Defense, PrivacyReport
from fedbench.defenses.dp import distributed as dd
from fedbench.defenses.dp.accounting import Accountant, noise_choice
from fedbench.defenses.dp.central import user_level_calibration
from fedbench.defenses.secagg.channel import DropoutStage, Neighbours, SecAggChannel
from fedbench.defenses.secagg.ring import Ring
from fedbench.errors import ConfigError
from fedbench.fl.context import RoundContext, RunInfo
from fedbench.fl.stages import ServerUpdateStage
from fedbench.metrics.base import Metric
from fedbench.registry import register_defense


class DistributedDPChannel(SecAggChannel):
    """Secure aggregation whose encoder needs the round's public rotation before encoding."""

    encoder: dd.DistributedEncoder

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


@register_defense("distributed_dp")
class DistributedDP(Defense):
    """Distributed DP: each client adds a discrete Gaussian share, summed under SecAgg.

    Args:
        noise_multiplier: z of the summed noise (with the expected number of shares) over the
            integer sensitivity; defaults to 1.0 when ``target_epsilon`` is not set either.
        target_epsilon: Choose z so that ε after all rounds, with every share present, is at
            most this (at ``target_delta``).
        target_delta: δ for the ``target_epsilon`` search.
        clip_norm: C, the L2 clip norm of each client update.
        bits: b: the sum lives in Z/2^b (the secure-aggregation ring).
        scale: s, integers per unit; None chooses the largest whose sum cannot wrap. A scale
            whose sum could wrap is refused.
        accountant: "rdp" or "prv" (Opacus).
        secure_mode: Draw the discrete Gaussian noise from the OS CSPRNG.
        neighbours: Secure aggregation graph: "full" (SecAgg), "auto" (SecAgg+) or an even k.
        threshold: Shamir threshold as a fraction of a client's share holders (None derives it).
        dropout: Fraction of sampled clients that drop out each round (simulated).
        dropout_stage: Protocol stage at which they drop ("masked_input": their noise share is
            lost; "unmasking": their input, with its share, is still in the sum).
        tolerated_dropout: Dropout fraction the protocol is sized for.
        tolerated_corruption: Fraction of colluding clients the protocol is sized for.
        allow_insecure: Run even when the sampling is not Poisson or the sum is weighted; ε is
            then marked insecure.

    Example:
        >>> DistributedDP(target_epsilon=4.0).target_epsilon
        4.0
    """

    def __init__(
        self,
        *,
        noise_multiplier: float | None = None,
        target_epsilon: float | None = None,
        target_delta: float = 1e-5,
        clip_norm: float = 1.0,
        bits: int = 32,
        scale: float | None = None,
        accountant: Literal["rdp", "prv"] = "rdp",
        secure_mode: bool = False,
        neighbours: Neighbours = "full",
        threshold: float | None = None,
        dropout: float = 0.0,
        dropout_stage: DropoutStage = "masked_input",
        tolerated_dropout: float = 0.1,
        tolerated_corruption: float = 0.1,
        allow_insecure: bool = False,
    ) -> None:
        noise_multiplier = noise_choice(
            "distributed_dp", noise_multiplier=noise_multiplier, target_epsilon=target_epsilon,
            target_delta=target_delta,
        )
        if not clip_norm > 0:
            raise ConfigError(f"distributed_dp: clip_norm must be positive, got {clip_norm}")
        if not 8 <= bits <= 62:
            # 62: signed int64 sums of the shares must not overflow before reduction.
            raise ConfigError(f"distributed_dp: bits must be in [8, 62], got {bits}")
        if scale is not None and not scale > 0:
            raise ConfigError(f"distributed_dp: scale must be positive, got {scale}")
        self.noise_multiplier = noise_multiplier
        self.target_epsilon = target_epsilon
        self.target_delta = target_delta
        self.clip_norm = clip_norm
        self.bits = bits
        self.scale = scale
        self.accountant_name = accountant
        self.secure_mode = secure_mode
        self.irreproducible = SECURE_MODE_NOISE if secure_mode else None
        self.allow_insecure = allow_insecure
        self.encoder = dd.DistributedEncoder(Ring(bits), secure=secure_mode)
        self.channel: DistributedDPChannel = DistributedDPChannel(
            encoder=self.encoder,
            neighbours=neighbours,
            threshold=threshold,
            dropout=dropout,
            dropout_stage=dropout_stage,
            tolerated_dropout=tolerated_dropout,
            tolerated_corruption=tolerated_corruption,
        )
        self.server_update = ExpectedClientsMean()
        self.sampling_rate = math.nan

    def setup(self, run: RunInfo) -> None:
        self.insecure, self.noise_multiplier = user_level_calibration(
            "distributed_dp", run, allow_insecure=self.allow_insecure,
            noise_multiplier=self.noise_multiplier, target_epsilon=self.target_epsilon,
            target_delta=self.target_delta, accountant=self.accountant_name,
        )
        self.sampling_rate = run.sampling_rate
        most = run.num_clients if run.sampling == "poisson" else round(run.expected_clients)
        self.encoder.configure(dd.plan(
            dim=run.dim,
            clip_norm=self.clip_norm,
            noise_multiplier=self.noise_multiplier,
            expected_clients=run.expected_clients,
            max_clients=most,
            bits=self.bits,
            scale=self.scale,
        ))
        self.channel.history = []
        super().setup(run)

    def _accountant(self, shares: list[int] | list[float]) -> Accountant:
        plan = self.encoder.plan
        accountant = Accountant(self.accountant_name)
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
            accountant=self.accountant_name,
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
