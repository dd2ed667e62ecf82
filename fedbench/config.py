"""pydantic schemas for experiments and suites: YAML in, clear errors out.

Components are written ``{name: <registered name>, <param>: <value>, ...}`` (or just the name);
their parameters are validated against the registered component, so a typo in a name or a
parameter fails before any work with a message that names the field and the allowed values.

Example:
    >>> cfg = ExperimentConfig.model_validate({"data": "digits", "model": {"name": "mlp"}})
    >>> cfg.fl.algorithm, cfg.model.params["hidden"]
    ('fedavg', None)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from fedbench.errors import ConfigError
from fedbench.fl.recipe import TrainingRecipe
from fedbench.registry import (
    ADVERSARIES,
    ATTACKS,
    DATASETS,
    DEFENSES,
    MODELS,
    PARTITIONERS,
    Registry,
    field_path,
)


class _Strict(BaseModel):
    # Strict (`rounds: true` is no count) and finite (`client_lr: .inf` is no learning rate).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class ComponentConfig(_Strict):
    """A registered component by name, with its keyword parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _flat_form(cls, value: Any) -> Any:
        # Accept "dlg" and {name: dlg, iterations: 10} as well as {name:, params: {...}}.
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, Mapping) and "params" not in value:
            params = {k: v for k, v in value.items() if k != "name"}
            return {"name": value.get("name"), "params": params}
        return value

    def validated(self, registry: Registry[Any]) -> ComponentConfig:
        """A copy with parameters validated against ``registry`` and defaults filled in."""
        return ComponentConfig(name=self.name, params=registry.validate(self.name, self.params))


class SplitConfig(_Strict):
    """How the dataset is split before partitioning.

    Attributes:
        test_fraction: Held out as test split when the dataset has no official test split.
        population_fraction: Of the training examples, held out as the population split that
            no client gets (membership-inference reference data).
        max_train_examples: Optional stratified cap on the examples given to clients.
    """

    test_fraction: float = Field(0.2, gt=0, lt=1)
    population_fraction: float = Field(0.2, ge=0, lt=1)
    max_train_examples: int | None = Field(None, ge=1)


class FLConfig(_Strict):
    """Federated training settings.

    Attributes:
        algorithm: "fedsgd" (one gradient step on one batch per round) or "fedavg".
        num_clients: Number of clients N.
        rounds: Number of rounds T.
        clients_per_round: Clients sampled per round (m); with ``client_fraction`` unset and
            this unset, every client takes part.
        client_fraction: Alternative to ``clients_per_round``: q, the fraction sampled.
        sampling: "fixed" (exactly m clients, without replacement) or "poisson" (each client
            independently with probability q; what DP accountants assume).
        local_epochs: FedAvg local epochs.
        local_steps: FedAvg local steps (overrides ``local_epochs``).
        batch_size: Local batch size (FedSGD: None = the client's whole data).
        client_lr: Client learning rate.
        client_momentum: Client SGD momentum.
        server_lr: Server learning rate applied to the mean update.
        weighting: "weighted" (by number of examples) or "uniform".
        eval_every: Evaluate on the test split every k rounds (and after the last).
        on_bad_update: "drop" a client whose update has NaN/Inf or a wrong shape (recorded),
            or "abort_round" (the round is recorded as failed, the model is unchanged).
        on_failed_round: "continue" with the next round or "stop" the run.
        engine: How the sampled clients' local training is computed: "loop" (one client after
            another), "vectorized" (chunks of clients as stacked copies, batched; plain SGD and
            local DP-SGD outside secure mode; refused where it cannot apply: another defense's
            own local training, a model with buffers or that torch.func cannot batch) or
            "auto" (vectorized where it applies, else the loop). The engines give the same
            updates up to float rounding; the cell record says which one ran.
    """

    algorithm: Literal["fedsgd", "fedavg"] = "fedavg"
    num_clients: int = Field(10, ge=1)
    rounds: int = Field(10, ge=1)
    clients_per_round: int | None = Field(None, ge=1)
    client_fraction: float | None = Field(None, gt=0, le=1)
    sampling: Literal["fixed", "poisson"] = "fixed"
    local_epochs: int = Field(1, ge=1)
    local_steps: int | None = Field(None, ge=1)
    batch_size: int | None = Field(32, ge=1)
    client_lr: float = Field(0.1, gt=0)
    client_momentum: float = Field(0.0, ge=0, lt=1)
    server_lr: float = Field(1.0, gt=0)
    weighting: Literal["weighted", "uniform"] = "weighted"
    eval_every: int = Field(1, ge=1)
    on_bad_update: Literal["drop", "abort_round"] = "drop"
    on_failed_round: Literal["continue", "stop"] = "continue"
    engine: Literal["auto", "loop", "vectorized"] = "auto"

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # The default engine is left out, so that every cell keeps the id (a hash of this
        # dump) and the records it had before the field existed.
        dumped: dict[str, Any] = handler(self)
        if dumped.get("engine") == "auto":
            del dumped["engine"]
        return dumped

    @model_validator(mode="after")
    def _check(self) -> FLConfig:
        if self.clients_per_round is not None and self.client_fraction is not None:
            raise ValueError("set clients_per_round or client_fraction, not both")
        if self.clients_per_round is not None and self.clients_per_round > self.num_clients:
            raise ValueError(
                f"clients_per_round ({self.clients_per_round}) exceeds num_clients "
                f"({self.num_clients})"
            )
        if self.algorithm == "fedavg" and self.batch_size is None:
            raise ValueError("fedavg needs a batch_size")
        return self

    @property
    def recipe(self) -> TrainingRecipe:
        """The public client-training recipe of these settings."""
        return TrainingRecipe(
            algorithm=self.algorithm,
            batch_size=self.batch_size,
            local_epochs=self.local_epochs,
            local_steps=self.local_steps,
            lr=self.client_lr,
            momentum=self.client_momentum,
        )

    @property
    def expected_clients(self) -> float:
        """Expected number of clients per round (m, or q·N)."""
        if self.clients_per_round is not None:
            return float(self.clients_per_round)
        if self.client_fraction is not None:
            return self.client_fraction * self.num_clients
        return float(self.num_clients)


