#!/usr/bin/env bash
# Runs the Go client's tests against a daemon built by CMake (ctest registers
# it as go_client_test):
#   bash clients/go/tests/run.sh FFID FFID_WORKER FIXTURE_LIB CALLBACKS_FIXTURE_LIB
# or fills the module cache for them (deploy/test.sh does, once):
#   bash clients/go/tests/run.sh --download
# or checks that the committed ffidpb/ is what `go generate` makes from
# proto/ now (ctest: go_client_generated_code):
#   bash clients/go/tests/run.sh --check-generated
# The tests download nothing: GOPROXY=off, and go.mod/go.sum are read-only.
# Exits 77 (ctest: skipped) when there is no Go 1.26 or the module cache
# lacks the client's dependencies.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
export PATH="$PATH:/usr/local/go/bin"
export GOTOOLCHAIN=local GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false"
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
if [[ "${1:-}" == "--check-generated" ]]; then
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
  module=github.com/ffid/ffid/clients/go
  protoc -I../../proto --plugin=protoc-gen-go="$(go tool -n protoc-gen-go)" \
    --plugin=protoc-gen-go-grpc="$(go tool -n protoc-gen-go-grpc)" \
    --go_out="$out" --go_opt=module=$module --go-grpc_out="$out" --go-grpc_opt=module=$module \
    ffid/v1/types.proto ffid/v1/errors.proto ffid/v1/ffid.proto
  if ! diff -r "$out/ffidpb" ffidpb >/dev/null; then
    diff -r "$out/ffidpb" ffidpb | head -20 || true
    echo "FAILED: clients/go/ffidpb/ is not what proto/ generates now; regenerate it with"
    echo "  (cd clients/go && go generate ./...)   and commit the result"
    exit 1
  fi
  echo "clients/go/ffidpb/ matches proto/: 1 passed, 0 failed"
  exit 0
fi
export FFID_BIN="$1" FFID_WORKER_BIN="$2" FFID_FIXTURE="$3" FFID_CALLBACKS_FIXTURE="$4"
go vet ./...
exec go test -count=1 ./...
