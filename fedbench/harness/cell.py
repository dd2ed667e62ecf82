"""Run one cell: build data, model and defenses, simulate, run the attacks, make records."""

from __future__ import annotations

import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import torch
from torch import nn

from fedbench.attacks.base import Attack, AttackerKnowledge, GroundTruth
from fedbench.config import ExperimentConfig
from fedbench.data.federated import FederatedData, federate
from fedbench.data.tensors import TensorData
from fedbench.defenses.base import Defense
from fedbench.errors import DataError
from fedbench.fl.pipeline import Pipeline
from fedbench.fl.simulation import PrivateLog, Simulation, SimulationResult, recipe_from
from fedbench.fl.transcript import Transcript, View, ViewKind
from fedbench.harness.environment import git_commit, host, versions
from fedbench.harness.suite import Cell
from fedbench.metrics.base import Metric
from fedbench.registry import ATTACKS, DATASETS, DEFENSES, MODELS, PARTITIONERS
from fedbench.seeding import Streams


def build_data(cfg: ExperimentConfig, streams: Streams) -> FederatedData:
    """Load and split the experiment's dataset (partition stream)."""
    dataset = DATASETS.create(cfg.data.name, cfg.data.params)
    partitioner = PARTITIONERS.create(cfg.partition.name, cfg.partition.params)
    return federate(
        dataset,
        partitioner=partitioner,
        num_clients=cfg.fl.num_clients,
        test_fraction=cfg.split.test_fraction,
        population_fraction=cfg.split.population_fraction,
        max_train_examples=cfg.split.max_train_examples,
        rng=streams.numpy("partition"),
    )


def model_factory(
    cfg: ExperimentConfig, data: FederatedData, streams: Streams
) -> Callable[[], nn.Module]:
    """A factory that builds the model with the same initialisation every call.

    Initialisation draws from the "model_init" stream inside ``fork_rng``, so torch's global
    random state is left as it was.
    """
    seed = streams.integer_seed("model_init")

    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model: nn.Module = MODELS.create(
                cfg.model.name, cfg.model.params,
                in_shape=data.input_shape, num_classes=data.num_classes,
            )
        return model

    return build


def membership_candidates(
    data: FederatedData, private: PrivateLog, limit: int, rng: np.random.Generator,
    members: TensorData | None = None,
) -> tuple[TensorData, np.ndarray]:
    """Members (examples of clients that contributed) and as many test non-members, shuffled.

    ``members`` replaces the member pool, e.g. by the examples behind the one client update an
    attack sees. The returned records carry renumbered ids (0..n-1) so that ids reveal nothing.
    """
    if members is None:
        members_pool = [data.clients[c] for c in sorted(private.participants)]
        if not members_pool:
            raise ValueError("no client contributed to training, so there are no members")
        members = members_pool[0]
        for part in members_pool[1:]:
            members = members.concat(part)
    count = min(limit, len(members), len(data.test))
    chosen_members = members.subset(rng.choice(len(members), size=count, replace=False))
    chosen_non = data.test.subset(rng.choice(len(data.test), size=count, replace=False))
    both = chosen_members.concat(chosen_non)
    labels = np.concatenate([np.ones(count, dtype=int), np.zeros(count, dtype=int)])
    order = rng.permutation(2 * count)
    shuffled = both.subset(order)
    return TensorData(shuffled.x, shuffled.y, torch.arange(2 * count)), labels[order]


@dataclass(frozen=True)
class Canaries:
    """Canary records and whether each was kept in training (an independent fair coin)."""

    records: TensorData
    included: np.ndarray