#: The frameworks that can simulate a cell (``ExperimentConfig.framework``).
Framework = Literal["fedbench", "flower", "flower-server-clipping"]


class ExperimentConfig(_Strict):
    """One experiment: data, partition, model, FL settings, defenses and attacks.

    Attributes:
        name: Label of the experiment in results.
        data: The dataset component.
        split: Test/population split settings.
        partition: The partitioner component.
        model: The model component.
        fl: Federated training settings.
        defenses: Defense components, composed in order into one round pipeline.
        attacks: Attack components run against the views the defenses leave open.
        adversary: Who attacks (a registered adversary, :mod:`fedbench.adversary`): an
            honest-but-curious server by default, or a malicious server / colluding clients
            that act at the seams a real one has; the views follow from defenses × adversary.
        seed: Root of all random streams.
        device: Torch device ("cpu", "cuda", "cuda:1"...).
        mia_candidates: Members and as many non-members given to membership attacks (at most).
        delta: The δ at which DP defenses report ε.
        threads: torch CPU threads for this cell. Part of the configuration because the thread
            count changes the order of float reductions (so results match only at equal
            counts); 1 is also the fastest for the small models of the offline suites, and
            lets ``--jobs`` use the cores.
        canaries: For one-run DP auditing: this many records are drawn from the clients' data
            and each is kept in training with probability ½ (the others are removed before
            training starts); membership attacks are then scored on the canaries.
        framework: Which framework simulates the cell: fedbench's own simulation, or a real
            Flower simulation (``fedbench.integrations.flower_sim``) whose recorded transcript
            the attacks then read; ``flower-server-clipping`` runs ``dp_fedavg`` as Flower's
            server-side fixed clipping instead of its client-side one. Without ``dp_fedavg``
            that choice changes nothing and is normalised to ``flower``.
    """

    name: str = "experiment"
    data: ComponentConfig = ComponentConfig(name="digits")
    split: SplitConfig = SplitConfig()
    partition: ComponentConfig = ComponentConfig(name="iid")
    model: ComponentConfig = ComponentConfig(name="mlp")
    fl: FLConfig = FLConfig()
    defenses: list[ComponentConfig] = Field(default_factory=list)
    attacks: list[ComponentConfig] = Field(default_factory=list)
    adversary: ComponentConfig = ComponentConfig(name="honest_but_curious")
    seed: int = Field(0, ge=0)
    device: str = "cpu"
    mia_candidates: int = Field(500, ge=2)
    delta: float = Field(1e-5, gt=0, lt=1)
    canaries: int = Field(0, ge=0)
    threads: int = Field(1, ge=1)
    framework: Framework = "fedbench"

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # The default framework is left out, so that every cell fedbench simulates keeps the
        # id (a hash of this dump) and the records it had before the field existed.
        # So is the default adversary, for the same reason.
        dumped: dict[str, Any] = handler(self)
        if dumped.get("framework") == "fedbench":
            del dumped["framework"]
        if dumped.get("adversary") == {"name": "honest_but_curious", "params": {}}:
            del dumped["adversary"]
        return dumped

    @model_validator(mode="after")
    def _components(self) -> ExperimentConfig:
        # Validate every component against its registry, filling in defaults.
        updates: dict[str, Any] = {
            "data": self.data.validated(DATASETS),
            "partition": self.partition.validated(PARTITIONERS),
            "model": self.model.validated(MODELS),
            "defenses": [d.validated(DEFENSES) for d in self.defenses],
            "attacks": [a.validated(ATTACKS) for a in self.attacks],
            "adversary": self.adversary.validated(ADVERSARIES),
        }
        if self.framework == "flower-server-clipping" and not any(
                d.name == "dp_fedavg" for d in self.defenses):
            # Where Flower clips dp_fedavg's updates; with nothing to clip the cell is the
            # plain Flower cell (one id, so a suite sweeping both runs it once).
            updates["framework"] = "flower"
        for key, value in updates.items():
            object.__setattr__(self, key, value)
        return self


