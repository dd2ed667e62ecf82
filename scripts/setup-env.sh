#!/usr/bin/env bash
# Create (or update) .venv with fedbench, its test tools and a torch build that imports here.
# Idempotent: rerunning installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# torch first, from requirements/torch.txt, so pip never resolves a multi-GB build on its own.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/torch.txt
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,lint]"
