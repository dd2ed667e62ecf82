"""Read records of schema 1 (written before records had a version) as schema 2.

Schema 1 kept what an ε means inside its note (``δ=1e-05, user-level, accountant=rdp,
secure_mode=False; …``) and a figure's file in the note; the DP defenses took their noise
settings, and ``distributed_dp`` its secure-aggregation settings, as flat parameters. Migration
parses the note into fields, moves each parameter to the place its component declares
(``Registry.register(..., moved=...)``), re-validates the configuration and gives the cell the
id that configuration has today, so old and new runs of the same cell compare. A record whose
configuration no longer validates is refused with the command that regenerates it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from fedbench.errors import ConfigError
from fedbench.harness.schema import SCHEMA_VERSION
from fedbench.registry import DEFENSES

_EPSILON_NOTE = re.compile(
    r"δ=(?P<delta>[^,]+), (?P<level>\w+)-level, accountant=(?P<accountant>[^,]+), "
    r"secure_mode=(?P<secure>\w+)(?:; (?P<rest>.*))?",
    re.DOTALL,
)
Located = tuple[str, dict[str, Any]]


def migrate_rows(rows: list[Located], problems: list[str]) -> Iterator[Located]:
    """Every row as schema 2: current rows unchanged, schema-1 rows migrated run by run.

    Schema-1 rows whose run cannot be migrated are skipped, with one line in ``problems``.
    """
    new_ids = _new_cell_ids([item for item in rows if "schema_version" not in item[1]], problems)
    for where, row in rows:
        if "schema_version" in row:
            yield where, row
        elif row["run"] in new_ids:
            yield where, _migrated(row, new_ids[row["run"]])


def _new_cell_ids(old: list[Located], problems: list[str]) -> dict[str, tuple[str, dict]]:
    """run -> (cell id, configuration) under today's schema, for each schema-1 cell row."""
    from fedbench.harness.suite import cell_id  # the suite module needs the whole config stack

    found: dict[str, tuple[str, dict]] = {}
    for where, row in old:
        if row.get("type") != "cell":
            continue
        try:
            config = upgrade_config(dict(row.get("config") or {}))
            found[row["run"]] = (cell_id(config), config)
        except ConfigError as err:
            first = str(err).splitlines()[0]
            problems.append(
                f"{where}: a schema-1 record of cell {row.get('label', row['cell'])} whose "
                f"configuration no longer validates ({first}); regenerate it with "
                f"`fedbench run {row.get('suite', '<suite>')}`"
            )
    return found


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 experiment configuration, validated and normalised under today's schema."""
    from fedbench.config import parse_experiment

    defenses = []
    for component in config.get("defenses") or []:
        name, params = component.get("name"), dict(component.get("params") or {})
        moved = DEFENSES.get(str(name)).moved
        for old, new in moved.items():
            if old in params:
                _set_dotted(params, new, params.pop(old))
        defenses.append({"name": name, "params": params})
    upgraded = {**config, "defenses": defenses}
    return parse_experiment(upgraded, source="schema-1 record").model_dump(mode="json")


def _set_dotted(target: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        target = target.setdefault(key, {})
    target[last] = value


def _migrated(row: dict[str, Any], new: tuple[str, dict]) -> dict[str, Any]:
    out = {**row, "schema_version": SCHEMA_VERSION, "cell": new[0]}
    if row["type"] == "cell":
        out["config"] = new[1]
        return out
    if row.get("metric") == "figure":
        out["path"], out["note"] = row.get("note") or None, ""
    elif row.get("metric") == "epsilon":
        out.update(_epsilon_fields(str(row.get("note") or "")))
    return out


def _epsilon_fields(note: str) -> dict[str, Any]:
    """δ, level, accountant and secure mode of a schema-1 ε note (and the rest as the note)."""
    terms = _EPSILON_NOTE.match(note)
    if terms is None:
        return {}
    return {
        "delta": float(terms["delta"]),
        "level": terms["level"],
        "accountant": terms["accountant"],
        "secure_mode": terms["secure"] == "True",
        "note": terms["rest"] or "",
    }
