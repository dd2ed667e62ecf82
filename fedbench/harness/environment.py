"""Provenance stamped on every result: package versions, git commit, host."""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

_PACKAGES = (
    "fedbench", "torch", "torchvision", "opacus", "numpy", "scikit-learn", "tenseal", "phe",
    "gmpy2", "cryptography", "pycryptodome", "pydantic",
)


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """Python and the versions of the packages that shape results."""
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


# What decides a result: the code of the three trees and the project file (not results/, docs).
SOURCE_PATHS = ("fedbench", "attacks", "defenses", "pyproject.toml")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, timeout=20, check=True
    ).stdout


@lru_cache(maxsize=1)
def code_version() -> str:
    """The version of the code that produces results: the git commit, plus ``+`` and a hash of
    the uncommitted changes to the source (diff and untracked source files) when there are
    any; ``fedbench <version>`` outside a git checkout (an installed package)."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
        diff = _git(root, "diff", "HEAD", "--", *SOURCE_PATHS)
        untracked = _git(root, "ls-files", "--others", "--exclude-standard", "--", *SOURCE_PATHS)
    except (OSError, subprocess.SubprocessError):
        return f"fedbench {versions()['fedbench']}"
    if not diff and not untracked.strip():
        return commit
    digest = hashlib.sha256(diff.encode())
    for name in sorted(untracked.split()):
        digest.update(name.encode() + (root / name).read_bytes())
    return f"{commit}+{digest.hexdigest()[:12]}"


def git_commit() -> str | None:
    """The commit of the working tree fedbench runs from (``+dirty`` when its source has
    uncommitted changes), or None outside git."""
    version = code_version()
    if version.startswith("fedbench "):
        return None
    return version.split("+")[0] + ("+dirty" if "+" in version else "")


def host() -> dict[str, str | int | float]:
    """Machine description (name, platform, CPU count) and how busy it was: the 1-minute load
    average per CPU when the cell ended (``fedbench compare`` does not judge timed ratios of
    cells measured at very different loads)."""
    import os

    cpus = os.cpu_count() or 0
    described: dict[str, str | int | float] = {
        "name": platform.node(),
        "platform": platform.platform(),
        "cpus": cpus,
        "executable": sys.executable,
    }
    if hasattr(os, "getloadavg") and cpus:
        described["load_per_cpu"] = round(os.getloadavg()[0] / cpus, 2)
    return described
