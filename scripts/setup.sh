#!/usr/bin/env bash
# Installs parekit with everything its samples and tests need, from this repository's files only.
# torch is pinned (parekit[samples]) to the CPU build 2.13.0; an unpinned torch pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install -q --disable-pip-version-check -e ".[dev]"
"$PY" -m pip install -q --disable-pip-version-check --no-deps -r requirements/samples-no-deps.txt
