"""Provenance stamped on every result: package versions, git commit, host."""

from __future__ import annotations

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


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """Commit of the working tree fedbench runs from (with '+dirty' if modified), if any."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def host() -> dict[str, str | int]:
    """Machine description (name, platform, CPU count)."""
    import os

    return {
        "name": platform.node(),
        "platform": platform.platform(),
        "cpus": os.cpu_count() or 0,
        "executable": sys.executable,
    }
