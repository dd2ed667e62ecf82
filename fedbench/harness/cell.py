"""Run one cell: build its parts, simulate, run the attacks on the views the threat model opens,
and write its records."""

from __future__ import annotations

import math
import re
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import median

import numpy as np
import torch
from torch import nn

from fedbench import __version__
from fedbench.adversary import Adversary, AdversaryRole, SetUp
from fedbench.attack import Attack, AttackerKnowledge, AttackResult, GroundTruth
from fedbench.config import FLConfig
from fedbench.data.federated import FederatedData
from fedbench.data.membership import Canaries, membership_candidates
from fedbench.data.tensors import TensorData
from fedbench.defense import Defense
from fedbench.errors import ConfigError
from fedbench.fl.engine import Engine
from fedbench.fl.phases import RoundSummary
from fedbench.fl.pipeline import Pipeline
from fedbench.fl.simulation import Simulation, SimulationResult
from fedbench.fl.threat import PrivateLog, ThreatModel
from fedbench.fl.transcript import Transcript
from fedbench.fl.transcript_io import ChannelMeta, WriterMeta, transcript_files
from fedbench.fl.views import AggregateView, ClientUpdateView, View, ViewKind
from fedbench.harness.build import build_defenses, cell_data, model_factory
from fedbench.harness.records import Row
from fedbench.harness.schema import RoundRow
from fedbench.harness.suite import Cell
from fedbench.harness.writer import RecordWriter
from fedbench.metrics.base import Metric
from fedbench.metrics.intervals import bootstrap_median, wilson
from fedbench.registry import ADVERSARIES, ATTACKS
from fedbench.seeding import Streams

FIGURES = "figures"
TRANSCRIPTS = "transcripts"


@dataclass(frozen=True)
class PlannedAttack:
    """One run of an attack of the cell: on one view (None: every view it needs is closed).

    Attributes:
        index: The attack's position in the experiment (its random stream).
    """

    index: int
    name: str
    attack: Attack
    view: ViewKind | None


def plan_attacks(attacks: list[tuple[str, Attack]], threat: ThreatModel) -> list[PlannedAttack]:
    """Each attack on *every* one of its views the threat model leaves open: which view is the
    strongest is measured (tables report the strongest result and name its view), not
    declared."""
    plans = []
    for index, (name, attack) in enumerate(attacks):
        views = attack.usable_views(threat.open_views()) or (None,)
        plans += [PlannedAttack(index, name, attack, view) for view in views]
    return plans


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def accuracy_metric(accuracy: float, *, test_size: int, fl: FLConfig) -> Metric:
    """Test accuracy with its Wilson interval; not a number to compare after one FedSGD round
    (one gradient step trains nothing: the value is chance by construction)."""
    if fl.algorithm == "fedsgd" and fl.rounds == 1:
        return Metric("accuracy", None, True, kind="utility",
                      note=f"n/a: one FedSGD round trains nothing (measured {accuracy:.3f})")
    interval = wilson(round(accuracy * test_size), test_size)
    return Metric("accuracy", accuracy, True, kind="utility", interval=interval)


def run_metrics(sim: SimulationResult, *, test_size: int, fl: FLConfig) -> list[Metric]:
    """Utility and cost of the run (accuracy, failures, bytes, aggregation time ratios)."""
    history = sim.history
    last_eval = next(r for r in reversed(history) if r.accuracy is not None)
    failed = sum(1 for r in history if r.failed)
    completed = len(history) - failed
    contributions = sum(r.contributors for r in history)
    upload = sum(r.upload_bytes for r in history)
    # Per client that sent anything: dropped clients' protocol messages count for them.
    uploaders = sum(r.uploaders for r in history)
    final = sim.transcript.final_params
    dim = final.numel() if final is not None else 0
    why = "" if completed and uploaders else "not measurable: no round completed"
    per_client = _ratio(upload, uploaders)
    assert last_eval.accuracy is not None and last_eval.loss is not None
    return [
        accuracy_metric(last_eval.accuracy, test_size=test_size, fl=fl),
        Metric("test_loss", last_eval.loss, False, kind="utility"),
        Metric("rounds_failed", failed, False, kind="utility"),
        Metric("clients_dropped", sum(r.dropped for r in history), False, kind="utility"),
        Metric("upload_bytes_per_client", per_client, False, kind="cost", unit="bytes",
               note=why),
        Metric("upload_bytes_per_param", _ratio(per_client or 0.0, dim) if per_client else None,
               False, kind="cost", unit="bytes", note=why),
        Metric("aggregate_seconds_per_round",
               _ratio(sim.timings["channel_aggregate"], completed),
               False, kind="cost", unit="s", timing=True, note=why),
        aggregation_time_ratio(history, why),
        Metric("encode_seconds_per_client", _ratio(sim.timings["channel_encode"], contributions),
               False, kind="cost", unit="s", timing=True, note=why),
        Metric("num_params", dim, None, kind="info"),
    ]


