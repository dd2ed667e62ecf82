"""Norm clipping and adaptive clipping (Andrew et al., NeurIPS 2021) as small pure functions.

Adaptive clipping tracks the clip norm C towards a target quantile γ of the clients' update
norms. Each sampled client reports one bit b_i = [‖Δ_i‖ ≤ C]; the server releases the centred
sum Σ(b_i − ½) + N(0, σ_b²) (sensitivity ½), estimates the unclipped fraction
b̄ = noisy sum / m + ½ with m the expected number of clients, and moves C geometrically:
C ← C·exp(−η·(b̄ − γ)). The count and the update sum are released together, so the noise
multiplier of the update sum is raised to z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2) to keep the combined
release at noise multiplier z.

Example:
    >>> import torch
    >>> clipped, norm = clip_to_norm(torch.tensor([3.0, 4.0]), 1.0)
    >>> clipped.tolist(), norm
    ([0.6000000238418579, 0.800000011920929], 5.0)
    >>> round(update_noise_multiplier(1.0, clipped_count_stddev=5.0), 4)
    1.005
"""

from __future__ import annotations

import math

import torch


def clip_to_norm(update: torch.Tensor, clip_norm: float) -> tuple[torch.Tensor, float]:
    """``update`` scaled down to L2 norm at most ``clip_norm``, and its norm before clipping."""
    if not clip_norm > 0:
        raise ValueError(f"clip_norm must be positive, got {clip_norm}")
    norm = float(torch.linalg.vector_norm(update.double()))
    if norm <= clip_norm or not math.isfinite(norm):
        return update, norm  # a NaN update is rejected later by the round's update check
    return update * (clip_norm / norm), norm


def update_noise_multiplier(noise_multiplier: float, *, clipped_count_stddev: float) -> float:
    """z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2): the update sum's noise multiplier under adaptive clipping.

    Raises:
        ValueError: when 2σ_b <= z, i.e. the count alone would spend the whole budget.
    """
    if not noise_multiplier > 0:
        raise ValueError(f"noise_multiplier must be positive, got {noise_multiplier}")
    if not 2 * clipped_count_stddev > noise_multiplier:
        raise ValueError(
            f"clipped_count_stddev = {clipped_count_stddev:g} is too small for noise_multiplier "
            f"= {noise_multiplier:g}: adaptive clipping needs 2·clipped_count_stddev > "
            "noise_multiplier (raise clipped_count_stddev or clients per round)"
        )
    inverse_square = noise_multiplier**-2 - (2 * clipped_count_stddev) ** -2
    return float(inverse_square**-0.5)


def unclipped_fraction(noisy_centred_count: float, expected_clients: float) -> float:
    """b̄ from the released Σ(b_i − ½) + noise, normalised by the expected number of clients."""
    return noisy_centred_count / expected_clients + 0.5


def next_clip_norm(
    clip_norm: float, *, unclipped: float, target_quantile: float, learning_rate: float
) -> float:
    """Geometric step of the clip norm towards the target quantile of update norms."""
    return clip_norm * math.exp(-learning_rate * (unclipped - target_quantile))
