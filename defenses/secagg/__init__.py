"""Secure aggregation with dropouts: SecAgg (Bonawitz et al., CCS 2017) and SecAgg+ (Bell et al.,
CCS 2020), registered as the ``secagg`` defense, whose channel reveals only the sum.

Modules, one job each:

- :mod:`.ring` – Z/2^b in numpy unsigned integers (the only thing the protocol sums), bit-packed
  on the wire;
- :mod:`.encoding` – float updates ↔ ring vectors: clip, stochastic rounding, headroom check;
- :mod:`.prg` – AES-128-CTR mask expansion into reused buffers;
- :mod:`.keys` – X25519 agreement, HKDF-SHA256 derivation, AES-GCM for shares in transit, GMAC
  tags on masked inputs;
- :mod:`.shamir` – batched Shamir sharing over GF(65537) with commitments (a tampered share is
  found with spare shares, or fails loudly);
- :mod:`.graph` – complete graph or random k-regular Harary graph, choice of k and t;
- :mod:`.protocol` – the message rounds, dropouts, byte counts, authentication, unmasking, and
  the :class:`~.protocol.ServerPolicy` a server consults where the protocol gives it a choice;
- :mod:`.checks` – against a malicious server: signed advertisements (Ed25519), the
  model-consistency check and the consistency-check round's messages and quorum;
- :mod:`.adversary` – a deviating server (:class:`~.adversary.SplitViewServer`), a server with
  colluding clients (:class:`~.adversary.CoalitionServer`), and what colluders see;
- :mod:`.channel` – the ``secagg`` Channel and Defense.

Reusing the protocol with another encoding (e.g. distributed DP): give
:class:`.channel.SecAggChannel` any object with the :class:`.encoding.IntegerEncoder` methods
(``ring``, ``check_headroom``, ``encode``, ``decode``, ``error_bound``), or call
:func:`.protocol.secure_sum` / :class:`.protocol.SecAggRound` directly on ring vectors.
"""
