"""One generic registry for datasets, partitioners, models, defenses and attacks.

Components register under a name; configs refer to them by name plus keyword parameters. The
parameters are validated against a pydantic model derived from the component's keyword
arguments (names, type hints, defaults), so a typo or a bad value fails before any work starts.

Example:
    >>> from fedbench.registry import Registry
    >>> SHAPES: Registry[object] = Registry("shape")
    >>> @SHAPES.register("square")
    ... class Square:
    ...     def __init__(self, *, side: float = 1.0) -> None:
    ...         self.side = side
    >>> SHAPES.create("square", {"side": 2}).side
    2.0
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from fedbench.errors import ConfigError

if TYPE_CHECKING:  # the component interfaces import the registry to register themselves
    from torch import nn

    from fedbench.adversary import Adversary
    from fedbench.attack import Attack
    from fedbench.data.dataset import Dataset
    from fedbench.data.partition import Partitioner
    from fedbench.defense import Defense

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Component(Generic[T]):
    """A registered component: its factory, its parameter schema and a one-line summary."""

    name: str
    factory: Callable[..., T]
    params_model: type[BaseModel]
    context: tuple[str, ...]
    summary: str
    moved: Mapping[str, str] = field(default_factory=dict)
    added: frozenset[str] = frozenset()

    def parameters(self) -> dict[str, str]:
        """Parameter name -> 'type = default' (for `fedbench list`)."""
        out = {}
        for field_name, spec in self.params_model.model_fields.items():
            annotation = spec.annotation
            plain = typing.get_origin(annotation) is None and hasattr(annotation, "__name__")
            ann = annotation.__name__ if plain else str(annotation)  # type: ignore[union-attr]
            ann = ann.replace("typing.", "")
            out[field_name] = ann if spec.is_required() else f"{ann} = {spec.default!r}"
        return out


def _params_model(
    name: str, factory: Callable[..., Any], context: Sequence[str]
) -> type[BaseModel]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    hints = typing.get_type_hints(target, include_extras=True)  # keep Annotated constraints
    fields: dict[str, Any] = {}
    for param in inspect.signature(target).parameters.values():
        if param.name in ("self", *context):
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, default)
    # Strict and finite (see fedbench.params): `true` is no integer, `.inf` no learning rate.
    config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, arbitrary_types_allowed=True,
        protected_namespaces=(),
    )
    model: type[BaseModel] = create_model(
        f"{name}_params", __config__=config, **fields
    )
    return model


_TYPE_TAGS = {"int", "float", "str", "bool", "none", "list", "dict", "tuple"}


def field_path(loc: Sequence[int | str]) -> str:
    """The dotted field of a pydantic error location, without the tags pydantic adds for the
    members of a union (``neighbours.literal['full','auto']`` is the field ``neighbours``)."""
    parts = [str(p) for p in loc
             if isinstance(p, int) or (str(p).isidentifier() and str(p) not in _TYPE_TAGS)]
    return ".".join(parts) or "(root)"


def _merged(problems: list[Any]) -> list[Any]:
    """One problem per field: a value no member of a union accepts gets every member's reason."""
    by_field: dict[str, Any] = {}
    for problem in problems:
        field = field_path(problem["loc"])
        if field in by_field and problem["type"] != "extra_forbidden":
            by_field[field]["msg"] += f", or {problem['msg'][0].lower()}{problem['msg'][1:]}"
        else:
            by_field[field] = {**problem, "field": field}
    return list(by_field.values())


def format_validation_error(
    where: str, err: ValidationError, allowed: Sequence[str], moved: Mapping[str, str] = {}
) -> str:
    """Turn a pydantic error into one line per problem that names the field."""
    lines = []
    for problem in _merged(err.errors()):
        field = problem["field"]
        if problem["type"] == "extra_forbidden" and field in moved:
            lines.append(f"{where}: unknown parameter '{field}': it is now '{moved[field]}'")
        elif problem["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown parameter '{field}'; allowed: {', '.join(allowed)}")
        elif problem["type"] == "missing":
            lines.append(f"{where}: missing required parameter '{field}'")
        else:
            value = problem.get("input")
            lines.append(f"{where}: parameter '{field}' = {value!r}: {problem['msg']}")
    return "\n".join(lines)


