"""The simulation loop: rounds of the pipeline in DESIGN.md, each in four phases.

```
broadcast  w_t ─► the model each sampled client receives          (BroadcastPolicy)
client     local_training ─► Δ_i = w_i − w_t ─► weight ─► client_update stages
wire       check ─► channel.encode (or encode_chunk) ─► channel.aggregate ─► failure policy
server     server_update stages ─► w_{t+1} = w_t + η·S'/n
```

``run_round`` composes the phases; the Transcript records what the server saw, the private log
what only scoring may read, a Stopwatch how long each part took. Updates travel from the client
phase to the wire in chunks (the vectorized engine's, or one client of the loop), so that a
channel that encodes chunks sums a thousand clients' updates with a few array operations.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from fedbench.config import FLConfig
from fedbench.data.federated import FederatedData
from fedbench.errors import AggregationError, BadClientUpdate
from fedbench.fl.broadcast import (
    MODEL_HASHES_NOTE,
    Broadcast,
    BroadcastPolicy,
    HonestBroadcast,
    broadcast,
)
from fedbench.fl.channel import (
    ChunkMessages,
    EncodedChunk,
    EncodedUpdate,
    PlaintextChannel,
    check_chunk,
    check_update,
    encodes_chunks,
)
from fedbench.fl.context import RoundContext, RunInfo
from fedbench.fl.engine import Engine, VectorizedClients, choose_engine
from fedbench.fl.evaluate import evaluate
from fedbench.fl.params import FlatParameters, get_flat, set_flat
from fedbench.fl.phases import ClientChunk, RoundSummary, ServerResult, WireResult
from fedbench.fl.pipeline import Pipeline
from fedbench.fl.sampling import ClientSampler
from fedbench.fl.threat import PrivateLog
from fedbench.fl.timing import Stopwatch
from fedbench.fl.transcript import RoundRecord, Transcript
from fedbench.seeding import Streams

#: What an engine yields for the client phase: clients, their updates ([W, d]), losses and
#: examples used.
_Trained = tuple[list[int], torch.Tensor, list[float], list[torch.Tensor]]

#: Repetitions of the plaintext-sum baseline (its fastest is kept).
PLAINTEXT_REPEATS = 5
TIMED = ("total", "client_training", "channel_encode", "channel_aggregate")


@dataclass(frozen=True)
class SimulationResult:
    """The outcome of a run.

    Attributes:
        model: The final global model.
        history: One summary per round (with accuracy/loss on evaluation rounds).
        transcript: What the server saw.
        private: Ground truth for scoring.
        timings: Seconds spent: total, client training, channel encode (clients, including
            per-round set-up) and channel aggregate (server).
        engine: Which engine computed the local training ("loop" or "vectorized").
    """

    model: nn.Module
    history: list[RoundSummary]
    transcript: Transcript
    private: PrivateLog
    timings: dict[str, float]
    engine: Engine = "loop"

    @property
    def final_accuracy(self) -> float:
        """Test accuracy after the last evaluation."""
        return next(r.accuracy for r in reversed(self.history) if r.accuracy is not None)


class Simulation:
    """Federated training with a defense pipeline.

    Args:
        model_factory: Builds a fresh model (called once for the global model; initialised from
            the "model_init" stream by the caller's factory).
        data: Client shards and held-out splits.
        fl: FL settings.
        pipeline: The composed defense stages.
        streams: Named random streams.
        transcript: Where the server's view is recorded.
        broadcaster: Decides the model each client receives (default: w_t for everyone).
        choose_clients: The server's choice of each round's clients given the honest draw,
            ``(round, drawn) -> clients`` (default: the draw; a malicious server may replace it).
        cost_baseline: Time a plaintext sum of every round's updates right after the channel's
            aggregation (the same-run baseline of the aggregation-time ratio).
        device: Training device.
        progress: Show a progress bar over rounds (with clients trained per second).
        chunk_size: Clients the vectorized engine trains at once (default: what fits in
            ``fedbench.fl.engine.CHUNK_BYTES``).

    Raises:
        ConfigError: ``fl.engine`` is "vectorized" where it cannot apply.
    """

    def __init__(
        self,
        *,
        model_factory: Callable[[], nn.Module],
        data: FederatedData,
        fl: FLConfig,
        pipeline: Pipeline,
        streams: Streams,
        transcript: Transcript,
        broadcaster: BroadcastPolicy | None = None,
        choose_clients: Callable[[int, list[int]], list[int]] | None = None,
        cost_baseline: bool = False,
        device: str | torch.device = "cpu",
        progress: bool = False,
        chunk_size: int | None = None,
    ) -> None:
        if len(data.clients) != fl.num_clients:
            raise ValueError(
                f"data has {len(data.clients)} clients, fl.num_clients is {fl.num_clients}"
            )
        self.device = torch.device(device)
        self.model = model_factory().to(self.device)
        self.worker = model_factory().to(self.device)  # reused by every client in turn
        self._worker_flat = FlatParameters(self.worker)
        self.data = data
        self.fl = fl
        self.pipeline = pipeline
        self.streams = streams
        self.transcript = transcript
        self.broadcaster = broadcaster or HonestBroadcast()
        self.choose_clients = choose_clients
        self.cost_baseline = cost_baseline
        self.progress = progress
        self.sampler = ClientSampler(
            num_clients=fl.num_clients,
            expected_clients=fl.expected_clients,
            sampling=fl.sampling,
            streams=streams,
        )
        self.dim = int(get_flat(self.model).numel())
        self.engine: Engine = choose_engine(fl.engine, pipeline, self.worker, data)
        self._vectorized = (
            VectorizedClients(self.worker, data, fl.recipe, pipeline.local_training, chunk_size)
            if self.engine == "vectorized" else None
        )
        # Whether the wire hands the channel whole chunks of updates: where its class encodes
        # chunks and they are the vectorized engine's (the loop's clients come one at a time,
        # and for one row the per-client path's calls are cheaper than array operations).
        self._chunked_wire = self._vectorized is not None and encodes_chunks(pipeline.channel)
        self.run_info = run_info(fl, data, self.dim, model_factory, streams, self.device)
        self._client_sizes = np.array(self.run_info.client_sizes, dtype=np.int64)
        self.private = PrivateLog()
        self.watch = Stopwatch(*TIMED)

    def setup(self) -> None:
        """Set up the defense stages and record w_0 (done by ``run``; call it before
        ``run_round`` when driving rounds one at a time)."""
        self.pipeline.setup(self.run_info)
        self.private = PrivateLog()
        self.watch = Stopwatch(*TIMED)
        self.transcript.record_params(get_flat(self.model))

    def run(self) -> SimulationResult:
        """Run all rounds and return the result."""
        self.setup()
        history: list[RoundSummary] = []
        bar = tqdm(range(self.fl.rounds), desc="rounds", disable=not self.progress, leave=False)
        postfix: dict[str, str] = {}
        clients, tick = 0, time.perf_counter()
        with self.watch.measure("total"):
            for t in bar:
                summary = self.run_round(t)
                clients += summary.sampled
                # Whole rounds (training, channel, server) per second, the rate a user waits on.
                postfix["clients/s"] = f"{clients / max(time.perf_counter() - tick, 1e-9):.0f}"
                if (t + 1) % self.fl.eval_every == 0 or t == self.fl.rounds - 1:
                    accuracy, loss = evaluate(self.model, self.data.test)
                    summary = replace(summary, accuracy=accuracy, loss=loss)
                    postfix["acc"] = f"{accuracy:.3f}"
                bar.set_postfix(postfix)
                history.append(summary)
                if summary.failed and self.fl.on_failed_round == "stop":
                    break
        return SimulationResult(
            self.model, history, self.transcript, self.private, dict(self.watch.totals),
            self.engine,
        )

    def run_round(self, t: int) -> RoundSummary:
        """Run round ``t`` (after ``setup``): update the global model, record the transcript."""
        ctx = self._context(t)
        w_t = get_flat(self.model)
        sent = broadcast(self.broadcaster, w_t, ctx)
        ctx.notes[MODEL_HASHES_NOTE] = dict(sent.hashes)
        try:
            wire = self._wire_phase(self._client_phase(sent, ctx), ctx)
        except (AggregationError, BadClientUpdate) as err:
            return self._failed_round(ctx, sent, w_t, f"{type(err).__name__}: {err}")
        if wire.aggregate is None and wire.rejected:
            # Clients took part but nothing could be summed: not a round the model learnt from.
            why = f"every update was rejected ({len(wire.rejected)} clients)"
            return self._failed_round(ctx, sent, w_t, why, wire.rejected)
        server = self._server_phase(wire, ctx, w_t)
        record = self._record(ctx, sent, wire, server, w_t)
        return _summary(ctx, wire, record)

    # -- phases ------------------------------------------------------------------------------

    def _context(self, t: int) -> RoundContext:
        sampled = self.sampler.sample(t)
        if self.choose_clients is not None:
            sampled = self._chosen(t, sampled)
        return RoundContext(
            round=t,
            sampled=sampled,
            num_clients=self.fl.num_clients,
            expected_clients=self.fl.expected_clients,
            dim=self.dim,
            streams=self.streams,
            device=self.device,
            weights=self._weights(sampled),
        )

    def _chosen(self, t: int, drawn: list[int]) -> list[int]:
        """The server's own choice of clients, checked: ids of clients, each once, sorted."""
        assert self.choose_clients is not None
        chosen = sorted(set(self.choose_clients(t, list(drawn))))
        strangers = [c for c in chosen if not 0 <= c < self.fl.num_clients]
        if strangers:
            raise ValueError(f"round {t}: the server chose clients {strangers}, which are not "
                             f"among the {self.fl.num_clients} clients")
        return chosen

    def _weights(self, sampled: list[int]) -> dict[int, float]:
        """Each sampled client's public aggregation weight (size / mean size, or 1)."""
        if self.fl.weighting != "weighted":
            return dict.fromkeys(sampled, 1.0)
        if not sampled:
            return {}
        # As arrays (the same float64 mean and quotients): one client at a time, these took a
        # third of a millisecond a round at a thousand clients.
        sizes = self._client_sizes[sampled]
        return dict(zip(sampled, (sizes / sizes.mean()).tolist(), strict=True))

    def _client_phase(self, sent: Broadcast, ctx: RoundContext) -> Iterator[ClientChunk]:
        """Each sampled client trains on the model it received; its update is scaled by its
        weight and goes through the client stages.

        Yields a chunk at a time, so that the wire phase encodes each before the next trains
        (one update in memory with the loop engine, as on real devices; a chunk of updates
        with the vectorized engine).
        """
        trained = self._looped(sent, ctx) if self._vectorized is None else self._stacked(
            self._vectorized, sent, ctx
        )
        for clients, updates, losses, used_ids in trained:
            chunk = ClientChunk(clients, _weighted(updates, [ctx.weights[c] for c in clients]),
                                losses, used_ids)
            if self.pipeline.client_stages:
                yield from self._staged(chunk, ctx)
            else:
                yield chunk

    def _looped(self, sent: Broadcast, ctx: RoundContext) -> Iterator[_Trained]:
        """The loop engine: each client trains the worker model with the local_training stage;
        yields it alone, with its update Δ = local − received (as a row)."""
        for cid in ctx.sampled:
            received = sent.models[cid]
            self._worker_flat.load(received)
            with self.watch.measure("client_training"):
                local = self.pipeline.local_training.train(
                    self.worker, self.data.clients[cid], self.fl.recipe, client_id=cid, ctx=ctx
                )
            update = local.params.to(received.device) - received
            yield [cid], update.unsqueeze(0), [local.loss], [local.used_ids]

    def _stacked(
        self, engine: VectorizedClients, sent: Broadcast, ctx: RoundContext
    ) -> Iterator[_Trained]:
        """The vectorized engine: the clients train in chunks of stacked copies; yields each
        chunk with its updates ([W, d])."""
        for chunk in engine.chunks(ctx.sampled):
            with self.watch.measure("client_training"):
                trained = engine.train(chunk, sent.models, ctx)
            yield chunk, trained.updates, trained.losses, trained.used_ids

    def _staged(self, chunk: ClientChunk, ctx: RoundContext) -> Iterator[ClientChunk]:
        """The client stages on each update of ``chunk`` (a stage transforms one client's
        update), stacked again. Where the outputs are not all float vectors of the model's
        size and one dtype, each client travels alone, so that the wire's check names each
        update's problem as it would on its own."""
        outputs = []
        for cid, update in zip(chunk.client_ids, chunk.updates, strict=True):
            for stage in self.pipeline.client_stages:
                update = stage.apply(cid, update, ctx)
            outputs.append(update)
        dtype = outputs[0].dtype
        if all(o.shape == (self.dim,) and o.dtype == dtype for o in outputs):
            yield replace(chunk, updates=torch.stack(outputs))
            return
        for i, cid in enumerate(chunk.client_ids):
            yield ClientChunk([cid], outputs[i].unsqueeze(0), chunk.losses[i : i + 1],
                              chunk.used_ids[i : i + 1])

    def _wire_phase(self, chunks: Iterator[ClientChunk], ctx: RoundContext) -> WireResult:
        """Check, encode and aggregate the updates; apply the bad-update policy.

        The channel boundary: each chunk of updates becomes a float32 numpy array once, here.
        A channel that encodes chunks gets each chunk whole, any other one client at a time.

        Raises:
            AggregationError: The channel cannot produce the sum (the round fails).
            BadClientUpdate: A malformed update under ``on_bad_update: abort_round``.
        """
        channel = self.pipeline.channel
        with self.watch.measure("channel_encode"):
            channel.begin_round(ctx)
        inbox = _Inbox()
        encode = self._encode_chunks if self._chunked_wire else self._encode_each
        messages = encode(chunks, inbox)
        with self.watch.measure("channel_aggregate", cpu=True) as lap:
            aggregate = channel.aggregate(messages) if messages else None
        plaintext = self._plaintext_cpu_seconds(inbox.plain) if self.cost_baseline else None
        return WireResult(messages, inbox.rejected, aggregate, inbox.losses, inbox.used_ids,
                          lap.seconds, lap.cpu_seconds, plaintext, inbox.own)

    def _encode_each(
        self, chunks: Iterator[ClientChunk], inbox: _Inbox
    ) -> dict[int, EncodedUpdate]:
        """The per-client path: each update checked and encoded on its own."""
        channel = self.pipeline.channel
        messages: dict[int, EncodedUpdate] = {}
        for chunk in chunks:
            vectors = self._arrived(chunk, inbox)
            for i, cid in enumerate(chunk.client_ids):
                vector = vectors[i]
                try:
                    check_update(cid, vector, self.dim)
                    # The clock read inline: a context manager per client costs microseconds,
                    # which a thousand clients of a small model notice.
                    tick = time.perf_counter()
                    messages[cid] = channel.encode(cid, vector)
                    self.watch.add("channel_encode", time.perf_counter() - tick)
                except BadClientUpdate as err:
                    self._reject(err, inbox)
                    continue
                inbox.delivered([cid], chunk.used_ids[i : i + 1], vectors[i : i + 1],
                                self.cost_baseline)
        return messages

    def _encode_chunks(self, chunks: Iterator[ClientChunk], inbox: _Inbox) -> ChunkMessages:
        """The chunked path: each chunk checked in one pass, its rejected rows left out, the
        rest encoded at once."""
        channel = self.pipeline.channel
        encoded: list[EncodedChunk] = []
        for chunk in chunks:
            vectors = self._arrived(chunk, inbox)
            clients, used = chunk.client_ids, chunk.used_ids
            errors = check_chunk(clients, vectors, self.dim)
            if errors:
                for err in errors.values():
                    self._reject(err, inbox)
                kept = [i for i in range(len(clients)) if i not in errors]
                clients, used = [clients[i] for i in kept], [used[i] for i in kept]
                vectors = vectors[kept]
            if not clients:
                continue
            tick = time.perf_counter()
            encoded.append(channel.encode_chunk(clients, vectors))
            self.watch.add("channel_encode", time.perf_counter() - tick)
            inbox.delivered(clients, used, vectors, self.cost_baseline)
        return ChunkMessages(encoded)

    def _arrived(self, chunk: ClientChunk, inbox: _Inbox) -> np.ndarray:
        """The chunk's updates as one float32 numpy array; its clients' losses and the
        colluding clients' own updates recorded."""
        inbox.losses.extend(chunk.losses)
        vectors = chunk.updates.detach().cpu().numpy().astype(np.float32, copy=False)
        coalition = self.transcript.coalition
        if coalition is not None:
            for i, cid in enumerate(chunk.client_ids):
                if cid in coalition.members:
                    inbox.own[cid] = vectors[i].copy()  # a chunked engine may reuse the memory
        return vectors

    def _reject(self, err: BadClientUpdate, inbox: _Inbox) -> None:
        """The bad-update policy: abort the round, or leave the client out (recorded)."""
        if self.fl.on_bad_update == "abort_round":
            raise err
        inbox.rejected[err.client_id] = f"rejected: {err.reason}"

    def _server_phase(self, wire: WireResult, ctx: RoundContext, w_t: torch.Tensor) -> ServerResult:
        """Server stages on the decoded sum, then the model step."""
        result = wire.aggregate
        # Nobody sampled (Poisson): not a failure. The server stages still run, so DP-FedAvg
        # releases its noise on the empty sum: skipping the release would reveal that nobody
        # took part, which the accountant's Poisson analysis does not allow for.
        if result is None:
            total = torch.zeros(self.dim, dtype=torch.float64, device=self.device)
            contributors: tuple[int, ...] = ()
        else:
            total = torch.from_numpy(np.asarray(result.total, dtype=np.float64)).to(self.device)
            contributors = tuple(result.contributors)
        denominator = float(sum(map(ctx.weights.__getitem__, contributors)))
        seen = total.to(torch.float32)
        for stage in self.pipeline.server_stages:
            total, denominator = stage.apply(total, denominator, ctx)
        if denominator > 0:
            step = (self.fl.server_lr * total / denominator).to(w_t.dtype)
            set_flat(self.model, w_t + step)
        return ServerResult(contributors, seen, get_flat(self.model), denominator)

    # -- records -----------------------------------------------------------------------------

    def _plaintext_cpu_seconds(self, plain: dict[int, EncodedUpdate]) -> float:
        """The same-run baseline: the CPU time of summing these updates in the clear right
        now, the fastest of a few repetitions (timeit's rule). CPU rather than wall-clock
        time, like the channel's side of the ratio: on a busy machine the wall-clock time of a
        protocol absorbs every preemption while the fastest of five microsecond sums escapes
        them, so identical code measured 3–5× apart (212× → 354× on one secagg cell)."""
        fastest = float("inf")
        for _ in range(PLAINTEXT_REPEATS if plain else 1):
            tick = time.process_time()
            if plain:
                PlaintextChannel().aggregate(plain)
            fastest = min(fastest, time.process_time() - tick)
        self.watch.totals["plaintext_aggregate"] = (
            self.watch.totals.get("plaintext_aggregate", 0.0) + fastest
        )
        return fastest

    def _record(
        self,
        ctx: RoundContext,
        sent: Broadcast,
        wire: WireResult,
        server: ServerResult,
        w_t: torch.Tensor,
    ) -> RoundRecord:
        sizes = {c: self.run_info.client_sizes[c] for c in server.contributors}
        result = wire.aggregate
        record = RoundRecord(
            round=ctx.round,
            sampled=tuple(ctx.sampled),
            model_hashes=sent.hashes,
            contributors=server.contributors,
            dropped=dict(result.dropped) if result else {},
            rejected=dict(wire.rejected),
            upload_bytes=dict(result.upload_bytes) if result else {},
            download_bytes=dict(result.download_bytes) if result else {},
            num_examples=sizes,
            weights={c: ctx.weights[c] for c in server.contributors},
            params=_sent_params(sent, w_t),
            aggregate=server.aggregate,
            next_params=server.next_params,
            denominator=server.denominator,
        )
        self.private.participants.update(server.contributors)
        if self.transcript.keeps(ctx.round):
            for cid, ids in wire.used_ids.items():
                self.private.used_ids[(ctx.round, cid)] = ids
        self.transcript.add_round(record, channel=self.pipeline.channel, messages=wire.messages,
                                  own=wire.coalition_updates)
        self.transcript.record_params(server.next_params)
        return record

    def _failed_round(
        self, ctx: RoundContext, sent: Broadcast, w_t: torch.Tensor, why: str,
        rejected: dict[int, str] | None = None,
    ) -> RoundSummary:
        """A round without an aggregate: recorded as failed, the model unchanged."""
        record = RoundRecord(
            round=ctx.round, sampled=tuple(ctx.sampled), model_hashes=sent.hashes,
            rejected=dict(rejected or {}), failed=why, params=w_t,
        )
        self.transcript.add_round(record, channel=self.pipeline.channel)
        self.transcript.record_params(w_t)
        return RoundSummary(round=ctx.round, sampled=len(ctx.sampled),
                            rejected=dict(record.rejected), failed=why)


@dataclass
class _Inbox:
    """What the wire phase has collected of a round's clients so far.

    Attributes:
        rejected: Clients whose update failed the checks, with why.
        losses: Every trained client's local loss (rejected clients included).
        used_ids: Examples behind each delivered update (ground truth only).
        own: Colluding clients' updates, as they computed them.
        plain: The delivered updates as plaintext messages (the cost baseline's input).
    """

    rejected: dict[int, str] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    used_ids: dict[int, torch.Tensor] = field(default_factory=dict)
    own: dict[int, np.ndarray] = field(default_factory=dict)
    plain: dict[int, EncodedUpdate] = field(default_factory=dict)

    def delivered(self, clients: list[int], used_ids: list[torch.Tensor],
                  vectors: np.ndarray, cost_baseline: bool) -> None:
        """Record updates that passed the checks (``vectors``: one row each)."""
        self.used_ids.update(zip(clients, used_ids, strict=True))
        if cost_baseline:
            self.plain.update((c, EncodedUpdate(c, v, v.nbytes))
                              for c, v in zip(clients, vectors, strict=True))


def _weighted(updates: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """Each row of ``updates`` times its client's weight, in place (the rows are the client
    phase's own, a fresh subtraction; a new chunk-sized array would cost more than the
    product). A float32 row times a Python float is the row times the weight rounded to
    float32, the product this computes; a weight of 1 leaves a row as it is either way."""
    if all(w == 1.0 for w in weights):
        return updates
    if len(weights) == 1:  # the loop's client: a one-element tensor costs more than the row
        return updates.mul_(weights[0])
    scale = torch.tensor(weights, dtype=updates.dtype, device=updates.device)
    return updates.mul_(scale.unsqueeze(1))


def _sent_params(sent: Broadcast, w_t: torch.Tensor) -> torch.Tensor:
    """The w_t of a round's views: the model every client received (a server may send all
    of them something else than its global model, e.g. with an imprint block reset), or the
    global model when clients received different ones (the record's hashes say who got what)."""
    common = sent.common()
    return w_t if common is None else common


def _summary(ctx: RoundContext, wire: WireResult, record: RoundRecord) -> RoundSummary:
    return RoundSummary(
        round=ctx.round,
        sampled=len(ctx.sampled),
        contributors=len(record.contributors),
        dropped=len(record.dropped) + len(record.rejected),
        rejected=dict(record.rejected),
        train_loss=float(np.mean(wire.losses)) if wire.losses else float("nan"),
        upload_bytes=int(sum(record.upload_bytes.values())),
        uploaders=len(record.upload_bytes),
        aggregate_seconds=wire.aggregate_seconds,
        aggregate_cpu_seconds=wire.aggregate_cpu_seconds,
        plaintext_aggregate_cpu_seconds=wire.plaintext_cpu_seconds,
        channel_stats=dict(wire.aggregate.stats) if wire.aggregate else {},
    )


def run_info(
    fl: FLConfig,
    data: FederatedData,
    dim: int,
    model_factory: Callable[[], nn.Module],
    streams: Streams,
    device: torch.device,
) -> RunInfo:
    """The facts of a run every stage's ``check`` and ``setup`` receive."""
    return RunInfo(
        num_clients=fl.num_clients,
        rounds=fl.rounds,
        expected_clients=fl.expected_clients,
        sampling=fl.sampling,
        weighting=fl.weighting,
        recipe=fl.recipe,
        client_sizes=tuple(len(c) for c in data.clients),
        dim=dim,
        model_factory=model_factory,
        streams=streams,
        device=device,
    )
