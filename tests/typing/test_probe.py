"""The typing probe bites: with the plugin trees hidden from mypy (as the old package-dir
mapping hid them), the probe fails to type-check; with the project's configuration it passes."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("probe_types.py")
HIDDEN = """
[[tool.mypy.overrides]]
module = ["fedbench.defenses.*", "fedbench.attacks.*", "fedbench.defense", "fedbench.attack"]
follow_imports = "skip"
"""


@pytest.mark.slow
def test_the_probe_fails_when_the_plugin_types_degrade_to_any(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api", reason="mypy is in the lint extra")
    config = tmp_path / "pyproject.toml"
    config.write_text((ROOT / "pyproject.toml").read_text() + HIDDEN)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    out, _, status = api.run(["--config-file", str(ROOT / "pyproject.toml"), *cache, str(PROBE)])
    assert status == 0, out
    out, _, status = api.run(["--config-file", str(config), *cache, str(PROBE)])
    assert status == 1
    assert 'Expression is of type "Any"' in out and 'Unused "type: ignore" comment' in out