def round_row(summary: RoundSummary) -> RoundRow:
    """A round's summary as the cell record keeps it (NaN, JSON's missing number, as None)."""
    loss = summary.train_loss
    return RoundRow(
        round=summary.round, sampled=summary.sampled, contributors=summary.contributors,
        dropped=summary.dropped, rejected=summary.rejected,
        train_loss=None if math.isnan(loss) else loss, upload_bytes=summary.upload_bytes,
        aggregate_seconds=summary.aggregate_seconds, failed=summary.failed,
        accuracy=summary.accuracy, loss=summary.loss,
    )


def aggregation_time_ratio(history: list[RoundSummary], why: str) -> Metric:
    """Median server aggregation CPU time over the median CPU time of a plaintext sum of the
    same updates, timed right after it in each round (same data, same process, same moment).

    CPU time of this process on both sides, so the load of other processes (cells share the
    machine under --jobs; CI runners differ) does not move the ratio; medians over the
    completed rounds, so one slow round does not decide it.
    """
    timed = [
        (r.aggregate_cpu_seconds, r.plaintext_aggregate_cpu_seconds) for r in history
        if not r.failed and r.aggregate_cpu_seconds is not None
        and r.plaintext_aggregate_cpu_seconds
    ]
    aggregated = median(a for a, _ in timed) if timed else 0.0
    plain = median(p for _, p in timed) if timed else 0.0
    per_round = [a / p for a, p in timed]
    return Metric(
        "aggregation_time_ratio", _ratio(aggregated, plain), False, kind="cost", unit="×",
        timing=True, interval=bootstrap_median(np.array(per_round)),
        note=why or "median server aggregation CPU time / median CPU time of a plaintext sum "
                    "of the same updates, over the rounds",
    )


