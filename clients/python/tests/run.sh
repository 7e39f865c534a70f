#!/usr/bin/env bash
# Runs the Python client's pytest suite against a daemon built by CMake
# (ctest registers it as python_client_test):
#   bash clients/python/tests/run.sh VENV_DIR FFID FFID_WORKER FIXTURE_LIB CALLBACKS_FIXTURE_LIB
# Reinstalls the package from the working tree first, offline, so the tests
# always see the current source. Exits 77 (ctest: skipped) when VENV_DIR
# has not been made yet (deploy/test.sh makes it with make_venv.sh).
set -euo pipefail
venv="$1"
export FFID_BIN="$2" FFID_WORKER_BIN="$3" FFID_FIXTURE="$4" FFID_CALLBACKS_FIXTURE="$5"
here="$(cd "$(dirname "$0")/.." && pwd)"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "skipped: no Python environment at $venv; make it with" \
       "bash clients/python/tests/make_venv.sh $venv (deploy/test.sh does)"
  exit 77
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation --no-index \
  --force-reinstall "$here"
cd "$here"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider tests
