"""Tests for fedbench.harness.suite: grid expansion and stable cell ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedbench.config import parse_suite
from fedbench.errors import ConfigError
from fedbench.harness.suite import expand, load_suite, packaged_suites

BASE = {"name": "base", "data": "digits", "model": "logreg", "fl": {"num_clients": 2, "rounds": 1}}


def test_expansion_is_experiments_times_stacks_times_seeds() -> None:
    suite = parse_suite(
        {
            "name": "s",
            "experiments": [BASE, {**BASE, "name": "other", "model": "mlp"}],
            "defenses": [{"label": "none"}, {"label": "noisy", "stack": [{"name": "x_fake"}]}],
            "seeds": [0, 1],
        }
    )
    with pytest.raises(
        ConfigError,
        match=r"suite 's', experiment 'base', defense 'noisy'.*unknown defense 'x_fake'",
    ):
        expand(suite)
    ok = parse_suite(
        {
            "name": "s",
            "experiments": [BASE, {**BASE, "name": "other", "model": "mlp"}],
            "seeds": [0, 1],
        }
    )
    cells = expand(ok)
    assert [c.label for c in cells] == [
        "base/none/seed=0",
        "base/none/seed=1",
        "other/none/seed=0",
        "other/none/seed=1",
    ]
    assert len({c.id for c in cells}) == 4


def test_an_experiment_may_run_its_own_seeds() -> None:
    suite = parse_suite({"name": "s", "seeds": [0],
                         "experiments": [{**BASE, "seeds": [3, 4]}, {**BASE, "name": "other"}]})
    cells = expand(suite)
    assert [c.label for c in cells] == ["base/none/seed=3", "base/none/seed=4",
                                        "other/none/seed=0"]
    assert cells[1].config.seed == 4
    bad = parse_suite({"name": "s", "experiments": [{**BASE, "seeds": [1, -2]}]})
    with pytest.raises(ConfigError, match=r"experiment 'base': field 'seeds' must be"):
        expand(bad)


def test_ids_are_stable_and_change_with_config() -> None:
    suite = parse_suite({"name": "s", "experiments": [BASE]})
    first, again = expand(suite)[0], expand(suite)[0]
    assert first.id == again.id and len(first.id) == 16
    changed = parse_suite(
        {"name": "s", "experiments": [{**BASE, "fl": {"num_clients": 2, "rounds": 2}}]}
    )
    assert expand(changed)[0].id != first.id
    # Writing a default explicitly does not change the cell (defaults are filled before hashing).
    explicit = parse_suite({"name": "s", "experiments": [{**BASE, "partition": {"name": "iid"}}]})
    assert expand(explicit)[0].id == first.id


def test_grid_sweeps_dotted_paths() -> None:
    suite = parse_suite(
        {
            "name": "s",
            "experiments": [BASE],
            "grid": {"fl.num_clients": [2, 4], "model.hidden": [[8], [16]]},
        }
    )
    base_mlp = {**BASE, "model": "mlp"}
    suite = parse_suite({**suite.model_dump(), "experiments": [base_mlp]})
    cells = expand(suite)
    assert len(cells) == 4
    assert sorted((c.config.fl.num_clients, c.config.model.params["hidden"][0]) for c in cells) == [
        (2, 8),
        (2, 16),
        (4, 8),
        (4, 16),
    ]
    assert cells[0].grid == {"fl.num_clients": 2, "model.hidden": [8]}


def test_grid_unknown_path_fails_with_field_name() -> None:
    suite = parse_suite({"name": "s", "experiments": [BASE], "grid": {"fl.rounds_typo": [1]}})
    with pytest.raises(ConfigError, match=r"unknown field 'fl\.rounds_typo'"):
        expand(suite)


def test_packaged_quick_suite_loads() -> None:
    assert "quick" in packaged_suites()
    suite = load_suite("quick")
    assert suite.name == "quick" and expand(suite)


def test_single_experiment_file_becomes_one_cell_suite(tmp_path: Path) -> None:
    path = tmp_path / "one.yaml"
    path.write_text("data: digits\nmodel: logreg\nseed: 3\nfl: {num_clients: 2, rounds: 1}\n")
    suite = load_suite(path)
    cells = expand(suite)
    assert suite.name == "one" and len(cells) == 1 and cells[0].seed == 3


def test_unknown_suite_lists_packaged() -> None:
    with pytest.raises(ConfigError, match=r"no suite named .quik..*quick"):
        load_suite("quik")


def test_defense_sweep_applies_only_to_stacks_with_that_defense() -> None:
    suite = parse_suite(
        {
            "name": "s",
            "experiments": [BASE],
            "defenses": [
                {"label": "none"},
                {"label": "prune", "stack": [{"name": "prune", "ratio": 0.5}]},
                {"label": "ldp", "stack": ["ldp"]},
            ],
            "grid": {"defenses.prune.ratio": [0.2, 0.9], "defenses.ldp.noise.multiplier": [0.1]},
        }
    )
    cells = expand(suite)
    assert [c.defense for c in cells] == ["none", "prune", "ldp", "prune"]
    ratios = [c.config.defenses[0].params["ratio"] for c in cells if c.defense == "prune"]
    assert ratios == [0.2, 0.9]
    ldp = next(c for c in cells if c.defense == "ldp")
    assert ldp.config.defenses[0].params["noise"]["multiplier"] == 0.1
    assert ldp.grid == {"defenses.ldp.noise.multiplier": 0.1}
    assert next(c for c in cells if c.defense == "none").grid == {}


def test_every_packaged_suite_expands() -> None:
    for name in packaged_suites():
        cells = expand(load_suite(name))
        assert cells and len({c.id for c in cells}) == len(cells)


def test_a_misspelt_defense_in_a_grid_key_fails_naming_it() -> None:
    suite = parse_suite({
        "name": "s", "experiments": [BASE],
        "defenses": [{"label": "dp", "stack": [{"name": "dp_fedavg"}]}],
        "grid": {"defenses.dp_fedvag.noise.multiplier": [0.5, 1.0]},
    })
    with pytest.raises(ConfigError, match=r"'defenses\.dp_fedvag\.noise\.multiplier': no "
                                          r"defense stack uses 'dp_fedvag'; defenses present: "
                                          r"dp_fedavg"):
        expand(suite)


def test_a_misspelt_parameter_in_a_grid_key_fails_naming_it() -> None:
    suite = parse_suite({
        "name": "s", "experiments": [BASE],
        "defenses": [{"label": "dp", "stack": [{"name": "dp_fedavg"}]}],
        "grid": {"defenses.dp_fedavg.noise.multiplir": [0.5]},
    })
    with pytest.raises(ConfigError, match=r"noise\.multiplir"):
        expand(suite)


def test_a_single_experiment_file_is_labelled_by_its_defenses(tmp_path: Path) -> None:
    path = tmp_path / "one.yaml"
    path.write_text("name: one\ndata: digits\nmodel: logreg\nfl: {num_clients: 3}\n"
                    "defenses: [secagg, {name: prune, ratio: 0.5}]\nseed: 3\n")
    (cell,) = expand(load_suite(path))
    assert cell.defense == "secagg+prune" and cell.seed == 3
    assert [d.name for d in cell.config.defenses] == ["secagg", "prune"]
    path.write_text("name: none\ndata: digits\nmodel: logreg\n")
    assert expand(load_suite(path))[0].defense == "none"


@pytest.mark.parametrize("name", ["../x", "/abs/path", "a/b", ".hidden", ""])
def test_suite_names_are_plain_folder_names(name: str) -> None:
    with pytest.raises(ConfigError, match="field 'name'"):
        parse_suite({"name": name, "experiments": [BASE]})


def test_sweep_scale_spreads_the_same_digits_over_up_to_one_client_each() -> None:
    from fedbench.harness.build import build_data
    from fedbench.harness.checks import cell_problems
    from fedbench.seeding import Streams

    cells = expand(load_suite("sweep-scale"))
    assert len(cells) == 12 * 4 * 2  # (4 IID + 8 label-skew experiments) × 4 stacks × 2 seeds
    sizes = {c.config.fl.num_clients for c in cells if c.experiment.startswith("iid")}
    assert sizes == {10, 100, 1000, 4000}
    largest = [c for c in cells if c.experiment == "iid-n4000"]
    dp = [c for c in largest if c.defense == "dp_fedavg ε≈2"]
    assert cell_problems(dp) == {}  # DP-FedAvg's Poisson/uniform assumptions hold
    data = build_data(largest[0].config, Streams(largest[0].seed))
    assert {len(c) for c in data.clients} == {1}  # the most clients the training digits allow