class CellRun:
    """Executes one cell and produces its records."""

    def __init__(
        self, cell: Cell, *, figures: bool = False, progress: bool = False,
        executor: str | None = None,
    ) -> None:
        self.cell = cell
        self.cfg = cell.config
        self.figures = figures
        self.files: dict[str, bytes] = {}
        self.executor = executor
        self.progress = progress
        self.writer = RecordWriter(cell)
        self.defenses: list[tuple[str, Defense]] = []
        self.canaries: Canaries | None = None
        self.history: list[RoundRow] = []
        self.scored: dict[int, Scored] = {}  # by attack index: its last scored view
        self.engine: Engine | None = None  # the local-training engine, once the run chose it

    def execute(self) -> list[Row]:
        """Run the cell; always returns rows ending with the ``cell`` row (ok or failed)."""
        started = time.time()
        tick = time.perf_counter()
        threads = torch.get_num_threads()
        torch.set_num_threads(self.cfg.threads)
        try:
            self._execute()
        except Exception as err:  # a failed cell is recorded, and reruns on resume
            self.files = {}
            return self.writer.finish(
                status="failed",
                error="".join(traceback.format_exception_only(type(err), err)).strip(),
                traceback=traceback.format_exc()[-4000:],
                started=started,
                duration_s=time.perf_counter() - tick,
                executor=self.executor,
                engine=self.engine,
            )
        finally:
            torch.set_num_threads(threads)
        # Read after the run: a defense knows whether it is insecure once set-up has seen it.
        insecure = [f"{n}: {d.insecure}" for n, d in self.defenses if d.insecure]
        varies = [f"{n}: {d.irreproducible}" for n, d in self.defenses if d.irreproducible]
        return self.writer.finish(
            status="ok",
            started=started,
            duration_s=time.perf_counter() - tick,
            insecure="; ".join(insecure) or None,
            irreproducible="; ".join(varies) or None,
            history=self.history,
            executor=self.executor,
            engine=self.engine,
        )

    def _execute(self) -> None:
        cfg = self.cfg
        streams = Streams(cfg.seed)
        data, self.canaries = cell_data(cfg, streams)
        adversary = ADVERSARIES.create(cfg.adversary.name, cfg.adversary.params)
        setup = SetUp(input_shape=data.input_shape, num_classes=data.num_classes,
                      population=data.population, num_clients=cfg.fl.num_clients,
                      seed=streams.integer_seed("adversary"), server_lr=cfg.fl.server_lr)
        factory = adversary.model_factory(model_factory(cfg, data, streams), setup)
        self.defenses = build_defenses(cfg)
        pipeline = Pipeline(self.defenses)
        self._face(adversary, pipeline)
        threat = ThreatModel(channel=pipeline.channel, adversary=adversary)
        plans = plan_attacks(
            [(a.name, ATTACKS.create(a.name, a.params)) for a in cfg.attacks], threat
        )
        transcript = self._transcript(threat, plans)
        sim = Simulation(
            model_factory=factory, data=data, fl=cfg.fl, pipeline=pipeline, streams=streams,
            transcript=transcript, broadcaster=adversary.broadcaster(setup),
            choose_clients=adversary.sample, cost_baseline=True,
            device=cfg.device, progress=self.progress,
        ).run()
        self.engine = sim.engine
        self.history = [round_row(r) for r in sim.history]
        for metric in run_metrics(sim, test_size=len(data.test), fl=cfg.fl):
            self.writer.metric(metric, source="fl")
        for name, defense in self.defenses:
            self._defense_metrics(name, defense)
        if isinstance(self.cell, TranscribedCell):
            self._save_transcript(sim, pipeline)
        for plan in plans:
            self._attack(plan, threat, sim.transcript, sim.private, data, streams, factory)

    def _face(self, adversary: Adversary, pipeline: Pipeline) -> None:
        """Put the pipeline in front of ``adversary``: a channel with checks against a
        deviating server turns them on (unless the config set them), the adversary acts in
        the channel, and the records name it (with why its action is moot, where it is)."""
        if adversary.role == AdversaryRole.MALICIOUS_SERVER:
            pipeline.channel.expect_malicious_server()
        adversary.setup_channel(pipeline.channel)
        self.writer.adversary = adversary.label()
        effect = adversary.effect(channel=pipeline.channel)
        if effect is not None:
            self.writer.metric(Metric("adversary_effect", None, None, note=effect),
                               source="adversary")

    def _transcript(self, threat: ThreatModel, plans: list[PlannedAttack]) -> Transcript:
        """What the attacks need; every round and the model sequence when the transcript is
        saved (the views cut from it are the same, only more is kept)."""
        rounds = self.cfg.fl.rounds
        if isinstance(self.cell, TranscribedCell):
            if threat.adversary.coalition() is not None:
                # The file format holds what one server saw; a coalition's own updates and
                # what its keys open are not part of it.
                raise ConfigError(f"adversary {threat.adversary.label()}: a transcript file "
                                  "records an honest server's view; save transcripts of "
                                  "runs without colluding clients")
            return Transcript(rounds=rounds, keep_rounds=range(rounds), keep_model_sequence=True)
        return threat.transcript(
            rounds=rounds,
            wanted=[(p.view, p.attack.target) for p in plans if p.view is not None],
        )

    def _save_transcript(self, sim: SimulationResult, pipeline: Pipeline) -> None:
        """The transcript file, returned as bytes like the figures (any executor)."""
        channel = pipeline.channel
        files = transcript_files(
            sim.transcript, experiment=self.cfg.model_dump(mode="json"),
            channel=ChannelMeta(name=getattr(channel, "name", type(channel).__name__),
                                reveals_client_updates=channel.reveals_client_updates),
            writer=WriterMeta(name="fedbench", version=__version__), private=sim.private,
        )
        for name, data in files.items():
            self.files[f"{transcript_folder(self.cell)}/{name}"] = data

    def _defense_metrics(self, name: str, defense: Defense) -> None:
        source = f"defense:{name}"
        report = defense.privacy_spent(self.cfg.delta)
        if report is not None:
            self.writer.metric(
                Metric("epsilon", report.epsilon, False, kind="privacy", note=report.note),
                source=source, privacy=report,
            )
        for metric in defense.metrics():
            self.writer.metric(metric, source=source)

    def _not_applicable(self, plan: PlannedAttack, reason: str) -> None:
        self.writer.metric(
            Metric("applicable", None, None, note=f"not applicable: {reason}"),
            source=f"attack:{plan.name}", attack=plan.name, view=plan.view,
            status="not_applicable",
        )

    def _attack(
        self,
        plan: PlannedAttack,
        threat: ThreatModel,
        transcript: Transcript,
        private: PrivateLog,
        data: FederatedData,
        streams: Streams,
        factory: Callable[[], nn.Module],
    ) -> None:
        """Run ``plan`` on its view and score it; a view that is provably the same input as
        one the attack already ran on is scored once (``self.scored``)."""
        if plan.view is None:
            wanted = ", ".join(v.value for v in plan.attack.views)
            self._not_applicable(plan, f"needs one of [{wanted}], the defenses leave none open")
            return
        try:
            view, truth = threat.view(
                plan.view, plan.attack.target, transcript=transcript, private=private, data=data,
            )
        except (KeyError, PermissionError) as err:
            self._not_applicable(plan, str(err.args[0]))
            return
        candidates, membership = self._candidates(plan, truth, private, data, streams)
        earlier = self.scored.get(plan.index)
        ids = None if candidates is None else candidates.ids
        if earlier is not None and earlier.same_as(view, ids):
            self._copy_scores(plan, view, earlier)
            return
        knowledge = AttackerKnowledge(
            model_factory=factory,
            input_shape=data.input_shape,
            num_classes=data.num_classes,
            data_kind=data.kind,
            fl=self.cfg.fl,
            defenses={d.name: d.params for d in self.cfg.defenses},
            population=data.population,
            candidates=candidates,
            device=torch.device(self.cfg.device),
            seed=streams.integer_seed("attack", plan.index),
            client_sizes=tuple(len(c) for c in data.clients),
        )
        truth = replace(truth, membership=membership, canaries=self.canaries is not None)
        tick = time.perf_counter()
        result = plan.attack.run(view, knowledge)
        seconds = time.perf_counter() - tick
        scores = self._score(plan, view, result, truth, seconds)
        self.scored[plan.index] = Scored(view, ids, scores)

    def _copy_scores(self, plan: PlannedAttack, view: View, earlier: Scored) -> None:
        """Record the earlier view's scores for ``view``: the attack (seeded per attack, not
        per view) would receive the same numbers and return the same result."""
        note = (f"the same input as the {earlier.view.kind.value} view (one contributor, "
                "weight 1): scored once")
        for metric in earlier.scores:
            copied = replace(metric, note=f"{metric.note}; {note}" if metric.note else note)
            self.writer.metric(copied, source=f"attack:{plan.name}", attack=plan.name,
                               view=view.kind)

    def _candidates(
        self, plan: PlannedAttack, truth: GroundTruth, private: PrivateLog,
        data: FederatedData, streams: Streams,
    ) -> tuple[TensorData | None, np.ndarray | None]:
        """The records a membership attack scores, and their membership (none for an attack
        that guesses no membership)."""
        if not plan.attack.guesses_membership:
            return None, None
        if self.canaries is not None:
            return self.canaries.records, self.canaries.included
        # An attack on one client's update asks "was x in this update?", so its members are the
        # examples behind that update rather than every participant's data.
        behind = truth.examples if plan.view == ViewKind.CLIENT_UPDATE else None
        return membership_candidates(
            data, private.participants, self.cfg.mia_candidates,
            streams.numpy("candidates"), behind,
        )

    def _score(
        self, plan: PlannedAttack, view: View, result: AttackResult, truth: GroundTruth,
        seconds: float,
    ) -> list[Metric]:
        """Write the attack's scores (and figures); returns the scores."""
        source = f"attack:{plan.name}"
        scores = list(plan.attack.score(result, truth))
        for metric in scores:
            self.writer.metric(metric, source=source, attack=plan.name, view=view.kind)
        self.writer.metric(
            Metric("attack_seconds", seconds, None, kind="cost", unit="s", timing=True),
            source=source, attack=plan.name, view=view.kind,
        )
        if self.figures:
            self._figures(plan, view, result, truth)
        return scores

    def _figures(
        self, plan: PlannedAttack, view: View, result: AttackResult, truth: GroundTruth
    ) -> None:
        source = f"attack:{plan.name}"
        caption = (f"{self.cell.experiment} · {self.cell.defense} · {self.writer.adversary}"
                   f" · {view.kind.value}")
        with tempfile.TemporaryDirectory() as tmp:
            made = plan.attack.figures(result, truth, Path(tmp), caption=caption)
            for path in made:
                # Relative to the results folder, so a copied or moved folder keeps its links;
                # returned as bytes, so a cell on a Ray worker loses none. The view is in the
                # name: one attack on two views draws two figures.
                name = (f"{FIGURES}/{figure_folder(self.cell)}/"
                        f"{path.stem}-{view.kind.value}{path.suffix}")
                self.files[name] = Path(path).read_bytes()
                self.writer.metric(Metric("figure", None, None), source=source,
                                   attack=plan.name, view=view.kind, path=name)


