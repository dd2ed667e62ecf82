"""Local DP on updates: each client clips and noises its own update before it leaves the client.

The server (and anyone on the wire) sees only noised updates, so the guarantee needs no trust in
the server. Two neighbouring inputs are any two updates a client could send: both lie in the
clip ball of radius C, so they differ by at most 2C.

- Gaussian: clip to L2 norm C, add N(0, z²C²) per coordinate. One release is a Gaussian
  mechanism with noise multiplier z/2 (sensitivity 2C); releases compose in Opacus' accountant
  with sampling rate 1 (the server knows who took part, so sampling does not amplify).
- Laplace: clip to L1 norm C, add Laplace(zC) per coordinate: pure ε = 2/z per release, and k
  releases compose to k·2/z (basic composition; δ plays no part).

The reported ε is that of the client that took part most often.

Example:
    >>> defense = LocalDP(mechanism="laplace", noise=GaussianNoise(multiplier=4.0))
    >>> defense.epsilon_per_round(1e-5)
    0.5
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Literal

import torch

from fedbench.defense import SECURE_MODE_NOISE, Defense, PrivacyReport
from fedbench.defenses.dp import noise
from fedbench.defenses.dp.accounting import NOISE_MOVED, GaussianNoise, epsilon
from fedbench.defenses.dp.clipping import clip_to_norm
from fedbench.fl.context import RoundContext, RunInfo
from fedbench.fl.stages import ClientUpdateStage
from fedbench.metrics.base import Metric
from fedbench.params import PositiveFloat
from fedbench.registry import register_defense


def clip_l1(update: torch.Tensor, clip_norm: float) -> torch.Tensor:
    """``update`` scaled down to L1 norm at most ``clip_norm``."""
    norm = float(update.double().abs().sum())
    return update if norm <= clip_norm or not math.isfinite(norm) else update * (clip_norm / norm)


class NoiseUpdate(ClientUpdateStage):
    """Client side: clip and noise Δ_i; counts each client's releases."""

    def __init__(self, owner: LocalDP) -> None:
        self.owner = owner

    def apply(self, client_id: int, update: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        owner = self.owner
        scale = owner.noise_multiplier * owner.clip_norm
        generator = None if owner.secure_mode else ctx.generator("ldp.noise", client_id)
        if owner.mechanism == "gaussian":
            clipped, _ = clip_to_norm(update, owner.clip_norm)
            draws = noise.gaussian(update.numel(), std=scale, generator=generator,
                                   secure=owner.secure_mode)
        else:
            clipped = clip_l1(update, owner.clip_norm)
            draws = noise.laplace(update.numel(), scale=scale, generator=generator,
                                  secure=owner.secure_mode)
        owner.releases[client_id] += 1
        return clipped + draws.to(update.device, update.dtype).view_as(update)


@register_defense("ldp", moved=NOISE_MOVED)
class LocalDP(Defense):
    """Local DP: clip each client update and add Gaussian or Laplace noise on the client.

    Args:
        mechanism: "gaussian" (L2 clip, (ε, δ) via Opacus' accountant) or "laplace" (L1 clip,
            pure ε).
        noise: z, the noise std (Gaussian) or scale (Laplace) over the clip norm, or a target
            ε for a client that takes part in every round (at ``noise.target_delta``; pure ε
            for Laplace); the accountant and secure mode (see
            :class:`~.accounting.GaussianNoise`).
        clip_norm: C (L2 for Gaussian, L1 for Laplace).

    Example:
        >>> round(LocalDP(noise=GaussianNoise(multiplier=10.0)).epsilon_per_round(1e-5), 2)
        0.79
    """

    def __init__(
        self,
        *,
        mechanism: Literal["gaussian", "laplace"] = "gaussian",
        noise: GaussianNoise = GaussianNoise(),
        clip_norm: PositiveFloat = 1.0,
    ) -> None:
        self.mechanism = mechanism
        self.noise = noise
        self.noise_multiplier = noise.start("ldp") or math.nan  # NaN until a target is met
        self.clip_norm = clip_norm
        self.accountant_name = noise.accountant
        self.secure_mode = noise.secure_mode
        self.irreproducible = SECURE_MODE_NOISE if noise.secure_mode else None
        self.releases: Counter[int] = Counter()
        self.client_update = NoiseUpdate(self)
        self._delta = 1e-5

    def prepare(self, run: RunInfo) -> None:
        self.releases = Counter()
        target = self.noise.target_epsilon
        if target is None:
            return
        if self.mechanism == "laplace":
            self.noise_multiplier = 2.0 * run.rounds / target  # k releases of 2/z each
        else:  # sensitivity 2C: the mechanism's multiplier is z/2, never amplified by sampling
            self.noise_multiplier = 2.0 * self.noise.for_run(
                sample_rate=1.0, steps=run.rounds, given=None
            )

    def _epsilon(self, releases: int, delta: float) -> float:
        if releases == 0:
            return 0.0
        if self.mechanism == "laplace":
            return releases * 2.0 / self.noise_multiplier
        return epsilon(
            noise_multiplier=self.noise_multiplier / 2.0,  # sensitivity 2C
            sample_rate=1.0,
            steps=releases,
            delta=delta,
            accountant=self.accountant_name,
        )

    def epsilon_per_round(self, delta: float) -> float:
        """ε of one release of one client's update."""
        return self._epsilon(1, delta)

    def privacy_spent(self, delta: float) -> PrivacyReport:
        self._delta = delta
        worst = max(self.releases.values(), default=0)
        accountant = "basic composition (pure ε)" if self.mechanism == "laplace" else (
            self.accountant_name
        )
        return PrivacyReport(
            epsilon=self._epsilon(worst, delta),
            delta=0.0 if self.mechanism == "laplace" else delta,
            accountant=accountant,
            secure_mode=self.secure_mode,
            level="user",
            note=f"local DP ({self.mechanism}); the most frequent client sent {worst} updates",
        )

    def metrics(self) -> list[Metric]:
        delta_note = "pure ε" if self.mechanism == "laplace" else f"δ={self._delta:g}"
        return [
            Metric("epsilon_per_round", self.epsilon_per_round(self._delta), False,
                   kind="privacy", note=f"one client update, {delta_note}"),
            Metric("noise_multiplier", self.noise_multiplier, None, kind="privacy"),
            Metric("max_releases_per_client", max(self.releases.values(), default=0), None,
                   kind="info"),
        ]