def insert_canaries(
    data: FederatedData, count: int, rng: np.random.Generator
) -> tuple[FederatedData, Canaries]:
    """Draw ``count`` canaries from the clients' data; remove those whose coin says "out".

    The coins are flipped before training, so membership is independent of everything the
    training does, as the one-run audit (Steinke, Nasr, Jagielski 2023) requires.
    """
    owner = np.concatenate([np.full(len(c), i) for i, c in enumerate(data.clients)])
    position = np.concatenate([np.arange(len(c)) for c in data.clients])
    if count > len(owner):
        raise DataError(f"canaries: {count} requested but the clients hold {len(owner)} examples")
    chosen = rng.choice(len(owner), size=count, replace=False)
    included = rng.integers(0, 2, size=count)
    removed: dict[int, set[int]] = {}
    for pick, keep in zip(chosen, included, strict=True):
        if not keep:
            removed.setdefault(int(owner[pick]), set()).add(int(position[pick]))
    clients = []
    for i, client in enumerate(data.clients):
        keep_rows = np.array([p for p in range(len(client)) if p not in removed.get(i, set())])
        if len(keep_rows) == 0:
            raise DataError(f"canaries: removing the 'out' canaries leaves client {i} no data")
        clients.append(client.subset(keep_rows))
    records = [data.clients[int(owner[p])].subset(np.array([position[p]])) for p in chosen]
    pooled = records[0]
    for record in records[1:]:
        pooled = pooled.concat(record)
    renumbered = TensorData(pooled.x, pooled.y, torch.arange(count))
    return replace(data, clients=clients), Canaries(renumbered, included.astype(int))


def examples_by_id(data: FederatedData, ids: torch.Tensor) -> TensorData:
    """The client examples with the given global ids, in the order of ``ids``."""
    pool = data.clients[0]
    for part in data.clients[1:]:
        pool = pool.concat(part)
    position = {int(i): p for p, i in enumerate(pool.ids.tolist())}
    return pool.subset(np.array([position[int(i)] for i in ids.tolist()], dtype=np.int64))


@dataclass
class _Planned:
    name: str
    attack: Attack
    view: ViewKind | None


def _view_and_truth(
    plan: _Planned, sim: SimulationResult, data: FederatedData
) -> tuple[View, GroundTruth]:
    transcript = sim.transcript
    round_index = plan.attack.target_round
    if plan.view == ViewKind.CLIENT_UPDATE:
        single = transcript.client_update_view(
            round_index, getattr(plan.attack, "target_client", None)
        )
        ids = sim.private.used_ids[(single.round, single.client_id)]
        return single, GroundTruth(examples=examples_by_id(data, ids))
    if plan.view == ViewKind.AGGREGATE:
        agg = transcript.aggregate_view(round_index)
        ids = torch.cat([sim.private.used_ids[(agg.round, c)] for c in agg.contributors])
        return agg, GroundTruth(examples=examples_by_id(data, ids))
    if plan.view == ViewKind.MODEL_SEQUENCE:
        return transcript.model_sequence_view(), GroundTruth()
    return transcript.final_model_view(), GroundTruth()


