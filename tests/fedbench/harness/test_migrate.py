"""Tests for fedbench.harness.migrate: schema-1 records (as committed before the schema had a
version) read as schema 2, under the cell ids today's suite expansion gives them."""

from __future__ import annotations

import json
from pathlib import Path

from fedbench.harness.migrate import upgrade_config
from fedbench.harness.records import read_records
from fedbench.harness.suite import expand, load_suite

SCHEMA_1 = Path(__file__).parent / "data" / "schema1_records.jsonl"


def test_schema_1_cells_get_the_ids_the_packaged_suite_gives_them_today() -> None:
    records = read_records(SCHEMA_1)
    assert records.problems == [] and len(records.cells) == 2
    today = {c.label: c.id for c in expand(load_suite("quick"))}
    for cell_id, cell in records.cells.items():
        assert today[cell.label] == cell_id
    assert {m.cell for m in records.metrics} == set(records.cells)


def test_what_an_epsilon_means_moves_from_the_note_into_fields() -> None:
    epsilons = [m for m in read_records(SCHEMA_1).metrics if m.metric == "epsilon"]
    assert len(epsilons) == 2
    for eps in epsilons:
        assert (eps.delta, eps.level, eps.accountant, eps.secure_mode) == (1e-5, "user", "rdp",
                                                                           False)
        assert "δ=" not in eps.note and "-level" not in eps.note
    figures = [m for m in read_records(SCHEMA_1).metrics if m.metric == "figure"]
    assert figures and all(m.path and m.path.endswith(".png") and not m.note for m in figures)


def test_flat_dp_and_protocol_parameters_move_into_their_groups() -> None:
    old = next(json.loads(line) for line in SCHEMA_1.open() if '"type": "cell"' in line
               and "distributed_dp" in line)
    params = old["config"]["defenses"][0]["params"]
    assert params["target_epsilon"] == 8.0 and "neighbours" in params
    new = upgrade_config(old["config"])["defenses"][0]["params"]
    assert new["noise"]["target_epsilon"] == 8.0 and new["secagg"]["neighbours"] == "full"
    assert "target_epsilon" not in new and "neighbours" not in new


def test_a_schema_1_record_that_no_longer_validates_is_refused_with_the_command(
    tmp_path: Path,
) -> None:
    lines = SCHEMA_1.read_text().splitlines()
    broken = [json.loads(line) for line in lines]
    for row in broken:
        if row["type"] == "cell":
            row["config"]["fl"]["rounds"] = "many"
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in broken))
    records = read_records(path)
    assert not records.cells and not records.metrics
    assert len(records.problems) == 2
    assert all("no longer validates" in p and "fedbench run quick" in p for p in records.problems)
