#!/usr/bin/env bash
# The README's second command: installs what is needed, builds every target
# with a CMake preset (default: "default"; also asan, tsan, release) and runs
# the whole test suite with ctest, then lints the public API with buf.
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-default}"

bash deploy/install-deps.sh

cmake --preset "$preset"
cmake --build --preset "$preset"
# The Python client's tests (python_client_test in ctest) run in a virtual
# environment with pinned packages from PyPI.
bash clients/python/tests/make_venv.sh "build/$preset/python-venv"
# The Node client's tests (node_client_test) need its npm dependencies,
# pinned by clients/node/package-lock.json.
npm ci --prefix clients/node --no-audit --no-fund --silent
# The Go client's tests (go_client_test) run offline against the module
# cache that `go mod download` fills here (versions pinned by go.sum).
bash clients/go/tests/run.sh --download
# deploy_k8s_test validates deploy/k8s with kubernetes-validate (pinned, from
# PyPI; it carries the Kubernetes schemas, so the check runs offline);
# reflection_test speaks server reflection with grpcio-reflection (pinned).
# pip reaches PyPI only for what the venv lacks.
if [[ ! -x "build/$preset/deploy-venv/bin/python" ]]; then
  python3 -m venv "build/$preset/deploy-venv"
fi
PIP_DISABLE_PIP_VERSION_CHECK=1 "build/$preset/deploy-venv/bin/python" -m pip -q \
  install -r deploy/tools/requirements-deploy.txt
ctest --preset "$preset"

# The libFuzzer targets (config parser, request validation) for a few
# seconds each; `bash deploy/fuzz.sh 600` runs them longer.
if [[ "$preset" == default ]]; then
  bash deploy/fuzz.sh "${FFID_FUZZ_SECONDS:-10}"
fi

# The public API: buf lint, and buf breaking against the previous commit.
npm ci --prefix deploy/tools --no-audit --no-fund --silent
buf=deploy/tools/node_modules/.bin/buf
(cd proto && "../$buf" lint)
if git rev-parse --verify -q HEAD~1 >/dev/null && git cat-file -e HEAD~1:proto/buf.yaml 2>/dev/null; then
  (cd proto && "../$buf" breaking --against "../.git#ref=HEAD~1,subdir=proto")
fi
echo "buf lint and buf breaking: passed"
