#!/usr/bin/env bash
# Installs everything ffid needs to build and test on Debian 12.
# Idempotent and non-interactive: CI, the Dockerfile and a new user all run it.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libgrpc++-dev libgrpc-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
  libffi-dev libabsl-dev libgtest-dev libgmock-dev libseccomp-dev libbenchmark-dev
  golang-github-gogo-googleapis-dev  # google/rpc/status.proto and error_details.proto
  git ca-certificates
  clang libclang-rt-dev  # libFuzzer targets (tests/fuzz)
  openssl libssl-dev     # SHA-256 for tokens and library pins; test certificates
  python3 python3-venv python3-pip  # the Python client's tests (clients/python)
)
# buf (for `buf lint` on the API) and the Node client's dependencies
# (clients/node) come from the npm registry; use the machine's node and npm
# if there are any (Node 18 or later), else Debian's.
if ! command -v node >/dev/null 2>&1; then packages+=(nodejs); fi
if ! command -v npm >/dev/null 2>&1; then packages+=(npm); fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  sudo_cmd=()
  if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
