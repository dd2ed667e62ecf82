"""Expand a suite into cells with stable ids.

A cell is one experiment: a base experiment × a defense stack × a seed × one point of the sweep
grid. Its id is a hash of its normalised configuration (defaults filled in), so the same cell has
the same id in every run and on every machine, and a changed setting makes a new cell.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from fedbench.config import (
    ExperimentConfig,
    Seeds,
    SuiteConfig,
    load_yaml,
    parse_experiment,
    parse_suite,
)
from fedbench.errors import ConfigError


def cell_id(config: ExperimentConfig | dict[str, Any]) -> str:
    """The stable id of a normalised experiment configuration: a hash of its JSON form."""
    dumped = config.model_dump(mode="json") if isinstance(config, ExperimentConfig) else config
    return hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cell:
    """One experiment of a suite."""

    suite: str
    experiment: str
    defense: str
    seed: int
    config: ExperimentConfig
    grid: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def id(self) -> str:
        """Stable id: hash of the normalised configuration."""
        return cell_id(self.config)

    @property
    def label(self) -> str:
        """Human-readable name, e.g. ``digits/secagg/seed=0``."""
        parts = [self.experiment, self.defense, *(f"{k}={v}" for k, v in self.grid.items())]
        return "/".join([*parts, f"seed={self.seed}"])

    def keys(self) -> dict[str, Any]:
        """The columns that identify this cell in records."""
        return {
            "suite": self.suite,
            "cell": self.id,
            "experiment": self.experiment,
            "defense": self.defense,
            "seed": self.seed,
            "grid": dict(self.grid),
        }


def _set_path(target: dict[str, Any], path: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts; a component written as a bare name becomes a mapping."""
    keys = path.split(".")
    node = target
    for key in keys[:-1]:
        child = node.get(key)
        if isinstance(child, str):
            child = {"name": child}
        elif child is None:
            child = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"grid key '{path}': '{key}' is not a mapping")
        node[key] = child
        node = child
    node[keys[-1]] = value


def _apply_defense_override(stack: list[Any], path: str, value: Any) -> bool:
    """Apply ``defenses.<name>.<param>`` (``<param>`` may be dotted into a group, e.g.
    ``noise.multiplier``) to every component ``name`` in ``stack``."""
    _, name, param = path.split(".", 2)
    hit = False
    for i, component in enumerate(stack):
        as_dict = copy.deepcopy({"name": component} if isinstance(component, str) else component)
        if as_dict.get("name") == name:
            params = as_dict.get("params")
            # The {name:, params: {...}} form, or the flat {name:, <param>: ...} form.
            target = params if isinstance(params, dict) else as_dict
            _set_path(target, param, value)
            stack[i] = as_dict
            hit = True
    return hit


def _check_defense_grid(suite: SuiteConfig) -> None:
    """A ``defenses.<name>.<param>`` grid key must name a defense some stack uses: a misspelt
    name would otherwise sweep nothing, silently."""
    present = {c.name for stack in suite.defenses for c in stack.stack}
    for experiment in suite.experiments:
        for component in experiment.get("defenses") or []:
            present.add(component if isinstance(component, str) else component.get("name"))
    for key in suite.grid:
        parts = key.split(".")
        if parts[0] != "defenses":
            continue
        if len(parts) < 3:
            raise ConfigError(f"grid key '{key}': write defenses.<defense>.<parameter>")
        if parts[1] not in present:
            raise ConfigError(
                f"grid key '{key}': no defense stack uses '{parts[1]}'; defenses present: "
                f"{', '.join(sorted(str(p) for p in present)) or 'none'}"
            )


