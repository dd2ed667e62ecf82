"""Attack a transcript file (``fedbench attack TRANSCRIPT --attacks ...``).

The run is not repeated: the attacks receive the views the recorded channel leaves open, cut
from the file's transcript by the same :class:`~fedbench.fl.threat.ThreatModel` as in a run,
and the records, tables and report are written as for a suite. What the file does not hold,
the attacker does not get.

What is assumed: the attacker's population split, the membership candidates and the scoring
truth come from the dataset the transcript's ``experiment`` names, rebuilt from its ``data``,
``split``, ``partition``, ``fl.num_clients`` and ``seed`` exactly as the run built them
(``--data`` names another registered dataset). For a run outside fedbench this means its
client ``c`` trained on client ``c``'s shard of that split; the file's ``private`` part says
which of those examples were behind each kept update (or that each contributor used all of
them). Attack seeds are the run's: attack ``i`` of ``--attacks`` draws from the run seed's
``attack`` stream ``i``, as the ``i``-th attack of the experiment would have in the run.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from fedbench.config import ComponentConfig, DefenseStack, SuiteConfig, parse_suite
from fedbench.data.federated import FederatedData
from fedbench.defense import PrivacyReport
from fedbench.errors import ConfigError
from fedbench.fl.context import RoundContext
from fedbench.fl.evaluate import evaluate
from fedbench.fl.params import num_params, set_flat
from fedbench.fl.pipeline import Pipeline
from fedbench.fl.threat import PER_ROUND_VIEWS, PrivateLog, ThreatModel
from fedbench.fl.transcript_io import (
    META_FILE,
    TranscriptError,
    TranscriptFile,
    read_transcript,
    recorded_channel,
)
from fedbench.harness.build import build_defenses, build_run_info, cell_data, model_factory
from fedbench.harness.cell import (
    CellRun,
    TranscribedCell,
    accuracy_metric,
    plan_attacks,
    transcript_folder,
    write_files,
)
from fedbench.harness.records import RECORDS_FILE, append_records
from fedbench.harness.schema import CellRecord, RoundRow
from fedbench.harness.suite import Cell, expand
from fedbench.integrations.flower_sim import flower_plan, simulate
from fedbench.metrics.base import Metric
from fedbench.registry import ATTACKS
from fedbench.seeding import Streams


def parse_attacks(text: str) -> list[ComponentConfig]:
    """``--attacks``: comma-separated registered names (``dlg,lira``), or a YAML list of
    components as in a suite (``[{name: idlg, iterations: 150}, lira]``)."""
    stripped = text.strip()
    try:
        loaded: Any = yaml.safe_load(stripped) if stripped.startswith("[") else [
            part.strip() for part in stripped.split(",") if part.strip()]
    except yaml.YAMLError as err:
        raise ConfigError(f"--attacks: not a YAML list ({err})") from err
    if not isinstance(loaded, list) or not loaded:
        raise ConfigError("--attacks: name at least one attack, e.g. --attacks idlg,lira")
    try:
        return [ComponentConfig.model_validate(item).validated(ATTACKS) for item in loaded]
    except (ValueError, TypeError) as err:
        raise ConfigError(f"--attacks: {err}") from None


def transcript_suite(
    loaded: TranscriptFile, *, attacks: list[ComponentConfig], name: str,
    data: str | None = None,
) -> SuiteConfig:
    """A one-cell suite: the transcript's experiment with ``attacks`` (and ``data``)."""
    experiment = dict(loaded.experiment)
    defenses = experiment.pop("defenses", []) or []
    seed = experiment.pop("seed", 0)
    experiment["attacks"] = [a.model_dump() for a in attacks]
    if data is not None:
        experiment["data"] = {"name": data}
    label = "+".join(str(d.get("name")) for d in defenses) or "none"
    where = f"{loaded.path / META_FILE if loaded.path else 'transcript'}: field 'experiment'"
    return parse_suite({
        "name": name, "experiments": [experiment],
        "defenses": [DefenseStack(label=label, stack=[ComponentConfig.model_validate(d)
                                                      for d in defenses]).model_dump()],
        "seeds": [seed],
        "description": f"attacks on the transcript {loaded.path} (written by "
                       f"{loaded.writer.name} {loaded.writer.version})",
    }, source=where)


