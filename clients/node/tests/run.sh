#!/usr/bin/env bash
# Runs the Node client's tests (node --test) against a daemon built by CMake
# (ctest registers this as node_client_test, after node_client_build):
#   bash clients/node/tests/run.sh FFID FFID_WORKER FIXTURE_LIB CALLBACKS_FIXTURE_LIB [TEST_FILE...]
#   bash clients/node/tests/run.sh --build    # compiles the package (tsc) only
# Exits 77 (ctest: skipped) when node or the package's node_modules are
# missing: `npm ci` in clients/node (deploy/test.sh does it) installs them.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
# Paths given relative to the caller's directory stay valid after the cd.
args=()
for arg in "$@"; do
  if [[ "$arg" != --* && "$arg" != /* && -e "$arg" ]]; then arg="$PWD/$arg"; fi
  args+=("$arg")
done
set -- "${args[@]}"
cd "$here"
if ! command -v node >/dev/null 2>&1 || [[ ! -x node_modules/.bin/tsc ]]; then
  # node_client_build succeeds with nothing to do (a skipped fixture set-up
  # would mark the tests that need it as not run); the tests skip.
  [[ "${1:-}" == "--build" ]] && { echo "nothing to build: no node or node_modules"; exit 0; }
  echo "skipped: no node, or no clients/node/node_modules; install them with" \
       "npm ci --prefix clients/node (deploy/test.sh does)"
  exit 77
fi
if [[ "${1:-}" == "--build" ]]; then
  npm run --silent build
  exec npm run --silent typecheck
fi
export FFID_BIN="$1" FFID_WORKER_BIN="$2" FFID_FIXTURE="$3" FFID_CALLBACKS_FIXTURE="$4"
shift 4
if [[ ! -f dist/index.js ]]; then npm run --silent build; fi
if (($#)); then files=("$@"); else files=(tests/*.test.js); fi
exec node --test "${files[@]}"
