"""Continuous noise for DP defenses: seeded for reproducible runs, or from a CSPRNG.

In ``secure`` mode the uniforms come from a CSPRNG: AES-256 in counter mode (OpenSSL, through
``cryptography``) under a fresh key from the operating system (``os.urandom``) for every call, so
the noise cannot be predicted from the experiment seed; Gaussians are then drawn with the
Box–Muller transform in float64. Otherwise the noise comes from a seeded torch generator (each
defense draws from its own named stream, e.g. "dp_fedavg.noise", so stacked defenses never share
noise), and a run can be repeated exactly. Laplace variates invert the CDF of a uniform from
either source.

Example:
    >>> import torch
    >>> noise = gaussian(10_000, std=2.0, generator=torch.Generator().manual_seed(0))
    >>> 1.9 < float(noise.std()) < 2.1
    True
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def secure_uniform(count: int) -> np.ndarray:
    """``count`` uniforms in the open interval (0, 1) from a CSPRNG (53 random bits each)."""
    encryptor = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(bytes(16))).encryptor()
    keystream = encryptor.update(bytes(8 * count))
    words = np.frombuffer(keystream, dtype=np.uint64)
    return ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def _uniform(count: int, generator: torch.Generator | None, secure: bool) -> torch.Tensor:
    if secure:
        return torch.from_numpy(secure_uniform(count))
    if generator is None:
        raise ValueError("noise needs a seeded generator unless secure=True")
    u = torch.rand(count, generator=generator, dtype=torch.float64, device=generator.device)
    # torch.rand is in [0, 1): move 0 inside so that log(u) stays finite
    return u.clamp_min(2.0**-60).cpu()


def gaussian(
    count: int,
    *,
    std: float,
    generator: torch.Generator | None = None,
    secure: bool = False,
) -> torch.Tensor:
    """``count`` draws of N(0, std²) as a float64 tensor."""
    if std < 0 or not math.isfinite(std):
        raise ValueError(f"noise std must be finite and >= 0, got {std}")
    if not secure:
        if generator is None:
            raise ValueError("noise needs a seeded generator unless secure=True")
        seeded = torch.randn(count, generator=generator, dtype=torch.float64,
                             device=generator.device)
        return (seeded * std).cpu()
    pairs = (count + 1) // 2
    u = secure_uniform(2 * pairs)
    radius = np.sqrt(-2.0 * np.log(u[:pairs]))
    angle = 2.0 * math.pi * u[pairs:]
    draws = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count]
    return torch.from_numpy(draws * std)


def laplace(
    count: int,
    *,
    scale: float,
    generator: torch.Generator | None = None,
    secure: bool = False,
) -> torch.Tensor:
    """``count`` draws of Laplace(0, scale) (standard deviation √2·scale) as float64."""
    if scale < 0 or not math.isfinite(scale):
        raise ValueError(f"noise scale must be finite and >= 0, got {scale}")
    u = _uniform(count, generator, secure) - 0.5
    return -scale * torch.sign(u) * torch.log1p(-2.0 * u.abs())