@dataclass(frozen=True)
class Scored:
    """An attack's scored run: its view, the ids of the records it scored, its scores."""

    view: View
    candidate_ids: torch.Tensor | None
    scores: list[Metric]

    def same_as(self, view: View, candidate_ids: torch.Tensor | None) -> bool:
        """Whether a run on ``view`` scoring ``candidate_ids`` would be this same run."""
        if not same_input(self.view, view):
            return False
        if self.candidate_ids is None or candidate_ids is None:
            return self.candidate_ids is candidate_ids
        return torch.equal(self.candidate_ids, candidate_ids)


def same_input(first: View, second: View) -> bool:
    """Whether two views hand an attack the same input: a client's update and the aggregate
    of a round it alone contributed to with weight 1 (the sum of one vector is that vector),
    from the same w_t. A view with more contributors, another weight, or any value that differs
    is not the same input and is attacked on its own."""
    pair = {first.kind: first, second.kind: second}
    single, total = pair.get(ViewKind.CLIENT_UPDATE), pair.get(ViewKind.AGGREGATE)
    if not isinstance(single, ClientUpdateView) or not isinstance(total, AggregateView):
        return False
    return (
        single.round == total.round and total.contributors == (single.client_id,)
        and single.weight == 1.0 and single.num_examples == total.num_examples
        and torch.equal(single.params, total.params)
        and torch.equal(single.update.double(), total.aggregate.double())
    )


