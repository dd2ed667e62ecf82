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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fedbench.config import ComponentConfig, DefenseStack, SuiteConfig, parse_suite
from fedbench.data.federated import FederatedData
from fedbench.errors import ConfigError
from fedbench.fl.params import num_params
from fedbench.fl.threat import PER_ROUND_VIEWS, PrivateLog, ThreatModel
from fedbench.fl.transcript_io import (
    META_FILE,
    TranscriptError,
    TranscriptFile,
    read_transcript,
    recorded_channel,
)
from fedbench.harness.build import cell_data, model_factory
from fedbench.harness.cell import CellRun, plan_attacks, write_files
from fedbench.harness.records import RECORDS_FILE, append_records
from fedbench.harness.schema import CellRecord
from fedbench.harness.suite import Cell, expand
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
