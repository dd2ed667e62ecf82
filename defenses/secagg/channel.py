"""The ``secagg`` channel: the server learns only the sum of the round's updates.

Each round runs the protocol of :mod:`.protocol` among the sampled clients: the key rounds in
``begin_round``, each client's masked input in ``encode`` and the unmasking in ``aggregate``.
Floats cross into the ring through an :class:`~.encoding.IntegerEncoder`: the ``secagg``
defense uses :class:`~.encoding.FloatQuantizer` (clip, stochastic rounding); distributed DP
passes its own encoder to :class:`SecAggChannel`.

Randomness: the graph seed, the dropout draw and the stochastic rounding come from the
experiment's named streams (``secagg.graph``, ``secagg.dropout``, ``secagg.rounding``), so runs
are reproducible; keys and mask seeds always come from the OS CSPRNG (they never change the
sum, only the masked bytes).

Example:
    >>> defense = SecAgg(neighbours="auto", dropout=0.1, dropout_stage="masked_input")
    >>> defense.channel.reveals_client_updates
    False

    In a config: ``defenses: [{name: secagg, neighbours: auto, bits: 32, quant_bits: 16,
    clip_range: [-0.5, 0.5], dropout: 0.1}]``.

Against a malicious server (:mod:`.checks`): ``consistency_check: true`` runs the signed
consistency-check round, ``model_consistency: true`` binds each client's model hash (read from
``ctx.notes[MODEL_HASHES_NOTE]``, which the harness fills from the broadcast) into its signed
advertisement. Both are off by default; :meth:`SecAggChannel.expect_malicious_server` turns the
consistency check on unless the config set it. :meth:`SecAggChannel.set_adversary` makes the
round's server deviate (a :class:`~.protocol.ServerPolicy` per round) and names colluding
clients; what a deviating server unmasked is in :meth:`SecAggChannel.recovered_updates`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    Strict,
    model_serializer,
    model_validator,
)

from fedbench.defense import Defense
from fedbench.defenses.secagg.adversary import CoalitionServer
from fedbench.defenses.secagg.checks import Checks, signature_quorum
from fedbench.defenses.secagg.encoding import FloatQuantizer, IntegerEncoder
from fedbench.defenses.secagg.graph import Graph, Plan, choose_degree, full_threshold, majority
from fedbench.defenses.secagg.prg import MaskGenerator
from fedbench.defenses.secagg.protocol import SecAggRound, ServerPolicy, Stage
from fedbench.errors import AggregationError, ConfigError
from fedbench.fl.channel import AggregateResult, Channel, EncodedUpdate
from fedbench.fl.context import RoundContext, RunInfo
from fedbench.metrics.base import Metric
from fedbench.params import HalfOpenFraction, ParamBlock
from fedbench.registry import register_defense

Neighbours = Literal["full", "auto"] | Annotated[int, Field(ge=2, multiple_of=2)]
"""'full' (SecAgg), 'auto' (SecAgg+, k from the tolerated fractions) or an even k ≥ 2 (the
degree of a Harary graph)."""
DropoutStage = Literal[
    "advertise_keys", "share_keys", "masked_input", "consistency_check", "unmasking", "random"
]
# t as a fraction of a client's share holders: at most half would let the server collect both
# secrets of a client.
ThresholdFraction = Annotated[float, Field(gt=0.5, le=1, allow_inf_nan=False)]
ToleratedFraction = Annotated[float, Field(ge=0, lt=0.5, allow_inf_nan=False)]
MIN_CLIENTS = 3  # with two, each learns the other's update from the sum and its own
MODEL_HASHES_NOTE = "model_hashes"
"""The ``RoundContext.notes`` key of the round's client → model hash (the broadcast's
``hashes``), read by the model-consistency check."""
ServerPolicyFactory = Callable[[RoundContext], ServerPolicy]
"""Builds the server's policy for one round (e.g. a deviation aimed at one client)."""


