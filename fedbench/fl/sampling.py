"""Per-round client sampling on its own random stream."""

from __future__ import annotations

import numpy as np

from fedbench.seeding import Streams


class ClientSampler:
    """Draws the clients of each round.

    Args:
        num_clients: N.
        expected_clients: m (fixed) or q·N (Poisson).
        sampling: "fixed" — exactly round(m) clients without replacement; "poisson" — each
            client independently with probability q = expected_clients / N.
        streams: The experiment's streams (stream "sampling", keyed by round).
    """

    def __init__(
        self, *, num_clients: int, expected_clients: float, sampling: str, streams: Streams
    ) -> None:
        if not 0 < expected_clients <= num_clients:
            raise ValueError(
                f"expected_clients must be in (0, {num_clients}], got {expected_clients}"
            )
        if sampling not in ("fixed", "poisson"):
            raise ValueError(f"sampling must be 'fixed' or 'poisson', got {sampling!r}")
        self.num_clients = num_clients
        self.expected_clients = expected_clients
        self.sampling = sampling
        self.streams = streams

    def sample(self, round_index: int) -> list[int]:
        """Sorted ids of the clients sampled in ``round_index``."""
        rng = self.streams.numpy("sampling", round_index)
        if self.sampling == "poisson":
            q = self.expected_clients / self.num_clients
            return np.flatnonzero(rng.random(self.num_clients) < q).tolist()
        m = max(1, round(self.expected_clients))
        if m == self.num_clients:
            return list(range(self.num_clients))
        return sorted(rng.choice(self.num_clients, size=m, replace=False).tolist())