class ReplayRun(CellRun):
    """One cell's attacks on a transcript file instead of on a fresh simulation."""

    def __init__(self, cell: Cell, loaded: TranscriptFile, *, figures: bool = True) -> None:
        super().__init__(cell, figures=figures, executor="transcript")
        self.loaded = loaded

    def _execute(self) -> None:
        cfg = self.cfg
        streams = Streams(cfg.seed)
        data, self.canaries = cell_data(cfg, streams)
        factory = model_factory(cfg, data, streams)
        threat = ThreatModel(channel=recorded_channel(self.loaded.channel))
        plans = plan_attacks(
            [(a.name, ATTACKS.create(a.name, a.params)) for a in cfg.attacks], threat
        )
        private = self._private(data)
        for plan in plans:
            if private is None and plan.view in PER_ROUND_VIEWS:
                self._not_applicable(plan, "the transcript holds no ground truth (its "
                                           "'private' part) to score this view against")
                continue
            self._attack(plan, threat, self.loaded.transcript, private or self._public(),
                         data, streams, factory)

    def _public(self) -> PrivateLog:
        """Who took part (public), without any example ids."""
        rounds = self.loaded.transcript.rounds
        return PrivateLog(participants={c for r in rounds if r.failed is None
                                        for c in r.contributors})

    def _private(self, data: FederatedData) -> PrivateLog | None:
        """The scoring truth: the file's, or every contributor's whole shard."""
        if not self.loaded.whole_shards:
            return self.loaded.private
        log = self._public()
        for record in self.loaded.transcript.rounds:
            if record.params is not None and record.failed is None:
                for cid in record.contributors:
                    log.used_ids[(record.round, cid)] = data.clients[cid].ids
        return log


class FlowerRun(ReplayRun):
    """A ``framework: flower`` cell: a real Flower simulation of the cell
    (:mod:`fedbench.integrations.flower_sim`), then the cell's attacks on the transcript the
    recorder wrote, exactly as ``fedbench attack`` runs them (the same seeds, views and
    records). Its own rows: the released model's accuracy, fedbench's accountant over the
    rounds the transcript records, and what Flower itself says of its DP (``flower_*``)."""

    def __init__(
        self, cell: Cell, *, figures: bool = False, progress: bool = False,
        executor: str | None = None,
    ) -> None:
        CellRun.__init__(self, cell, figures=figures, progress=progress, executor=executor)

    def _execute(self) -> None:
        with tempfile.TemporaryDirectory(prefix="fedbench-flower-") as tmp:
            folder = simulate(self.cfg, Path(tmp) / "transcript")
            self.loaded = read_transcript(folder)
            if isinstance(self.cell, TranscribedCell):  # --save-transcripts
                for path in sorted(folder.iterdir()):
                    self.files[f"{transcript_folder(self.cell)}/{path.name}"] = path.read_bytes()
        check_fits(self.cell, self.loaded)
        streams = Streams(self.cfg.seed)
        data, _ = cell_data(self.cfg, streams)
        factory = model_factory(self.cfg, data, streams)
        self.history = self._history()
        self._model_metrics(data, factory)
        self._privacy_metrics(data, factory, streams)
        super()._execute()

    def _history(self) -> list[RoundRow]:
        return [RoundRow(round=r.round, sampled=len(r.sampled), contributors=len(r.contributors),
                         dropped=len(r.dropped), failed=r.failed,
                         upload_bytes=sum(r.upload_bytes.values()))
                for r in self.loaded.transcript.rounds]

    def _model_metrics(self, data: FederatedData, factory: Callable[[], nn.Module]) -> None:
        """Accuracy and loss of the model the Flower server released, on the test split."""
        final = self.loaded.transcript.final_params
        assert final is not None  # read_transcript refuses a transcript without one
        model = factory()
        set_flat(model, final)
        accuracy, loss = evaluate(model, data.test)
        rounds = self.loaded.transcript.rounds
        for metric in (
            accuracy_metric(accuracy, test_size=len(data.test), fl=self.cfg.fl),
            Metric("test_loss", loss, False, kind="utility"),
            Metric("rounds_failed", sum(1 for r in rounds if r.failed), False, kind="utility"),
            Metric("num_params", final.numel(), None, kind="info"),
        ):
            self.writer.metric(metric, source="fl")

    def _privacy_metrics(
        self, data: FederatedData, factory: Callable[[], nn.Module], streams: Streams
    ) -> None:
        """fedbench's ε for what Flower ran, and Flower's own claims next to it."""
        plan = flower_plan(self.cfg)
        if plan.central_dp is None and plan.local_dp is None:
            return
        for name, report in self._accounted(data, factory, streams):
            self.writer.metric(
                Metric("epsilon", report.epsilon, False, kind="privacy",
                       note=f"{report.note}; fedbench's accountant over the rounds of the "
                            "recorded Flower run"),
                source=f"defense:{name}", privacy=report)
        name = self.cfg.defenses[0].name
        claimed = plan.local_dp.epsilon if plan.local_dp is not None else None
        mechanism = plan.local_dp or plan.central_dp
        assert mechanism is not None
        for metric in (
            Metric("flower_epsilon_claimed", claimed, False, kind="privacy",
                   note="; ".join(plan.notes) + ("" if claimed is not None else
                                                  "; Flower claims no ε for this run")),
            Metric("flower_noise_std", mechanism.noise_std, None, kind="info"),
        ):
            self.writer.metric(metric, source=f"defense:{name}")

    def _accounted(
        self, data: FederatedData, factory: Callable[[], nn.Module], streams: Streams
    ) -> list[tuple[str, PrivacyReport]]:
        """fedbench's own DP defenses, their stages run on zero vectors for exactly the rounds
        and contributors the transcript records: their accountants count those releases (the
        noise they draw is discarded), so ε is fedbench's accounting of the Flower run."""
        defenses = build_defenses(self.cfg)
        pipeline = Pipeline(defenses)
        run = build_run_info(self.cfg, data, factory, streams)
        pipeline.setup(run)
        for record in self.loaded.transcript.rounds:
            if record.failed:
                continue
            ctx = RoundContext(round=record.round, sampled=list(record.sampled),
                               num_clients=run.num_clients, expected_clients=run.expected_clients,
                               dim=run.dim, streams=streams, weights=dict(record.weights))
            for cid in record.contributors:
                for client_stage in pipeline.client_stages:
                    client_stage.apply(cid, torch.zeros(run.dim), ctx)
            total = torch.zeros(run.dim, dtype=torch.float64)
            denominator = float(sum(record.weights.values()))
            for server_stage in pipeline.server_stages:
                total, denominator = server_stage.apply(total, denominator, ctx)
        for _, defense in defenses:  # what the cell record marks: Flower's noise, not theirs
            defense.irreproducible = ("Flower draws its DP noise from numpy's global generator, "
                                      "unseeded")
        self.defenses = defenses
        spent = [(name, defense.privacy_spent(self.cfg.delta)) for name, defense in defenses]
        return [(name, report) for name, report in spent if report is not None]


