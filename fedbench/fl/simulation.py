"""The simulation loop: rounds of the pipeline in DESIGN.md.

```
w_t ─► sample clients ─► local_training ─► Δ_i = w_i − w_t ─► client_update stages
    ─► channel.encode ─► channel.aggregate ─► server_update stages ─► w_{t+1} = w_t + η·S'/n
```
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from fedbench.config import FLConfig
from fedbench.data.federated import FederatedData
from fedbench.errors import AggregationError, BadClientUpdate
from fedbench.fl.channel import EncodedUpdate, PlaintextChannel, check_update
from fedbench.fl.context import RoundContext, RunInfo
from fedbench.fl.evaluate import evaluate
from fedbench.fl.params import FlatParameters, get_flat, set_flat
from fedbench.fl.pipeline import Pipeline
from fedbench.fl.recipe import TrainingRecipe
from fedbench.fl.sampling import ClientSampler
from fedbench.fl.transcript import RoundRecord, Transcript
from fedbench.seeding import Streams


def recipe_from(fl: FLConfig) -> TrainingRecipe:
    """The public client-training recipe of an FL configuration."""
    return TrainingRecipe(
        algorithm=fl.algorithm,
        batch_size=fl.batch_size,
        local_epochs=fl.local_epochs,
        local_steps=fl.local_steps,
        lr=fl.client_lr,
        momentum=fl.client_momentum,
    )


@dataclass
class PrivateLog:
    """Ground truth the server never sees: which examples each client used in kept rounds.

    Only scoring code reads this.
    """

    used_ids: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    participants: set[int] = field(default_factory=set)


@dataclass
class SimulationResult:
    """The outcome of a run.

    Attributes:
        model: The final global model.
        history: One row per round (metadata, and accuracy/loss on evaluation rounds).
        transcript: What the server saw.
        private: Ground truth for scoring.
        timings: Seconds spent: total, client training, channel encode (clients, including
            per-round set-up) and channel aggregate (server).
    """

    model: nn.Module
    history: list[dict[str, Any]]
    transcript: Transcript
    private: PrivateLog
    timings: dict[str, float]

    @property
    def final_accuracy(self) -> float:
        """Test accuracy after the last round."""
        return float(next(r["accuracy"] for r in reversed(self.history) if "accuracy" in r))


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
        device: Training device.
        progress: Show a progress bar over rounds.
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
        device: str | torch.device = "cpu",
        progress: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.model = model_factory().to(self.device)
        self.worker = model_factory().to(self.device)  # reused by every client in turn
        self._worker_flat = FlatParameters(self.worker)
        self.data = data
        self.fl = fl
        self.pipeline = pipeline
        self.streams = streams
        self.transcript = transcript
        self.progress = progress
        self.recipe = recipe_from(fl)
        self._plaintext = PlaintextChannel()
        self.sampler = ClientSampler(
            num_clients=fl.num_clients,
            expected_clients=fl.expected_clients,
            sampling=fl.sampling,
            streams=streams,
        )
        self.dim = int(get_flat(self.model).numel())
        self.run_info = RunInfo(
            num_clients=fl.num_clients,
            rounds=fl.rounds,
            expected_clients=fl.expected_clients,
            sampling=fl.sampling,
            weighting=fl.weighting,
            recipe=self.recipe,
            client_sizes=tuple(len(c) for c in data.clients),
            dim=self.dim,
            model_factory=model_factory,
            streams=streams,
            device=self.device,
        )
        if len(data.clients) != fl.num_clients:
            raise ValueError(
                f"data has {len(data.clients)} clients, fl.num_clients is {fl.num_clients}"
            )

    def setup(self) -> None:
        """Set up the defense stages and record w_0 (done by ``run``; call it before
        ``run_round`` when driving rounds one at a time)."""
        self.pipeline.setup(self.run_info)
        self.private = PrivateLog()
        self.timings = {
            "total": 0.0, "client_training": 0.0, "channel_encode": 0.0, "channel_aggregate": 0.0
        }
        self.transcript.record_params(get_flat(self.model))

    def run(self) -> SimulationResult:
        """Run all rounds and return the result."""
        self.setup()
        history: list[dict[str, Any]] = []
        start = time.perf_counter()
        bar = tqdm(range(self.fl.rounds), desc="rounds", disable=not self.progress, leave=False)
        for t in bar:
            row = self.run_round(t)
            last = t == self.fl.rounds - 1
            if (t + 1) % self.fl.eval_every == 0 or last:
                row["accuracy"], row["loss"] = evaluate(self.model, self.data.test)
                bar.set_postfix(acc=f"{row['accuracy']:.3f}")
            history.append(row)
            if row.get("failed") and self.fl.on_failed_round == "stop":
                break
        self.timings["total"] = time.perf_counter() - start
        return SimulationResult(self.model, history, self.transcript, self.private, self.timings)

    def run_round(self, t: int) -> dict[str, Any]:
        """Run round ``t`` (after ``setup``): update the global model, record the transcript.

        Returns the round's history row (without evaluation).
        """
        private, timings = self.private, self.timings
        sampled = self.sampler.sample(t)
        ctx = RoundContext(
            round=t,
            sampled=sampled,
            num_clients=self.fl.num_clients,
            expected_clients=self.fl.expected_clients,
            dim=self.dim,
            streams=self.streams,
            device=self.device,
        )
        record = RoundRecord(round=t, sampled=tuple(sampled))
        w_t = get_flat(self.model)
        keep = self.transcript.keeps(t)
        sizes = {c: len(self.data.clients[c]) for c in sampled}
        mean_size = float(np.mean(list(sizes.values()))) if sampled else 1.0
        weights = {
            c: (sizes[c] / mean_size if self.fl.weighting == "weighted" else 1.0) for c in sampled
        }
        messages: dict[int, EncodedUpdate] = {}
        plain: dict[int, EncodedUpdate] = {}
        train_losses = []
        channel = self.pipeline.channel
        tick = time.perf_counter()
        channel.begin_round(ctx)
        timings["channel_encode"] += time.perf_counter() - tick
        try:
            for cid in sampled:
                self._worker_flat.load(w_t)
                tick = time.perf_counter()
                local = self.pipeline.local_training.train(
                    self.worker, self.data.clients[cid], self.recipe, client_id=cid, ctx=ctx
                )
                timings["client_training"] += time.perf_counter() - tick
                train_losses.append(local.loss)
                update = local.params.to(w_t.device) - w_t
                if weights[cid] != 1.0:
                    update = update * weights[cid]
                for stage in self.pipeline.client_stages:
                    update = stage.apply(cid, update, ctx)
                vector = update.detach().cpu().numpy().astype(np.float32, copy=False)
                try:
                    check_update(cid, vector, self.dim)
                    tick = time.perf_counter()
                    messages[cid] = channel.encode(cid, vector)
                    timings["channel_encode"] += time.perf_counter() - tick
                    plain[cid] = EncodedUpdate(cid, vector, vector.nbytes)
                except BadClientUpdate as err:
                    if self.fl.on_bad_update == "abort_round":
                        raise
                    record.dropped[cid] = f"rejected: {err.reason}"
                    continue
                if keep:
                    private.used_ids[(t, cid)] = local.used_ids
            tick = time.perf_counter()
            result = channel.aggregate(messages) if messages else None
            aggregate_seconds = time.perf_counter() - tick
            timings["channel_aggregate"] += aggregate_seconds
            # The same-run baseline: what summing these updates in the clear costs right now.
            tick = time.perf_counter()
            if plain:
                self._plaintext.aggregate(plain)
            plaintext_seconds = time.perf_counter() - tick
        except (AggregationError, BadClientUpdate) as err:
            record.failed = f"{type(err).__name__}: {err}"
            record.params = w_t
            self.transcript.add_round(record)
            self.transcript.record_params(w_t)
            return {"round": t, "sampled": len(sampled), "contributors": 0, "failed": record.failed}

        if result is None:  # nobody sampled (Poisson) or every update was rejected
            total = torch.zeros(self.dim, dtype=torch.float64, device=self.device)
            contributors: tuple[int, ...] = ()
        else:
            total = torch.from_numpy(np.asarray(result.total, dtype=np.float64)).to(self.device)
            contributors = tuple(result.contributors)
            record.dropped.update(result.dropped)
            record.upload_bytes = dict(result.upload_bytes)
            record.download_bytes = dict(result.download_bytes)
        private.participants.update(contributors)
        denominator = float(sum(weights[c] for c in contributors))
        aggregate_seen = total.to(torch.float32)
        for server_stage in self.pipeline.server_stages:
            total, denominator = server_stage.apply(total, denominator, ctx)
        if denominator > 0:
            step = (self.fl.server_lr * total / denominator).to(w_t.dtype)
            set_flat(self.model, w_t + step)
        w_next = get_flat(self.model)

        record.contributors = contributors
        record.num_examples = {c: sizes[c] for c in contributors}
        record.weights = {c: weights[c] for c in contributors}
        if keep:
            record.params = w_t.detach().cpu().clone()
            record.aggregate = aggregate_seen.detach().cpu()
            record.next_params = w_next.detach().cpu().clone()
            if channel.reveals_client_updates:
                record.client_updates = {}
                for c in contributors:
                    revealed = channel.reveal(messages[c])
                    if revealed is not None:
                        record.client_updates[c] = torch.from_numpy(np.array(revealed))
        self.transcript.add_round(record)
        self.transcript.record_params(w_next)
        row: dict[str, Any] = {
            "round": t,
            "sampled": len(sampled),
            "contributors": len(contributors),
            "dropped": len(record.dropped),
            "train_loss": float(np.mean(train_losses)) if train_losses else float("nan"),
            "upload_bytes": int(sum(record.upload_bytes.values())),
            "uploaders": len(record.upload_bytes),
            "aggregate_seconds": aggregate_seconds,
            "plaintext_aggregate_seconds": plaintext_seconds,
        }
        if result is not None:
            row.update({f"channel_{k}": v for k, v in result.stats.items()})
        return row
