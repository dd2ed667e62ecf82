"""Who masks with whom: the complete graph (SecAgg) or a random k-regular graph (SecAgg+).

In SecAgg (Bonawitz et al., CCS 2017) every client shares a pairwise mask and its secret shares
with every other client: O(n) work and messages per client. SecAgg+ (Bell et al., CCS 2020)
replaces the complete graph by a random k-regular one with k = O(log n); like Bell et al. we use
a Harary graph (the clients on a cycle, each joined to the k/2 nearest on either side) under a
random relabelling. The relabelling comes from a 32-byte seed that the server commits to
(SHA-256) before the round starts and reveals when it routes keys, so every client recomputes
its own neighbourhood and can check what the server forwards.

:func:`choose_degree` picks the smallest even k and a threshold t for n clients of which a
fraction γ may be corrupt (colluding with the server) and a fraction δ may drop out, such that
by union bounds over the hypergeometric law of one neighbourhood (our derivation, after the
conditions in Bell et al.; not their exact constants):

- privacy: with probability ≥ 1 − 2^-σ no client has t corrupt neighbours (so no coalition can
  reconstruct an honest client's secrets), and no k/2 consecutive clients on the cycle are all
  corrupt or dropped, so the honest survivors stay connected and the server learns only their
  total sum; t also exceeds k/2, so a majority of a client's neighbours is needed;
- correctness: with probability ≥ 1 − 2^-η every client keeps at least t surviving neighbours.

Example:
    >>> graph = Graph.harary(range(10), degree=4, seed=bytes(32))
    >>> sorted(len(graph.neighbours(c)) for c in graph.clients) == [4] * 10
    True
    >>> choose_degree(1000, dropout=0.1, corruption=0.1)
    Plan(degree=52, threshold=28)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy.stats import hypergeom

SEED_BYTES = 32


@dataclass(frozen=True)
class Plan:
    """Neighbourhood size and threshold for one round.

    Attributes:
        degree: k, the number of neighbours of each client; None for the complete graph.
        threshold: t, the number of a client's neighbours needed to reconstruct its secrets.
    """

    degree: int | None
    threshold: int


@dataclass(frozen=True)
class Graph:
    """An undirected graph on the round's clients.

    Build it with :meth:`full` or :meth:`harary`.

    Attributes:
        clients: The vertices, sorted.
        degree: k; ``len(clients) - 1`` for the complete graph.
        seed: The public randomness the relabelling was drawn from (empty for the complete
            graph).
    """

    clients: tuple[int, ...]
    degree: int
    seed: bytes = b""
    _order: tuple[int, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def full(cls, clients: Iterable[int]) -> Graph:
        """The complete graph (SecAgg)."""
        members = tuple(sorted(set(clients)))
        return cls(members, max(len(members) - 1, 0))

    @classmethod
    def harary(cls, clients: Iterable[int], *, degree: int, seed: bytes) -> Graph:
        """A random k-regular Harary graph (SecAgg+); the complete graph when k ≥ n − 1."""
        members = tuple(sorted(set(clients)))
        if degree < 2 or degree % 2:
            raise ValueError(f"the degree of a Harary graph must be even and >= 2, got {degree}")
        if len(seed) != SEED_BYTES:
            raise ValueError(f"the graph seed must be {SEED_BYTES} bytes, got {len(seed)}")
        if degree >= len(members) - 1:
            return cls.full(members)
        digest = hashlib.sha256(b"fedbench/secagg/graph" + seed).digest()
        rng = np.random.default_rng(int.from_bytes(digest, "big"))
        order = tuple(members[i] for i in rng.permutation(len(members)))
        return cls(members, degree, seed, order)

    @classmethod
    def from_plan(cls, clients: Iterable[int], plan: Plan, *, seed: bytes) -> Graph:
        """The graph a :class:`Plan` asks for (``seed`` is ignored for the complete graph)."""
        if plan.degree is None:
            return cls.full(clients)
        return cls.harary(clients, degree=plan.degree, seed=seed)

    @property
    def is_full(self) -> bool:
        """Whether every client neighbours every other."""
        return not self._order

    @property
    def commitment(self) -> bytes:
        """SHA-256 of the seed: published before the round, checked against the revealed seed."""
        return hashlib.sha256(b"fedbench/secagg/graph-commitment" + self.seed).digest()

    @cached_property
    def _position(self) -> dict[int, int]:
        return {client: p for p, client in enumerate(self._order)}

    @cached_property
    def _members(self) -> frozenset[int]:
        return frozenset(self.clients)

    @cached_property
    def _neighbourhoods(self) -> dict[int, frozenset[int]]:
        return {}

    @cached_property
    def _sorted_neighbourhoods(self) -> dict[int, tuple[int, ...]]:
        return {}

    def neighbours(self, client: int) -> frozenset[int]:
        """The neighbours of ``client`` (never the client itself); computed once per client
        (the graph is immutable, and so are the sets it hands out)."""
        known = self._neighbourhoods.get(client)
        if known is not None:
            return known
        if self.is_full:
            if client not in self._members:
                raise KeyError(f"client {client} is not in this round")
            found = self._members - {client}
        else:
            n, half = len(self._order), self.degree // 2
            p = self._position[client]
            found = frozenset(
                self._order[(p + sign * j) % n] for j in range(1, half + 1) for sign in (1, -1)
            )
        self._neighbourhoods[client] = found
        return found

    def sorted_neighbours(self, client: int) -> tuple[int, ...]:
        """:meth:`neighbours` in ascending order, sorted once per client (the server builds a
        roster per client and round in this order)."""
        known = self._sorted_neighbourhoods.get(client)
        if known is None:
            known = self._sorted_neighbourhoods[client] = tuple(sorted(self.neighbours(client)))
        return known


def majority(holders: int) -> int:
    """The smallest t that is more than half of ``holders``."""
    return holders // 2 + 1


def full_threshold(clients: int, *, corruption: float) -> int:
    """t for the complete graph: a majority of the n − 1 holders and more than the ⌊γn⌋
    clients that may be corrupt."""
    holders = clients - 1
    return max(majority(holders), math.floor(corruption * clients) + 1)


def choose_degree(
    clients: int,
    *,
    dropout: float,
    corruption: float,
    security_bits: int = 40,
    correctness_bits: int = 30,
) -> Plan:
    """Smallest even k (and its t) that meet the bounds in the module docstring.

    Falls back to the complete graph (degree None) when no k < n − 1 does.

    Args:
        clients: n.
        dropout: δ, the fraction of clients that may drop out.
        corruption: γ, the fraction of clients that may collude with the server.
        security_bits: σ of the privacy failure probability 2^-σ.
        correctness_bits: η of the abort probability 2^-η.
    """
    if clients < 3:
        raise ValueError(f"secure aggregation needs at least 3 clients, got {clients}")
    if not (0 <= dropout < 1 and 0 <= corruption < 1 and dropout + corruption < 1):
        raise ValueError(
            f"dropout and corruption must be fractions summing below 1, got {dropout}, "
            f"{corruption}"
        )
    n = clients
    corrupt = math.ceil(corruption * n)
    dropped = math.ceil(dropout * n)
    removed = min(n, corrupt + dropped)
    privacy_budget = 2.0**-security_bits / n
    correctness_budget = 2.0**-correctness_bits / n
    for k in range(2, n - 1, 2):
        half = k // 2
        # P(the k/2 clients after a given one on the cycle are all corrupt or dropped).
        gap = math.prod(max(removed - i, 0) / (n - 1 - i) for i in range(half))
        if gap > privacy_budget:
            continue
        t = np.arange(half + 1, k + 1)
        # P(t or more of k random neighbours corrupt) must be negligible ...
        secure = hypergeom.sf(t - 1, n - 1, corrupt, k) <= privacy_budget
        # ... and P(more than k − t neighbours dropped) small enough not to abort.
        live = hypergeom.sf(k - t, n - 1, dropped, k) <= correctness_budget
        ok = np.flatnonzero(secure & live)
        if ok.size:
            return Plan(degree=k, threshold=int(t[ok[0]]))
    return Plan(degree=None, threshold=full_threshold(n, corruption=corruption))