class Registry(Generic[T]):
    """Named components of one kind (one registry per family).

    Args:
        kind: Human-readable family name used in error messages ("attack", "defense"...).
        builtin: Packages whose modules are imported (recursively) on first use so that their
            ``@register`` decorators run.
        entry_point_group: Entry-point group through which third-party packages add components.
    """

    def __init__(
        self,
        kind: str,
        *,
        builtin: Sequence[str] = (),
        entry_point_group: str | None = None,
    ) -> None:
        self.kind = kind
        self._builtin = tuple(builtin)
        self._entry_point_group = entry_point_group
        self._components: dict[str, Component[T]] = {}
        self._loaded = not self._builtin and entry_point_group is None

    def register(
        self,
        name: str,
        *,
        context: Sequence[str] = (),
        moved: Mapping[str, str] | None = None,
        added: Sequence[str] = (),
    ) -> Callable[[F], F]:
        """Decorator registering a class or factory function under ``name``.

        Args:
            name: The name configs use.
            context: Arguments the harness supplies (e.g. a model's input shape); they are not
                part of the user-facing parameters.
            moved: Parameters this component used to take, by their new (dotted) place: a
                config using an old name is refused with the new one, and records written
                with it are migrated (:mod:`fedbench.harness.migrate`).
            added: Parameters added after records were written: left out of the validated
                parameters unless a config sets them (even to the default), so every
                configuration written before keeps its cell id (a hash of the parameters).
        """

        def decorator(factory: F) -> F:
            if name in self._components and self._components[name].factory is not factory:
                raise ConfigError(f"{self.kind} '{name}' is registered twice")
            doc = inspect.getdoc(factory) or ""
            self._components[name] = Component(
                name=name,
                factory=factory,
                params_model=_params_model(name, factory, context),
                context=tuple(context),
                summary=doc.splitlines()[0] if doc else "",
                moved=dict(moved or {}),
                added=frozenset(added),
            )
            return factory

        return decorator

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for package_name in self._builtin:
            package = importlib.import_module(package_name)
            for info in pkgutil.walk_packages(getattr(package, "__path__", []), f"{package_name}."):
                importlib.import_module(info.name)
        if self._entry_point_group:
            for ep in entry_points(group=self._entry_point_group):
                loaded = ep.load()
                if callable(loaded) and ep.name not in self._components:
                    self.register(ep.name)(loaded)

    def names(self) -> list[str]:
        """Sorted names of all registered components."""
        self._load()
        return sorted(self._components)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._components

    def get(self, name: str) -> Component[T]:
        """The component registered as ``name``; a clear error lists the allowed names."""
        self._load()
        try:
            return self._components[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} '{name}'; allowed: {', '.join(self.names()) or '(none)'}"
            ) from None

    def _validated(self, name: str, params: Mapping[str, Any] | None) -> BaseModel:
        component = self.get(name)
        try:
            return component.params_model.model_validate(dict(params or {}))
        except ValidationError as err:
            allowed = list(component.params_model.model_fields)
            raise ConfigError(
                format_validation_error(f"{self.kind} '{name}'", err, allowed, component.moved)
            ) from None

    def validate(self, name: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Validated parameters with defaults filled in (JSON-compatible), except those
        ``added`` later that the config left unset."""
        model = self._validated(name, params)
        unset = self.get(name).added - model.model_fields_set
        return model.model_dump(mode="json", exclude=set(unset) or None)

    def create(self, name: str, params: Mapping[str, Any] | None = None, **context: Any) -> T:
        """Validate ``params`` and build the component, passing ``context`` through."""
        model = self._validated(name, params)
        values = {k: getattr(model, k) for k in type(model).model_fields}
        return self.get(name).factory(**values, **context)


# The component families. Built-in components live in these packages.
DATASETS: Registry[Dataset] = Registry("dataset", builtin=("fedbench.data",))
PARTITIONERS: Registry[Partitioner] = Registry("partitioner", builtin=("fedbench.data",))
MODELS: Registry[nn.Module] = Registry("model", builtin=("fedbench.models",))
DEFENSES: Registry[Defense] = Registry(
    "defense", builtin=("fedbench.defenses",), entry_point_group="fedbench.defenses"
)
ATTACKS: Registry[Attack] = Registry(
    "attack", builtin=("fedbench.attacks",), entry_point_group="fedbench.attacks"
)

ADVERSARIES: Registry[Adversary] = Registry(
    "adversary", builtin=("fedbench.attacks.adversaries",),
    entry_point_group="fedbench.adversaries",
)

register_dataset = DATASETS.register
register_partitioner = PARTITIONERS.register
register_model = MODELS.register
register_defense = DEFENSES.register
register_attack = ATTACKS.register
register_adversary = ADVERSARIES.register