class SecAggProtocol(ParamBlock):
    """The secure-aggregation protocol's settings, shared by every defense that masks sums
    (``secagg`` takes them as its own parameters, ``distributed_dp`` as its ``secagg:`` group).

    Attributes:
        neighbours: "full" (SecAgg: everyone masks with everyone), "auto" (SecAgg+: the smallest
            even k that meets the tolerated fractions, see :func:`~.graph.choose_degree`), or an
            even k ≥ 2.
        threshold: t as a fraction of a client's share holders (its neighbours), in (0.5, 1];
            None derives it: a majority, and more than the tolerated corrupt clients.
        dropout: Fraction of the sampled clients that drop out each round (simulated).
        dropout_stage: The protocol stage at which they drop, or "random" (per client).
        tolerated_dropout: δ, the dropout fraction the round must survive (sizes k and checks t).
        tolerated_corruption: γ, the fraction of clients that may collude with the server (also
            sizes the consistency check's signature quorum).
        consistency_check: Run the consistency-check round of the actively secure variant
            (signed survivor sets; clients abort on disagreement), against a malicious server.
        model_consistency: Clients bind the hash of the model they received into their signed
            key advertisement and abort when a neighbour's differs.
    """

    neighbours: Neighbours = "full"
    threshold: ThresholdFraction | None = None
    dropout: HalfOpenFraction = 0.0
    dropout_stage: DropoutStage = "masked_input"
    tolerated_dropout: ToleratedFraction = 0.1
    tolerated_corruption: ToleratedFraction = 0.1
    consistency_check: bool = False
    model_consistency: bool = False

    @model_validator(mode="after")
    def _stage_runs(self) -> SecAggProtocol:
        if self.dropout_stage == "consistency_check" and not self.consistency_check:
            raise ValueError(
                "dropout_stage 'consistency_check' needs consistency_check: true (without the "
                "check that stage does not run)"
            )
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        # The checks are left out unless a config set them, so that every configuration written
        # before they existed keeps its cell id (a hash of the dump), and a check a config set
        # (even to false) survives a round trip through the records.
        dumped: dict[str, object] = handler(self)
        for name in ("consistency_check", "model_consistency"):
            if name not in self.model_fields_set:
                dumped.pop(name, None)
        return dumped

    @property
    def stages(self) -> list[Stage]:
        """The protocol stages a round runs (the consistency check only when enabled)."""
        return [s for s in Stage if s is not Stage.CONSISTENCY_CHECK or self.consistency_check]

    def for_malicious_server(self) -> SecAggProtocol:
        """These settings with the consistency check on, unless the config set it."""
        if "consistency_check" in self.model_fields_set:
            return self
        return self.model_copy(update={"consistency_check": True})


def _slack(bound: float, values: np.ndarray) -> float:
    """``bound`` plus float64 rounding of the decode and of the reference sum."""
    return bound * (1 + 1e-9) + 1e-12 * float(np.max(np.abs(values), initial=1.0))


