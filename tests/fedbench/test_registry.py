"""Tests for fedbench.registry."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from fedbench.errors import ConfigError
from fedbench.registry import ATTACKS, DATASETS, MODELS, PARTITIONERS, Registry


def _registry() -> Registry[object]:
    reg: Registry[object] = Registry("widget")

    @reg.register("box", context=("size",))
    class Box:
        """A box."""

        def __init__(self, *, size: int, depth: float = 1.0, tags: list[str] | None = None):
            self.size, self.depth, self.tags = size, depth, tags

    return reg


def test_create_validates_strictly() -> None:
    reg = _registry()
    box = reg.create("box", {"depth": 2}, size=3)  # an integer is a number
    assert (box.size, box.depth) == (3, 2.0)  # type: ignore[attr-defined]
    for bad in ("2.5", True, float("inf"), float("nan")):  # a string, a boolean, no finite number
        with pytest.raises(ConfigError, match="parameter 'depth'"):
            reg.create("box", {"depth": bad}, size=3)


def test_context_arguments_are_not_user_parameters() -> None:
    reg = _registry()
    assert set(reg.get("box").parameters()) == {"depth", "tags"}
    with pytest.raises(ConfigError, match="unknown parameter 'size'"):
        reg.validate("box", {"size": 4})


def test_unknown_name_lists_allowed_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown widget 'bx'; allowed: box"):
        _registry().get("bx")


def test_typo_in_parameter_names_field_and_allowed() -> None:
    with pytest.raises(ConfigError) as err:
        _registry().validate("box", {"detph": 2})
    assert "unknown parameter 'detph'" in str(err.value)
    assert "depth, tags" in str(err.value)


def test_bad_value_names_field() -> None:
    with pytest.raises(ConfigError, match=r"parameter 'depth' = 'deep'"):
        _registry().validate("box", {"depth": "deep"})


def test_validate_fills_defaults() -> None:
    assert _registry().validate("box") == {"depth": 1.0, "tags": None}


def test_double_registration_is_an_error() -> None:
    reg = _registry()
    with pytest.raises(ConfigError, match="registered twice"):
        reg.register("box")(lambda: None)


def test_builtin_components_are_discovered() -> None:
    assert {"digits", "breast_cancer", "image_patches", "mnist", "cifar10"} <= set(DATASETS.names())
    assert {"iid", "dirichlet", "shards"} <= set(PARTITIONERS.names())
    assert {"lenet", "convnet", "mlp", "logreg", "resnet18"} <= set(MODELS.names())
    assert "loss_threshold" in ATTACKS.names()


def test_entry_point_components_are_discovered(tmp_path: Path, monkeypatch) -> None:
    # A real installed-distribution layout: a module plus a dist-info with entry_points.txt.
    (tmp_path / "thirdparty_defense.py").write_text(
        textwrap.dedent("""
        from fedbench.defense import Defense

        class Nothing(Defense):
            '''A third-party defense that does nothing.'''

            def __init__(self, *, strength: int = 1) -> None:
                self.strength = strength
    """)
    )
    dist = tmp_path / "thirdparty_defense-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: thirdparty-defense\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[fedbench.defenses]\nnothing = thirdparty_defense:Nothing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[object] = Registry("defense", entry_point_group="fedbench.defenses")
    assert reg.names() == ["nothing"]
    assert reg.create("nothing", {"strength": 3}).strength == 3  # type: ignore[attr-defined]
    sys.modules.pop("thirdparty_defense", None)


def test_parameters_added_later_stay_out_of_the_dump_until_a_config_sets_them() -> None:
    reg: Registry[object] = Registry("widget")

    @reg.register("lamp", added=("dimmer",))
    class Lamp:
        """A lamp."""

        def __init__(self, *, watts: int = 40, dimmer: bool = False):
            self.watts, self.dimmer = watts, dimmer

    assert reg.validate("lamp", {}) == {"watts": 40}  # the id of a config written before
    assert reg.validate("lamp", {"dimmer": False}) == {"watts": 40, "dimmer": False}
    assert reg.create("lamp", reg.validate("lamp", {})).dimmer is False


def test_secagg_configs_written_before_its_checks_keep_their_parameters() -> None:
    from fedbench.registry import DEFENSES

    assert "consistency_check" not in DEFENSES.validate("secagg", {})
    assert DEFENSES.validate("secagg", {"consistency_check": False})["consistency_check"] is False
