#!/usr/bin/env bash
# Makes the virtual environment of the local Triton server (nvidia-pytriton's tritonserver, Python
# backend only) from requirements/triton-venv.txt: build/triton-venv by default, or the folder given.
# The serving tests (pytest -m serving) and bench/triton_load.py find it there (or via PAREKIT_TRITON_VENV).
#
#   bash scripts/triton_venv.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
venv=${1:-build/triton-venv}
stamp="$venv/.parekit-requirements"
if [[ -f "$stamp" ]] && cmp -s "$stamp" requirements/triton-venv.txt; then
  echo "triton_venv.sh: $venv is up to date"
  exit 0
fi
rm -rf "$venv"
"$PY" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r requirements/triton-venv.txt
cp requirements/triton-venv.txt "$stamp"
echo "triton_venv.sh: made $venv ($("$venv/bin/python" -c 'import pytriton, numpy; print("numpy", numpy.__version__)'))"