class Tolerance(_Strict):
    """How much a metric may move in the bad direction before ``fedbench compare`` fails.

    The allowed change is ``max(abs, rel × |old value|)``.
    """

    abs: float = Field(0.0, ge=0)
    rel: float = Field(0.0, ge=0)


class Tolerances(_Strict):
    """Regression tolerances: by metric name first, then by metric kind.

    Absolute tolerances suit privacy and utility metrics (an AUC up by 0.02 is a weaker
    defense whatever the old value); relative ones suit cost ratios.
    """

    by_kind: dict[str, Tolerance] = Field(default_factory=lambda: {
        "privacy": Tolerance(abs=0.02),
        "utility": Tolerance(abs=0.02),
        "cost": Tolerance(rel=0.10),
        "info": Tolerance(rel=0.0),
    })
    by_metric: dict[str, Tolerance] = Field(default_factory=lambda: {
        "psnr": Tolerance(abs=1.0),
        "psnr_max": Tolerance(abs=1.0),  # the best image's PSNR: dB, like psnr
        "epsilon": Tolerance(rel=0.01),
        # Measured inside cells on small models: two timings of ~10 µs sums near a ratio of 1
        # move by several units between identical runs; large ratios move by tens of percent.
        "aggregation_time_ratio": Tolerance(rel=0.5, abs=5.0),
        # A fraction that can be 0: relative tolerance alone would flag any change.
        "overhead_fraction": Tolerance(abs=0.05),
    })

    def for_metric(self, metric: str, kind: str) -> Tolerance:
        """The tolerance that applies to ``metric`` of ``kind``."""
        return self.by_metric.get(metric) or self.by_kind.get(kind) or Tolerance()


class DefenseStack(_Strict):
    """A labelled list of defenses that run together (one row of the main table)."""

    label: str
    stack: list[ComponentConfig] = Field(default_factory=list)


#: Seeds of a suite or of one of its experiments: at least one, none negative (a cell's seed).
Seeds = Annotated[list[Annotated[int, Field(ge=0, strict=True)]], Field(min_length=1)]


class SuiteConfig(_Strict):
    """A grid: experiments × defense stacks × seeds (× the values of ``grid``).

    Attributes:
        name: Suite name; results go to ``results/<name>/``.
        description: One paragraph for the report.
        experiments: Base experiments (their ``defenses`` are prepended to every stack).
        defenses: Defense stacks applied to every experiment.
        seeds: Seeds; every cell runs once per seed.
        grid: Sweeps: dotted config path -> list of values (e.g. ``fl.clients_per_round``);
            ``defenses.<name>.<param>`` sweeps a defense parameter in the stacks that use it.
        tolerances: Regression tolerances used by ``fedbench compare``.
    """

    # The name is a folder under --results-dir: no separators, no "..", nothing hidden.
    name: str = Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
    description: str = ""
    experiments: list[dict[str, Any]] = Field(min_length=1)
    defenses: list[DefenseStack] = Field(default_factory=lambda: [DefenseStack(label="none")])
    seeds: Seeds = Field(default_factory=lambda: [0])
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    tolerances: Tolerances = Field(default_factory=Tolerances)

    @model_validator(mode="after")
    def _check(self) -> SuiteConfig:
        labels = [s.label for s in self.defenses]
        repeated = sorted({x for x in labels if labels.count(x) > 1})
        if repeated:
            raise ValueError(f"defense labels must be unique, repeated: {', '.join(repeated)}")
        empty = [k for k, v in self.grid.items() if not v]
        if empty:
            raise ValueError(f"grid keys without values: {', '.join(empty)}")
        return self


def _explain(err: ValidationError, source: str) -> ConfigError:
    lines = []
    for problem in err.errors():
        field = field_path(problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        if field == "(root)":  # a component's own validation, which names its field itself
            lines.append(f"{source}: {message}")
        elif problem["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown field '{field}'")
        elif problem["type"] == "literal_error":
            lines.append(f"{source}: field '{field}' = {problem.get('input')!r}: {message}")
        else:
            lines.append(f"{source}: field '{field}': {message}")
    return ConfigError("\n".join(lines))


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key that appears twice in one mapping (PyYAML keeps
    the last one silently, so a pasted block would override settings without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                first = seen[key]
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"duplicate key {key!r} (first at line {first.line + 1})", key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file (and line, for syntax errors and
    duplicate keys)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from err
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_experiment(data: Mapping[str, Any], source: str = "experiment") -> ExperimentConfig:
    """Validate an experiment mapping; errors name the field."""
    try:
        return ExperimentConfig.model_validate(dict(data))
    except ValidationError as err:
        raise _explain(err, source) from None


def parse_suite(data: Mapping[str, Any], source: str = "suite") -> SuiteConfig:
    """Validate a suite mapping (the experiments themselves are validated on expansion)."""
    try:
        return SuiteConfig.model_validate(dict(data))
    except ValidationError as err:
        raise _explain(err, source) from None