def check_fits(cell: Cell, loaded: TranscriptFile) -> None:
    """Refuse a transcript whose experiment does not rebuild the recorded model and clients."""
    streams = Streams(cell.config.seed)
    data, _ = cell_data(cell.config, streams)
    dim = num_params(model_factory(cell.config, data, streams)())
    where = loaded.path / META_FILE if loaded.path else "transcript"
    final = loaded.transcript.final_params
    if final is not None and final.numel() != dim:
        raise TranscriptError(
            f"{where}: field 'experiment.model' builds a model of {dim} parameters, the "
            f"transcript's tensors have {final.numel()} (field 'num_params')")
    clients = {c for r in loaded.transcript.rounds for c in r.sampled}
    if clients and max(clients) >= len(data.clients):
        raise TranscriptError(
            f"{where}: field 'rounds' names client {max(clients)}, but field "
            f"'experiment.fl.num_clients' makes {len(data.clients)} clients")


@dataclass(frozen=True)
class AttackSummary:
    """What ``fedbench attack`` did."""

    folder: Path
    label: str
    status: str
    error: str | None


def results_name(path: Path) -> str:
    """A suite name for a transcript folder's results (its folder name, made safe)."""
    folder = path.parent if path.name == META_FILE else path
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", folder.resolve().name).strip("._") or "transcript"
    return f"attack-{safe}"


def attack_transcript(
    path: Path, *, attacks: list[ComponentConfig], results_root: Path,
    data: str | None = None, figures: bool = True,
) -> AttackSummary:
    """Run ``attacks`` on the transcript at ``path``; records, figures and ``suite.yaml`` go
    to ``results_root/attack-<transcript folder>/``."""
    loaded = read_transcript(path)
    suite = transcript_suite(loaded, attacks=attacks, name=results_name(path), data=data)
    (cell,) = expand(suite)
    check_fits(cell, loaded)
    folder = results_root / suite.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "suite.yaml").write_text(
        yaml.safe_dump(suite.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    run = ReplayRun(cell, loaded, figures=figures)
    rows = run.execute()
    write_files(folder, run.files)
    append_records(folder / RECORDS_FILE, rows)
    final = rows[-1]
    assert isinstance(final, CellRecord)
    return AttackSummary(folder=folder, label=cell.label, status=final.status,
                         error=final.error)
