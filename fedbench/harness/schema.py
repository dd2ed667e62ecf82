"""The result record schema (version 2): one pydantic model per row type, shared by the writer
(:mod:`fedbench.harness.cell`), every reader (tables, report, compare) and the tests.

A results file is JSON Lines: per finished cell, its metric rows and then one cell row. What an
ε means (δ, user or example level, accountant, secure mode), whether the setting was insecure,
which view the attack used and which adversary ran are fields of the rows, not text in a note.

Records written before the schema had a version (schema 1) are migrated on read by
:mod:`fedbench.harness.migrate`.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from fedbench.adversary import HONEST_BUT_CURIOUS
from fedbench.defense import PrivacyLevel
from fedbench.fl.views import ViewKind
from fedbench.metrics.base import MetricKind
from fedbench.metrics.intervals import Interval  # the metric's own type, validated as a record

SCHEMA_VERSION: Final = 2


class _Row(BaseModel):
    """The columns every row carries: which run of which cell it belongs to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[2] = SCHEMA_VERSION
    run: str = Field(min_length=1)
    suite: str
    cell: str = Field(min_length=1)
    experiment: str
    defense: str
    seed: int
    grid: dict[str, Any] = Field(default_factory=dict)


class MetricRecord(_Row):
    """One measured number of one cell.

    Attributes:
        source: What produced it: ``fl``, ``defense:<name>`` or ``attack:<name>``.
        attack: The attack's registry name, for attack rows.
        view: The view the attack used.
        adversary: The adversary the cell ran against.
        metric: Metric name.
        value: The number, or None when not measurable (``note`` says why).
        interval: Its uncertainty interval, where one was computed.
        higher_is_better: Direction for the defended system (None: descriptive).
        kind: utility, privacy, cost or info.
        unit: Display unit.
        note: Caveats.
        timing: Whether the value is a wall-clock measurement.
        status: ``ok`` or ``not_applicable`` (an attack whose views are closed).
        delta: δ of an ε row.
        level: ``user`` or ``example`` for an ε row.
        accountant: The accountant of an ε row.
        secure_mode: Whether an ε row's noise came from a CSPRNG.
        insecure: Why the cell's configuration is insecure (explicitly allowed), or None.
        irreproducible: Why the cell's results vary between identical runs, or None.
        path: For a ``figure`` row, the file (as written by the run).
    """

    type: Literal["metric"] = "metric"
    source: str
    attack: str | None = None
    view: ViewKind | None = None
    adversary: str = HONEST_BUT_CURIOUS
    metric: str
    value: float | None
    interval: Interval | None = None
    higher_is_better: bool | None
    kind: MetricKind = "info"
    unit: str = ""
    note: str = ""
    timing: bool = False
    status: Literal["ok", "not_applicable"] = "ok"
    delta: float | None = None
    level: PrivacyLevel | None = None
    accountant: str | None = None
    secure_mode: bool | None = None
    insecure: str | None = None
    irreproducible: str | None = None
    path: str | None = None

    @property
    def family(self) -> str:
        """``fl``, ``defense`` or ``attack``."""
        return self.source.split(":", 1)[0]


class RoundRow(BaseModel):
    """One round of a cell's run, as its history records it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    round: int
    sampled: int
    contributors: int
    dropped: int
    rejected: dict[int, str] = Field(default_factory=dict)
    train_loss: float | None = None
    upload_bytes: int = 0
    aggregate_seconds: float | None = None
    failed: str | None = None
    accuracy: float | None = None
    loss: float | None = None


class CellRecord(_Row):
    """How one cell ran: its configuration and provenance, and whether it finished.

    Attributes:
        label: Human-readable cell name.
        status: ``ok`` or ``failed``.
        error: The error of a failed cell.
        traceback: The end of its traceback.
        insecure: Why the configuration is insecure (explicitly allowed), or None.
        irreproducible: Why its results vary between identical runs, or None.
        adversary: The adversary the cell ran against.
        config: The normalised experiment configuration (its hash is the cell id).
        seeds: The seeds.
        versions: Versions of Python and the packages that shape results.
        git_commit: The code's commit (``+dirty`` when its source was modified), if known.
        code_version: The commit plus a hash of the uncommitted source changes (or the package
            version): a resumed run reuses only cells of its own code version.
        history: Per round: who took part, who was rejected and why, failures, evaluation.
        host: The machine.
        executor: Which executor ran the cell, if known.
        engine: Which engine computed the clients' local training (``loop``: one client after
            another; ``vectorized``: chunks of clients as stacked copies), or None where
            fedbench's simulation did not run (a Flower cell, a cell that failed before it).
        started: Start time (seconds since the epoch).
        duration_s: Wall-clock seconds the cell took.
    """

    type: Literal["cell"] = "cell"
    label: str
    status: Literal["ok", "failed"]
    error: str | None = None
    traceback: str | None = None
    insecure: str | None = None
    irreproducible: str | None = None
    adversary: str = HONEST_BUT_CURIOUS
    config: dict[str, Any]
    seeds: dict[str, int]
    versions: dict[str, str] = Field(default_factory=dict)
    git_commit: str | None = None
    code_version: str | None = None
    history: list[RoundRow] = Field(default_factory=list)
    host: dict[str, Any] = Field(default_factory=dict)
    executor: str | None = None
    engine: Literal["loop", "vectorized"] | None = None
    started: float
    duration_s: float


Record = Annotated[MetricRecord | CellRecord, Field(discriminator="type")]
RECORD = TypeAdapter(Record)
