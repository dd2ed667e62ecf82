"""Independent, named random streams derived from one experiment seed.

Each consumer (partition, model init, client sampling, local training, DP noise, attack...) asks
for its own stream by name, optionally keyed by round and client, so adding a consumer or
changing the order of draws never shifts another stream. The global numpy/torch state is never
touched.

Example:
    >>> streams = Streams(7)
    >>> a = streams.numpy("sampling", 3).integers(0, 100)
    >>> a == Streams(7).numpy("sampling", 3).integers(0, 100)
    True
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def _name_key(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


class Streams:
    """Factory of named random generators for one seed.

    Args:
        seed: The experiment seed (a non-negative integer).
    """

    def __init__(self, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.seed = seed

    def sequence(self, name: str, *keys: int) -> np.random.SeedSequence:
        """The seed sequence of stream ``name`` (keyed by e.g. round and client ids)."""
        return np.random.SeedSequence(entropy=self.seed, spawn_key=(_name_key(name), *keys))

    def numpy(self, name: str, *keys: int) -> np.random.Generator:
        """A numpy Generator for stream ``name``."""
        return np.random.default_rng(self.sequence(name, *keys))

    def integer_seed(self, name: str, *keys: int) -> int:
        """A 63-bit integer seed for libraries that take one."""
        # The shift on a Python int: numpy's scalar shift goes through its error-state machinery.
        return int(self.sequence(name, *keys).generate_state(1, dtype=np.uint64)[0]) >> 1

    def torch(self, name: str, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
        """A torch Generator for stream ``name`` on ``device``."""
        generator = torch.Generator(device=device)
        generator.manual_seed(self.integer_seed(name, *keys))
        return generator