@dataclass(frozen=True)
class TranscribedCell(Cell):
    """A cell whose run also hands back its transcript file under
    ``transcripts/<cell folder>/`` (``fedbench run --save-transcripts``). A subclass rather
    than an option, so that every executor carries it without knowing of it; the id, label and
    records are the cell's own."""

    @classmethod
    def of(cls, cell: Cell) -> TranscribedCell:
        """``cell``, transcribed."""
        return cls(cell.suite, cell.experiment, cell.defense, cell.seed, cell.config,
                   dict(cell.grid))


def transcript_folder(cell: Cell) -> str:
    """Where a cell's transcript goes, relative to the results folder."""
    return f"{TRANSCRIPTS}/{figure_folder(cell)}"


@dataclass(frozen=True)
class CellOutput:
    """What a cell's run hands back: its records and its figures (path in the results folder
    -> PNG bytes)."""

    rows: list[Row]
    files: dict[str, bytes]


def figure_folder(cell: Cell) -> str:
    """A readable folder name for a cell's figures (its label, made safe, and its id)."""
    safe = re.sub(r"[^A-Za-z0-9._=+-]+", "_", cell.label.replace("%", "pct").replace("/", "__"))
    return f"{safe.strip('_')}-{cell.id[:6]}"


def execute_cell(
    cell: Cell, *, figures: bool = True, progress: bool = False, executor: str | None = None
) -> CellOutput:
    """Execute ``cell``: its records (metric rows, then one ``cell`` row) and figures. A
    cell another framework simulates (``framework: flower``) runs as a
    :class:`~fedbench.harness.replay.FlowerRun`: that framework's run, then these attacks on
    its recorded transcript."""
    run_class: type[CellRun] = CellRun
    if cell.config.framework != "fedbench":
        from fedbench.harness.replay import FlowerRun  # replay.py builds on this module

        run_class = FlowerRun
    run = run_class(cell, figures=figures, progress=progress, executor=executor)
    rows = run.execute()
    return CellOutput(rows, run.files)


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Write a cell's figures under ``folder`` (the results folder)."""
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def run_cell(cell: Cell, *, figures_dir: Path | None = None, progress: bool = False) -> list[Row]:
    """Execute ``cell`` in this process; with ``figures_dir`` (a results folder) its figures
    are written there. Returns its records."""
    output = execute_cell(cell, figures=figures_dir is not None, progress=progress)
    if figures_dir is not None:
        write_files(figures_dir, output.files)
    return output.rows