class SecAggChannel(Channel):
    """Pairwise-masked secure aggregation with dropouts over an integer encoding.

    Args:
        encoder: Float updates ↔ vectors of Z/2^b.
        protocol: The protocol's settings.
    """

    name: ClassVar[str] = "secagg"
    reveals_client_updates: ClassVar[bool] = False

    def __init__(
        self, *, encoder: IntegerEncoder, protocol: SecAggProtocol | None = None
    ) -> None:
        self.encoder = encoder
        self.protocol = protocol or SecAggProtocol()
        self.masks = MaskGenerator(encoder.ring)
        self.history: list[dict[str, float]] = []
        self._ctx: RoundContext | None = None
        self._round: SecAggRound | None = None
        self._abort: str | None = None
        self._abort_error: AggregationError | None = None  # raised as is (e.g. a check's)
        self._reference: np.ndarray | None = None
        self._in_range: np.ndarray | None = None  # Σ of the clipped updates: what is encoded
        self._clipped = 0
        self._values = 0
        self._policy_factory: ServerPolicyFactory | None = None
        self._colluders: frozenset[int] = frozenset()
        self.server_policies: dict[int, ServerPolicy] = {}  # round → the server's policy
        self._kept: frozenset[int] = frozenset()  # clients whose contributions are kept
        self._contributions: dict[int, np.ndarray] = {}

    # -- adversaries ------------------------------------------------------------------------

    def expect_malicious_server(self) -> None:
        """Turn the consistency check on, unless the config set ``consistency_check``."""
        self.protocol = self.protocol.for_malicious_server()

    def set_adversary(
        self, server: ServerPolicyFactory | None = None, colluders: Collection[int] = ()
    ) -> None:
        """Make each round's server follow ``server(ctx)`` (honest when None) and let the
        sampled clients among ``colluders`` hand it every share they hold."""
        self._policy_factory = server
        self._colluders = frozenset(colluders)

    def keep_contributions(self, clients: frozenset[int]) -> None:
        self._kept = frozenset(clients)

    def contribution(self, client_id: int) -> np.ndarray | None:
        """The client's encoded input of this round in float coordinates: its rounding and
        (distributed DP) its noise share, which a colluder knows and subtracts."""
        return self._contributions.get(client_id)

    def recovered_updates(self, round_index: int) -> dict[int, np.ndarray]:
        """Client → the update a deviating server unmasked in round ``round_index`` (decoded
        float64, as clipped and rounded by the encoder); empty when it unmasked none."""
        policy = self.server_policies.get(round_index)
        if not isinstance(policy, CoalitionServer):
            return {}
        return {c: self.encoder.decode(v, 1) for c, v in sorted(policy.recovered.items())}

    # -- planning ---------------------------------------------------------------------------

    def plan(self, clients: int) -> Plan:
        """Degree and threshold for a round of ``clients`` clients."""
        if clients < MIN_CLIENTS:
            raise ConfigError(
                f"secagg: a round needs at least {MIN_CLIENTS} clients, got {clients}"
            )
        protocol = self.protocol
        neighbours = protocol.neighbours
        if neighbours == "auto":
            plan = choose_degree(
                clients, dropout=protocol.tolerated_dropout,
                corruption=protocol.tolerated_corruption,
            )
        elif neighbours == "full" or neighbours >= clients - 1:
            plan = Plan(None, full_threshold(clients, corruption=protocol.tolerated_corruption))
        else:
            plan = Plan(neighbours, majority(neighbours))
        if protocol.threshold is not None:
            holders = plan.degree or clients - 1
            plan = Plan(plan.degree, max(1, math.ceil(protocol.threshold * holders)))
        return plan

    def check(self, run: RunInfo) -> list[str]:
        """Refuse configurations whose sum could wrap or whose threshold cannot be met."""
        most = run.num_clients if run.sampling == "poisson" else round(run.expected_clients)
        try:
            self.encoder.check_headroom(most)
        except ConfigError as err:
            return [str(err), *self.protocol_problems(run)]
        return self.protocol_problems(run)

    def protocol_problems(self, run: RunInfo) -> list[str]:
        """Why the protocol cannot run rounds of this run's size (fixed sampling only: with
        Poisson sampling the round size is known only when it is drawn)."""
        if run.sampling != "fixed":
            return []
        expected = max(round(run.expected_clients), 1)
        try:
            plan = self.plan(expected)
        except ConfigError as err:  # fewer than MIN_CLIENTS
            return [str(err)]
        holders = plan.degree or expected - 1
        tolerated = self.protocol.tolerated_dropout
        survivors = holders - math.ceil(tolerated * holders)
        problems = [] if survivors >= plan.threshold else [
            f"secagg: with {expected} clients per round a client has {holders} share "
            f"holders and needs {plan.threshold}; losing a tolerated_dropout={tolerated} "
            f"fraction of them leaves {survivors}: lower the threshold or tolerated_dropout"
        ]
        return problems + self._quorum_problems(expected)

    def quorum(self, clients: int) -> int:
        """The consistency check's signature quorum for a round of ``clients``."""
        corrupt = math.ceil(self.protocol.tolerated_corruption * clients)
        return signature_quorum(clients, corrupt=min(corrupt, clients - 1))

    def _quorum_problems(self, clients: int) -> list[str]:
        """Whether the tolerated dropouts leave the consistency check its quorum."""
        if not self.protocol.consistency_check:
            return []
        tolerated = self.protocol.tolerated_dropout
        signers = clients - math.ceil(tolerated * clients)
        quorum = self.quorum(clients)
        if signers >= quorum:
            return []
        return [
            f"secagg: consistency_check with {clients} clients per round needs {quorum} "
            f"signatures, but losing a tolerated_dropout={tolerated} fraction leaves {signers}: "
            "lower tolerated_dropout or tolerated_corruption"
        ]

    # -- one round ---------------------------------------------------------------------------

    def begin_round(self, ctx: RoundContext) -> None:
        """Plan the graph, draw the dropouts and run the key rounds among the sampled clients."""
        self._ctx = ctx
        self._round = None
        self._contributions = {}
        self._abort = None
        self._abort_error = None
        self._reference = np.zeros(ctx.dim, dtype=np.float64)
        self._in_range = np.zeros(ctx.dim, dtype=np.float64)
        self._clipped = self._values = 0
        sampled = list(ctx.sampled)
        if len(sampled) < MIN_CLIENTS:
            self._abort = (
                f"round {ctx.round}: secagg needs at least {MIN_CLIENTS} clients, "
                f"{len(sampled)} were sampled"
            )
            return
        try:
            self.encoder.check_headroom(len(sampled))
        except ConfigError as err:
            self._abort = f"round {ctx.round}: {err}"
            return
        plan = self.plan(len(sampled))
        seed = ctx.streams.numpy("secagg.graph", ctx.round).bytes(32)
        graph = Graph.from_plan(sampled, plan, seed=seed)
        hashes = self._model_hashes(ctx)
        if self._abort is not None:
            return
        policy = self._policy(ctx)
        try:
            self._round = SecAggRound(
                sampled,
                ring=self.encoder.ring,
                graph=graph,
                threshold=plan.threshold,
                round_index=ctx.round,
                dropouts=self.draw_dropouts(sampled, ctx),
                masks=self.masks,
                checks=self._checks(len(sampled)),
                model_hashes=hashes,
                server_policy=policy,
                colluders=self._colluders & set(sampled),
            )
        except AggregationError as err:
            self._abort, self._abort_error = str(err), err

    def _checks(self, clients: int) -> Checks:
        protocol = self.protocol
        return Checks(
            consistency=protocol.consistency_check,
            model_consistency=protocol.model_consistency,
            quorum=self.quorum(clients) if protocol.consistency_check else 0,
        )

    def _model_hashes(self, ctx: RoundContext) -> dict[int, str] | None:
        """The round's model hashes, when the model-consistency check needs them."""
        if not self.protocol.model_consistency:
            return None
        hashes = ctx.notes.get(MODEL_HASHES_NOTE)
        missing = sorted(set(ctx.sampled) - set(hashes or {}))
        if hashes is None or missing:
            self._abort = (
                f"round {ctx.round}: secagg: model_consistency needs each sampled client's model "
                f"hash in ctx.notes[{MODEL_HASHES_NOTE!r}]; clients {missing} have none"
            )
            return None
        return {c: str(hashes[c]) for c in ctx.sampled}

    def _policy(self, ctx: RoundContext) -> ServerPolicy | None:
        if self._policy_factory is None:
            return None
        policy = self._policy_factory(ctx)
        self.server_policies[ctx.round] = policy
        return policy

    def _check_rounding(self, total: np.ndarray, bound: float, clients: int) -> None:
        """Refuse a decoded sum further from the clipped updates' sum than rounding can move it:
        the protocol or the encoding lost or corrupted something without raising."""
        assert self._in_range is not None and self._ctx is not None
        error = np.abs(total - self._in_range)
        if error.size and float(error.max()) > _slack(bound, self._in_range):
            worst = int(np.argmax(error))
            raise AggregationError(
                f"round {self._ctx.round}: secagg: the decoded sum of {clients} clients is off "
                f"by {float(error[worst]):.3g} at coordinate {worst} from the sum of their "
                f"clipped updates, above the quantization bound {bound:.3g} (n × step); the "
                "sum is refused"
            )

    def draw_dropouts(self, sampled: list[int], ctx: RoundContext) -> dict[int, Stage]:
        """round(dropout·n) clients, drawn from the ``secagg.dropout`` stream, and their stage."""
        rng = ctx.streams.numpy("secagg.dropout", ctx.round)
        count = round(self.protocol.dropout * len(sampled))
        chosen = rng.choice(np.asarray(sampled), size=count, replace=False)
        # Only the stages that run: without the check, the draws are those of four stages.
        stages = self.protocol.stages
        return {
            int(c): (
                stages[int(rng.integers(len(stages)))]
                if self.protocol.dropout_stage == "random"
                else Stage(self.protocol.dropout_stage)
            )
            for c in chosen
        }

    def encode(self, client_id: int, update: np.ndarray) -> EncodedUpdate:
        """Client side: encode into the ring and mask (no message if the client dropped)."""
        ctx = self._ctx
        if ctx is None:
            raise RuntimeError("secagg: encode called before begin_round")
        rng = ctx.streams.numpy("secagg.rounding", ctx.round, client_id)
        encoded = self.encoder.encode(update, rng)
        message = None if self._round is None else self._round.masked_input(client_id, encoded)
        if message is None:
            return EncodedUpdate(client_id, None, 0)
        self._account(ctx, client_id, update, encoded)
        if client_id in self._kept:
            self._contributions[client_id] = self.encoder.contribution(encoded)
        return EncodedUpdate(client_id, message, message.nbytes)

    def _account(
        self, ctx: RoundContext, client_id: int, update: np.ndarray, encoded: np.ndarray
    ) -> None:
        """Evaluation bookkeeping, never shown to the server or attacks: the exact float sums
        (as sent and as clipped), the clipped-value count, and the client's rounding error
        checked against its bound (a broken encoding fails here, naming the client)."""
        assert self._reference is not None and self._in_range is not None
        in_range, clipped = self.encoder.clip(update)
        bound = self.encoder.error_bound(1)
        if bound is not None:
            error = np.abs(self.encoder.decode(encoded, 1) - in_range)
            if error.size and float(error.max()) > _slack(bound, in_range):
                worst = int(np.argmax(error))
                raise AggregationError(
                    f"round {ctx.round}: secagg: client {client_id}'s encoding is off by "
                    f"{float(error[worst]):.3g} at coordinate {worst}, above the quantization "
                    f"bound {bound:.3g} (one step); the encoder is broken"
                )
        self._reference += update
        self._in_range += in_range
        self._clipped += clipped
        self._values += int(np.size(update))

    def aggregate(self, messages: Mapping[int, EncodedUpdate]) -> AggregateResult:
        """Server side: sum the masked inputs, run the unmasking round, decode."""
        if self._abort_error is not None:
            raise self._abort_error
        if self._abort is not None:
            raise AggregationError(self._abort)
        if self._round is None:
            raise AggregationError("secagg: aggregate called before begin_round")
        inputs = {c: m.payload for c, m in messages.items() if m.payload is not None}
        result = self._round.aggregate(inputs)
        count = len(result.contributors)
        total = self.encoder.decode(result.total, count)
        assert self._reference is not None
        stats = {
            "decode_error_max": float(np.max(np.abs(total - self._reference), initial=0.0)),
            "threshold": float(self._round.setup.threshold),
            "degree": float(self._round.setup.graph.degree),
            "clipped_values": float(self._clipped),
            "clipped_fraction": self._clipped / max(1, self._values),
        }
        bound = self.encoder.error_bound(count)
        if bound is not None:
            stats["quantization_error_bound"] = bound
            if not result.rejected:  # a rejected input is in the reference, not in the sum
                self._check_rounding(total, bound, count)
        self.history.append(stats)
        # Clients missing without a drawn dropout were rejected before encoding; the
        # simulation has already recorded why.
        dropped = {
            c: f"dropped at {stage.value}"
            + (" (input included in the sum)" if stage.order > Stage.MASKED_INPUT.order else "")
            for c, stage in result.dropped.items()
            if c in self._round.dropouts
        }
        # Altered on the way: left out of the sum and unmasked like a dropout.
        dropped.update(result.rejected)
        if result.altered_shares:
            stats["altered_share_holders"] = float(len(result.altered_shares))
        for check, nbytes in result.check_bytes.items():
            stats[f"{check}_bytes"] = float(nbytes)
        return AggregateResult(
            total=total,
            contributors=result.contributors,
            dropped=dropped,
            upload_bytes=result.upload_bytes,
            download_bytes=result.download_bytes,
            stats=stats,
        )


