#!/usr/bin/env bash
# Runs the Go client's tests against a daemon built by CMake (ctest registers
# it as go_client_test):
#   bash clients/go/tests/run.sh FFID FFID_WORKER FIXTURE_LIB CALLBACKS_FIXTURE_LIB
# or fills the module cache for them (deploy/test.sh does, once):
#   bash clients/go/tests/run.sh --download
# The tests download nothing: GOPROXY=off, and go.mod/go.sum are read-only.
# Exits 77 (ctest: skipped) when there is no Go 1.26 or the module cache
# lacks the client's dependencies.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
export PATH="$PATH:/usr/local/go/bin"
export GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=readonly
if [[ -z "${HOME:-}" && -z "${GOCACHE:-}" ]]; then export GOCACHE="$here/.gocache"; fi

if ! command -v go >/dev/null 2>&1; then
  echo "skipped: no go on PATH (deploy/install-deps.sh explains how to get Go 1.26)"
  exit 77
fi
if [[ "${1:-}" == "--download" ]]; then
  exec go mod download
fi

export GOPROXY=off
if ! go list -deps -test ./... >/dev/null 2>&1; then
  echo "skipped: the Go module cache lacks the client's dependencies; fill it with"
  echo "  bash clients/go/tests/run.sh --download   (deploy/test.sh does)"
  go list -deps -test ./... 2>&1 | head -5 || true
  exit 77
fi
export FFID_BIN="$1" FFID_WORKER_BIN="$2" FFID_FIXTURE="$3" FFID_CALLBACKS_FIXTURE="$4"
go vet ./...
exec go test -count=1 ./...
