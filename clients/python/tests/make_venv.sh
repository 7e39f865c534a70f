#!/usr/bin/env bash
# Creates (or updates) the virtual environment the Python client's tests run
# in: bash clients/python/tests/make_venv.sh VENV_DIR
# Installs the pinned versions of constraints.txt from PyPI, grpcio-tools
# and setuptools included, so that run.sh can rebuild the package offline.
set -euo pipefail
venv="${1:?usage: make_venv.sh VENV_DIR}"
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${FFID_PYTHON:-python3}"
if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip=("$venv/bin/python" -m pip -q)
"${pip[@]}" install -c "$here/constraints.txt" grpcio-tools setuptools
# The build-time requirements come from the same pins (PIP_CONSTRAINT also
# reaches pip's isolated build environment).
PIP_CONSTRAINT="$here/constraints.txt" "${pip[@]}" install "$here[test]"
