#!/usr/bin/env bash
# Builds ffid, ffid-worker and ffictl with the release preset and installs
# them under PREFIX (bin/). The build step of deploy/Dockerfile and of
# deploy/start.sh: bash deploy/build-release.sh PREFIX
set -euo pipefail
prefix="${1:?usage: build-release.sh PREFIX}"
cd "$(dirname "$0")/.."
cmake --preset release -DFFID_BUILD_TESTS=OFF >/dev/null
cmake --build --preset release --target ffid_server_main ffid_worker_main ffictl
cmake --install build/release --prefix "$prefix" >/dev/null