class CellRun:
    """Executes one cell and produces its records."""

    def __init__(self, cell: Cell, *, figures_dir: Path | None = None, progress: bool = False):
        self.cell = cell
        self.cfg = cell.config
        self.figures_dir = figures_dir
        self.progress = progress
        self.run_id = uuid.uuid4().hex
        self.rows: list[dict[str, Any]] = []
        self.insecure: list[str] = []
        self.irreproducible: list[str] = []
        self.canaries: Canaries | None = None

    def _row(
        self, metric: Metric, *, source: str, attack: str | None = None, view: str | None = None,
        status: str = "ok",
    ) -> None:
        self.rows.append({
            "type": "metric",
            "run": self.run_id,
            **self.cell.keys(),
            "source": source,
            "attack": attack,
            "view": view,
            "metric": metric.name,
            "value": None if metric.value is None else float(metric.value),
            "higher_is_better": metric.higher_is_better,
            "kind": metric.kind,
            "unit": metric.unit,
            "note": metric.note,
            "timing": metric.timing,
            "status": status,
        })

    def execute(self) -> list[dict[str, Any]]:
        """Run the cell; always returns rows ending with the ``cell`` row (ok or failed)."""
        started = time.time()
        tick = time.perf_counter()
        status, error, trace = "ok", None, None
        threads = torch.get_num_threads()
        torch.set_num_threads(self.cfg.threads)
        try:
            self._execute()
        except Exception as err:  # a failed cell is recorded, and reruns on resume
            status = "failed"
            error = "".join(traceback.format_exception_only(type(err), err)).strip()
            trace = traceback.format_exc()[-4000:]
            self.rows = []
        finally:
            torch.set_num_threads(threads)
        insecure = "; ".join(self.insecure) or None
        irreproducible = "; ".join(self.irreproducible) or None
        for row in self.rows:
            row["insecure"] = insecure
            row["irreproducible"] = irreproducible
        self.rows.append({
            "type": "cell",
            "run": self.run_id,
            **self.cell.keys(),
            "label": self.cell.label,
            "status": status,
            "error": error,
            "traceback": trace,
            "insecure": insecure,
            "irreproducible": irreproducible,
            "config": self.cfg.model_dump(mode="json"),
            "seeds": {"seed": self.cfg.seed},
            "versions": versions(),
            "git_commit": git_commit(),
            "host": host(),
            "started": started,
            "duration_s": time.perf_counter() - tick,
        })
        return self.rows

    def _execute(self) -> None:
        cfg = self.cfg
        streams = Streams(cfg.seed)
        data = build_data(cfg, streams)
        if cfg.canaries:
            data, self.canaries = insert_canaries(data, cfg.canaries, streams.numpy("canaries"))
        factory = model_factory(cfg, data, streams)
        defenses: list[tuple[str, Defense]] = [
            (d.name, DEFENSES.create(d.name, d.params)) for d in cfg.defenses
        ]
        self.insecure = [f"{n}: {d.insecure}" for n, d in defenses if d.insecure]
        self.irreproducible = [f"{n}: {d.irreproducible}" for n, d in defenses if d.irreproducible]
        pipeline = Pipeline(defenses)
        plans = [_Planned(a.name, ATTACKS.create(a.name, a.params), None) for a in cfg.attacks]
        reveals = pipeline.channel.reveals_client_updates
        open_views = Transcript(rounds=cfg.fl.rounds, reveals_client_updates=reveals).open_views()
        for plan in plans:
            plan.view = plan.attack.choose_view(open_views)
        per_round = {ViewKind.CLIENT_UPDATE, ViewKind.AGGREGATE}
        transcript = Transcript(
            rounds=cfg.fl.rounds,
            keep_rounds={p.attack.target_round for p in plans if p.view in per_round},
            keep_model_sequence=any(p.view == ViewKind.MODEL_SEQUENCE for p in plans),
            reveals_client_updates=reveals,
        )
        sim = Simulation(
            model_factory=factory, data=data, fl=cfg.fl, pipeline=pipeline, streams=streams,
            transcript=transcript, device=cfg.device, progress=self.progress,
        ).run()
        self._run_metrics(sim, data)
        for name, defense in defenses:
            self._defense_metrics(name, defense)
        for index, plan in enumerate(plans):
            self._attack(index, plan, sim, data, factory, streams)

    def _run_metrics(self, sim: SimulationResult, data: FederatedData) -> None:
        history = sim.history
        last_eval = next(r for r in reversed(history) if "accuracy" in r)
        failed = sum(1 for r in history if r.get("failed"))
        completed = len(history) - failed
        contributions = sum(r.get("contributors", 0) for r in history)
        upload = sum(r.get("upload_bytes", 0) for r in history)
        # Per client that sent anything: dropped clients' protocol messages count for them.
        uploaders = sum(r.get("uploaders", 0) for r in history)
        dim = sim.transcript.final_params.numel() if sim.transcript.final_params is not None else 0
        # Against the plaintext sum of the same updates, timed right after each round's
        # aggregation: same data, same machine, same moment.
        # Medians over the completed rounds: one round preempted by another process (cells
        # share the machine under --jobs) must not decide a ratio of millisecond timings.
        timed = [r for r in history if not r.get("failed") and "aggregate_seconds" in r]
        aggregated = median(r["aggregate_seconds"] for r in timed) if timed else 0.0
        plain = median(r["plaintext_aggregate_seconds"] for r in timed) if timed else 0.0

        def ratio(num: float, den: float) -> float | None:
            return num / den if den > 0 else None

        why = "" if completed and uploaders else "not measurable: no round completed"
        per_client = ratio(upload, uploaders)
        for metric in (
            Metric("accuracy", last_eval["accuracy"], True, kind="utility"),
            Metric("test_loss", last_eval["loss"], False, kind="utility"),
            Metric("rounds_failed", failed, False, kind="utility"),
            Metric("clients_dropped", sum(r.get("dropped", 0) for r in history), False,
                   kind="utility"),
            Metric("upload_bytes_per_client", per_client, False, kind="cost", unit="bytes",
                   note=why),
            Metric("upload_bytes_per_param", ratio(per_client or 0.0, dim) if per_client else None,
                   False, kind="cost", unit="bytes", note=why),
            Metric("aggregate_seconds_per_round", ratio(sim.timings["channel_aggregate"],
                                                        completed),
                   False, kind="cost", unit="s", timing=True, note=why),
            Metric("aggregation_time_ratio", ratio(aggregated, plain), False,
                   kind="cost", unit="×", timing=True,
                   note=why or "median server aggregation time / median time of a "
                               "plaintext sum of the same updates, over the rounds"),
            Metric("encode_seconds_per_client", ratio(sim.timings["channel_encode"],
                                                      contributions),
                   False, kind="cost", unit="s", timing=True, note=why),
            Metric("num_params", dim, None, kind="info"),
        ):
            self._row(metric, source="fl")

    def _defense_metrics(self, name: str, defense: Defense) -> None:
        report = defense.privacy_spent(self.cfg.delta)
        if report is not None:
            note = (
                f"δ={report.delta:g}, {report.level}-level, accountant={report.accountant}, "
                f"secure_mode={report.secure_mode}" + (f"; {report.note}" if report.note else "")
            )
            self._row(Metric("epsilon", report.epsilon, False, kind="privacy", note=note),
                      source=f"defense:{name}")
        for metric in defense.metrics():
            self._row(metric, source=f"defense:{name}")

    def _attack(
        self,
        index: int,
        plan: _Planned,
        sim: SimulationResult,
        data: FederatedData,
        factory: Callable[[], nn.Module],
        streams: Streams,
    ) -> None:
        source = f"attack:{plan.name}"
        if plan.view is None:
            wanted = ", ".join(v.value for v in plan.attack.views)
            reason = f"not applicable: needs one of [{wanted}], the defenses leave none open"
            self._row(Metric("applicable", None, None, note=reason), source=source,
                      attack=plan.name, status="not_applicable")
            return
        try:
            view, truth = _view_and_truth(plan, sim, data)
        except KeyError as err:
            self._row(Metric("applicable", None, None, note=f"not applicable: {err.args[0]}"),
                      source=source, attack=plan.name, view=plan.view.value,
                      status="not_applicable")
            return
        # An attack on one client's update asks "was x in this update?", so its members are the
        # examples behind that update rather than every participant's data.
        behind = truth.examples if plan.view == ViewKind.CLIENT_UPDATE else None
        if self.canaries is not None:
            candidates, membership = self.canaries.records, self.canaries.included
        else:
            candidates, membership = membership_candidates(
                data, sim.private, self.cfg.mia_candidates, streams.numpy("candidates"), behind
            )
        knowledge = AttackerKnowledge(
            model_factory=factory,
            input_shape=data.input_shape,
            num_classes=data.num_classes,
            data_kind=data.kind,
            recipe=recipe_from(self.cfg.fl),
            fl=self.cfg.fl.model_dump(mode="json"),
            defenses={d.name: d.params for d in self.cfg.defenses},
            population=data.population,
            candidates=candidates,
            device=torch.device(self.cfg.device),
            seed=streams.integer_seed("attack", index),
            client_sizes=tuple(len(c) for c in data.clients),
        )
        truth = GroundTruth(
            examples=truth.examples, membership=membership, canaries=self.canaries is not None
        )
        tick = time.perf_counter()
        result = plan.attack.run(view, knowledge)
        seconds = time.perf_counter() - tick
        for metric in plan.attack.score(result, truth):
            self._row(metric, source=source, attack=plan.name, view=plan.view.value)
        self._row(Metric("attack_seconds", seconds, None, kind="cost", unit="s", timing=True),
                  source=source, attack=plan.name, view=plan.view.value)
        if self.figures_dir is not None:
            folder = self.figures_dir / self.cell.id
            for path in plan.attack.figures(result, truth, folder):
                self._row(Metric("figure", None, None, note=str(path)), source=source,
                          attack=plan.name, view=plan.view.value)


def run_cell(
    cell: Cell, *, figures_dir: Path | None = None, progress: bool = False
) -> list[dict[str, Any]]:
    """Execute ``cell`` and return its records (metric rows, then one ``cell`` row)."""
    return CellRun(cell, figures_dir=figures_dir, progress=progress).execute()
