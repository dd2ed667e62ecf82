"""The installed package layout matches DESIGN.md: attacks/ and defenses/ are fedbench.attacks
and fedbench.defenses, on disk (symlinks) as well as installed."""

from __future__ import annotations

import os
from pathlib import Path

import tomllib
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_TREES = ("attacks", "defenses")


def test_the_plugin_trees_are_seen_at_their_import_names() -> None:
    for tree in PLUGIN_TREES:
        link = ROOT / "fedbench" / tree
        assert link.is_symlink() and os.readlink(link) == f"../{tree}"
        assert link.resolve() == (ROOT / tree).resolve()


def test_every_package_folder_is_packaged() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    include = config["packages"]["find"]["include"]
    found = set(find_packages(str(ROOT), include=include))
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for tree in ("fedbench", *PLUGIN_TREES)
        for init in (ROOT / tree).rglob("__init__.py")
    }
    on_disk = {name if name.startswith("fedbench") else f"fedbench.{name}" for name in on_disk}
    assert on_disk <= found
    assert (ROOT / "fedbench" / "py.typed").exists()
    assert "py.typed" in config["package-data"]["fedbench"]


def test_installed_names_import() -> None:
    import fedbench.attacks.gradient_inversion.dlg
    import fedbench.defenses.secagg.channel

    assert fedbench.attacks.gradient_inversion.dlg.__file__.endswith("gradient_inversion/dlg.py")
    assert fedbench.defenses.secagg.channel.__file__.endswith("secagg/channel.py")


def test_the_core_never_imports_the_plugin_trees() -> None:
    # fedbench/fl and fedbench/harness depend on the interfaces in the core only; the plugin
    # trees are reached through the registries (which import them by name).
    import ast

    root = Path(__file__).resolve().parents[1] / "fedbench"
    plugins = ("fedbench.attacks", "fedbench.defenses", "attacks", "defenses")
    offenders = []
    for folder in ("fl", "harness"):
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                offenders += [f"{path.name}: {n}" for n in names
                              if n.split(".")[0] in plugins or n.startswith(plugins[:2])]
    assert not offenders