def expand(suite: SuiteConfig) -> list[Cell]:
    """All cells of ``suite``, in a deterministic order, each configuration once.

    A ``defenses.<name>.<param>`` sweep applies only to stacks that contain ``<name>``; other
    stacks run once, not once per sweep value.
    """
    _check_defense_grid(suite)
    cells: dict[str, Cell] = {}
    grid_keys = list(suite.grid)
    for position, experiment in enumerate(suite.experiments):
        exp_name = str(experiment.get("name", f"experiment{position}"))
        for values in itertools.product(*(suite.grid[k] for k in grid_keys)):
            for stack in suite.defenses:
                for seed in experiment_seeds(experiment, suite):
                    raw = copy.deepcopy(dict(experiment))
                    raw.pop("seeds", None)
                    raw["name"] = exp_name
                    defenses = list(raw.get("defenses", [])) + [
                        c.model_dump() for c in stack.stack
                    ]
                    point: dict[str, Any] = {}
                    for key, value in zip(grid_keys, values, strict=True):
                        if not key.startswith("defenses."):
                            _set_path(raw, key, value)
                            point[key] = value
                        elif _apply_defense_override(defenses, key, value):
                            point[key] = value
                    raw["defenses"] = defenses
                    raw["seed"] = seed
                    where = (
                        f"suite '{suite.name}', experiment '{exp_name}', defense '{stack.label}'"
                    )
                    config = parse_experiment(raw, source=where)
                    cell = Cell(suite.name, exp_name, stack.label, seed, config, point)
                    previous = cells.get(cell.id)
                    if previous is None:
                        cells[cell.id] = cell
                    elif len(point) == len(grid_keys):
                        raise ConfigError(
                            f"suite '{suite.name}': cells {previous.label} and {cell.label} "
                            "have the same configuration"
                        )
    return list(cells.values())


def experiment_seeds(experiment: dict[str, Any], suite: SuiteConfig) -> list[int]:
    """The experiment's own ``seeds`` (an experiment whose numbers need more repetitions than
    the rest), else the suite's; validated as the suite's are."""
    if "seeds" not in experiment:
        return list(suite.seeds)
    try:
        return list(_SEEDS.validate_python(experiment["seeds"]))
    except ValidationError as err:
        raise ConfigError(
            f"suite '{suite.name}', experiment '{experiment.get('name')}': field 'seeds' must "
            f"be a non-empty list of non-negative integers ({err.errors()[0]['msg']}), got "
            f"{experiment['seeds']!r}"
        ) from None


_SEEDS: TypeAdapter[list[int]] = TypeAdapter(Seeds)


def _single_experiment_suite(experiment: dict[str, Any], stem: str) -> dict[str, Any]:
    """A suite of one experiment; its defenses become the one stack, labelled by their names
    (so the tables call a SecAgg run "secagg", not "none")."""
    experiment = dict(experiment)
    stack = list(experiment.pop("defenses", None) or [])
    names = [c if isinstance(c, str) else str(c.get("name")) for c in stack]
    return {
        "name": str(experiment.get("name", stem)),
        "experiments": [experiment],
        "defenses": [{"label": "+".join(names) or "none", "stack": stack}],
        "seeds": [experiment.pop("seed", 0)],
    }


def packaged_suites() -> list[str]:
    """Names of the suites shipped with fedbench."""
    folder = resources.files("fedbench.suites")
    names = (p.name for p in folder.iterdir())
    return sorted(n.removesuffix(".yaml") for n in names if n.endswith(".yaml"))


def load_suite(name_or_path: str | Path) -> SuiteConfig:
    """A packaged suite by name (``quick``) or a YAML file (a suite, or a single experiment)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        data = load_yaml(path)
        source = str(path)
    elif str(name_or_path) in packaged_suites():
        resource = resources.files("fedbench.suites") / f"{name_or_path}.yaml"
        with resources.as_file(resource) as packaged:
            data = load_yaml(packaged)
        source = f"suite '{name_or_path}'"
    else:
        raise ConfigError(
            f"no suite named '{name_or_path}' and no such file; packaged suites: "
            f"{', '.join(packaged_suites())}"
        )
    if "experiments" not in data:  # a single experiment file becomes a one-cell suite
        data = _single_experiment_suite(data, path.stem)
    return parse_suite(data, source=source)
