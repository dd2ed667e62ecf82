"""Tests for fedbench.config: validation errors name the field and the allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedbench.config import load_yaml, parse_experiment, parse_suite
from fedbench.errors import ConfigError


def test_defaults_and_flat_component_form() -> None:
    cfg = parse_experiment(
        {"model": {"name": "mlp", "hidden": [8, 8]}, "attacks": ["loss_threshold"]}
    )
    assert cfg.data.name == "digits"
    assert cfg.model.params == {"hidden": [8, 8]}
    assert cfg.attacks[0].name == "loss_threshold"


def test_unknown_top_level_key() -> None:
    with pytest.raises(ConfigError, match="unknown field 'rouds'"):
        parse_experiment({"rouds": 3})


def test_unknown_fl_key_names_path() -> None:
    with pytest.raises(ConfigError, match=r"unknown field 'fl\.client_lrr'"):
        parse_experiment({"fl": {"client_lrr": 0.1}})


def test_bad_value_names_field() -> None:
    with pytest.raises(ConfigError, match=r"field 'fl\.rounds'.*greater than or equal to 1"):
        parse_experiment({"fl": {"rounds": 0}})


def test_bad_literal_lists_allowed_values() -> None:
    with pytest.raises(ConfigError, match=r"fl\.algorithm.*'fedsgd' or 'fedavg'"):
        parse_experiment({"fl": {"algorithm": "fedprox"}})


def test_unknown_component_lists_registered_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'lenet5'; allowed: .*lenet"):
        parse_experiment({"model": "lenet5"})


def test_bad_component_parameter_names_it() -> None:
    with pytest.raises(ConfigError, match=r"partitioner 'dirichlet': unknown parameter 'alpah'"):
        parse_experiment({"partition": {"name": "dirichlet", "alpah": 0.1}})


def test_inconsistent_sampling_settings() -> None:
    with pytest.raises(ConfigError, match="clients_per_round or client_fraction, not both"):
        parse_experiment({"fl": {"clients_per_round": 2, "client_fraction": 0.5}})
    with pytest.raises(ConfigError, match=r"clients_per_round \(20\) exceeds num_clients \(10\)"):
        parse_experiment({"fl": {"clients_per_round": 20, "num_clients": 10}})


def test_expected_clients() -> None:
    assert (
        parse_experiment({"fl": {"num_clients": 50, "client_fraction": 0.1}}).fl.expected_clients
        == 5
    )
    assert parse_experiment({"fl": {"num_clients": 50}}).fl.expected_clients == 50


def test_broken_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nfl: {rounds: 3\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:3:1: invalid YAML: expected ','"):
        load_yaml(path)


def test_missing_file_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope\.yaml"):
        load_yaml(tmp_path / "nope.yaml")


def test_yaml_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_yaml(path)


def test_suite_rejects_repeated_defense_labels() -> None:
    with pytest.raises(ConfigError, match="repeated: a"):
        parse_suite(
            {"name": "s", "experiments": [{}], "defenses": [{"label": "a"}, {"label": "a"}]}
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fl": {"rounds": True}}, "field 'fl.rounds': Input should be a valid integer"),
        ({"fl": {"client_lr": float("inf")}}, "field 'fl.client_lr': Input should be a finite"),
        ({"fl": {"num_clients": "10"}}, "field 'fl.num_clients': Input should be a valid integer"),
        ({"defenses": [{"name": "dp_fedavg", "clip_norm": -1}]},
         "defense 'dp_fedavg': parameter 'clip_norm' = -1: Input should be greater than 0"),
        ({"defenses": [{"name": "secagg", "neighbours": 5}]},
         "parameter 'neighbours' = 5: Input should be 'full' or 'auto', or input should be a "
         "multiple of 2"),
        ({"attacks": [{"name": "dlg", "iterations": 0}]},
         "attack 'dlg': parameter 'iterations' = 0: Input should be greater than or equal to 1"),
        ({"partition": {"name": "dirichlet", "alpha": float("nan")}},
         "partitioner 'dirichlet': parameter 'alpha'"),
    ],
)
def test_bad_values_fail_at_load_naming_the_field(change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_experiment({"data": "digits", **change})
    assert message in str(err.value)


def test_duplicate_yaml_keys_are_refused_with_both_lines(tmp_path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("data: digits\nfl:\n  rounds: 3\n  rounds: 30\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml:4:3: invalid YAML: duplicate key 'rounds' "
                                          r"\(first at line 3\)"):
        load_yaml(path)