@register_defense("secagg", added=("consistency_check", "model_consistency"))
class SecAgg(Defense):
    """Secure aggregation with dropouts (SecAgg, or SecAgg+ with ``neighbours``) as the channel.

    Updates are clipped to ``clip_range`` per coordinate, quantized to 2^quant_bits levels with
    stochastic rounding and summed modulo 2^bits under pairwise masks; a configuration whose sum
    could wrap is refused with the number of bits it needs. The server sees masked vectors and
    the decoded sum only, so attacks get the aggregate view at best.

    Args:
        neighbours: "full" (SecAgg), "auto" (SecAgg+, k = O(log n) from the tolerated
            fractions) or an even k ≥ 2.
        threshold: t as a fraction of each client's share holders, in (0.5, 1]; None derives it.
        bits: b, the ring Z/2^b the masked sum lives in.
        quant_bits: Quantization levels per coordinate, 2^quant_bits.
        clip_range: (lo, hi) every coordinate is clipped to (after the FedAvg weighting).
        dropout: Fraction of sampled clients that drop out each round (simulated).
        dropout_stage: "advertise_keys", "share_keys", "masked_input", "consistency_check"
            (needs the check), "unmasking" or "random".
        tolerated_dropout: δ the protocol is sized for.
        tolerated_corruption: γ the protocol is sized for.
        consistency_check: Run the consistency-check round (signed survivor sets) against a
            malicious server.
        model_consistency: Clients bind their model's hash into their signed advertisement.

    Example:
        >>> SecAgg(bits=32, quant_bits=16).channel.encoder.step
        3.0518043793392844e-05
    """

    def __init__(
        self,
        *,
        neighbours: Neighbours = "full",
        threshold: ThresholdFraction | None = None,
        bits: int = 32,
        quant_bits: int = 16,
        clip_range: Annotated[tuple[float, float], Strict(False)] = (-1.0, 1.0),
        dropout: HalfOpenFraction = 0.0,
        dropout_stage: DropoutStage = "masked_input",
        tolerated_dropout: ToleratedFraction = 0.1,
        tolerated_corruption: ToleratedFraction = 0.1,
        consistency_check: bool | None = None,
        model_consistency: bool = False,
    ) -> None:
        if dropout_stage == "consistency_check" and not consistency_check:
            raise ConfigError(
                "secagg: dropout_stage 'consistency_check' needs consistency_check: true "
                "(without the check that stage does not run)"
            )
        # None (the default) means off, but not set: a malicious adversary may turn it on.
        explicit = {} if consistency_check is None else {"consistency_check": consistency_check}
        protocol = SecAggProtocol(
            neighbours=neighbours,
            threshold=threshold,
            dropout=dropout,
            dropout_stage=dropout_stage,
            tolerated_dropout=tolerated_dropout,
            tolerated_corruption=tolerated_corruption,
            model_consistency=model_consistency,
            **explicit,
        )
        self.channel: SecAggChannel = SecAggChannel(
            encoder=FloatQuantizer(clip_range=clip_range, quant_bits=quant_bits, bits=bits),
            protocol=protocol,
        )

    def metrics(self) -> list[Metric]:
        """Decoding error and protocol parameters over the rounds that completed."""
        history = self.channel.history
        if not history:
            return []
        metrics = [
            Metric(
                "secagg_decode_error_max",
                max(h["decode_error_max"] for h in history),
                False,
                kind="utility",
                note="max |decoded sum − float sum| over coordinates and rounds "
                "(clipping + stochastic rounding)",
            ),
            Metric("secagg_degree_mean", float(np.mean([h["degree"] for h in history])), None,
                   kind="info", note="neighbours per client (n − 1 for SecAgg)"),
            Metric("secagg_threshold_mean", float(np.mean([h["threshold"] for h in history])),
                   None, kind="info", note="shares needed per client secret"),
        ]
        bounds = [h["quantization_error_bound"] for h in history if "quantization_error_bound" in h]
        if bounds:
            metrics.append(Metric(
                "secagg_quantization_error_bound", max(bounds), False, kind="utility",
                note="n × quantization step: worst case for inputs inside clip_range",
            ))
        return metrics
