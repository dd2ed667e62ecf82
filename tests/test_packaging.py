"""The installed package layout matches DESIGN.md (attacks/, defenses/ as fedbench.*)."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"fedbench": "fedbench", "fedbench.attacks": "attacks", "fedbench.defenses": "defenses"}


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == MAPPED
    on_disk = set()
    for package, folder in MAPPED.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            on_disk.add(".".join((package, *relative)))
    assert on_disk == set(config["packages"])


def test_installed_names_import() -> None:
    import fedbench.attacks.base
    import fedbench.defenses.base

    assert fedbench.attacks.base.__file__.endswith("attacks/base.py")
    assert fedbench.defenses.base.__file__.endswith("defenses/base.py")
