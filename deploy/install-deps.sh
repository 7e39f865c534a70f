#!/usr/bin/env bash
# Installs everything ffid needs to build and test on Debian 12.
# Idempotent and non-interactive: CI, the Dockerfile and a new user all run it.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libgrpc++-dev libgrpc-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
  libffi-dev libabsl-dev libgtest-dev libgmock-dev libseccomp-dev libbenchmark-dev
  golang-github-gogo-googleapis-dev  # google/rpc/status.proto and error_details.proto
  grpc-proto  # grpc/health/v1/health.proto (the daemon's synchronous health service)
  prometheus-cpp-dev  # the daemon's /metrics (prometheus-cpp over civetweb)
  nlohmann-json3-dev  # the daemon's JSON log lines
  git ca-certificates
  clang libclang-rt-dev  # libFuzzer targets (tests/fuzz)
  openssl libssl-dev     # SHA-256 for tokens and library pins; test certificates
  libdw-dev  # elfutils: DWARF symbolization of crashed workers' native frames (the daemon)
  systemd  # systemd-analyze verify of deploy/systemd/ffid.service (tests)
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

# Go 1.26 or later, for the Go client (clients/go) and its tests: current
# gRPC-Go needs it, and Debian 12's golang-go is 1.19. Use the machine's go
# (on PATH, /usr/local/go/bin or /usr/local/bin); else Debian's golang-go
# fetches the Go toolchain from the Go module proxy as the module
# golang.org/toolchain (what newer go commands do for GOTOOLCHAIN), and
# /usr/local/bin/go links to it. FFID_WITHOUT_GO=1 skips this: building and
# running the daemon (deploy/start.sh, the Dockerfile) needs no Go.
go_toolchain=go1.26.8
go_is_recent() {
  "$1" env GOVERSION 2>/dev/null | awk -F'[go.]' '{ exit !($3 > 1 || ($3 == 1 && $4 >= 26)) }'
}
find_go() {
  local candidate
  for candidate in "$(command -v go || true)" /usr/local/go/bin/go /usr/local/bin/go; do
    if [[ -n $candidate && -x $candidate ]] && go_is_recent "$candidate"; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}
# bootstrap_go GO: downloads $go_toolchain with GO (any go 1.16+) and links it.
bootstrap_go() {
  local tmp dir arch
  arch="$(dpkg --print-architecture)"
  tmp="$(mktemp -d)"
  (cd "$tmp" && "$1" mod init bootstrap >/dev/null 2>&1 &&
    GOFLAGS=-mod=mod "$1" mod download -json "golang.org/toolchain@v0.0.1-${go_toolchain}.linux-${arch}") \
    >"$tmp/download.json" || { rm -rf "$tmp"; return 1; }
  dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' "$tmp/download.json")"
  rm -rf "$tmp"
  [[ -n $dir && -f $dir/bin/go ]] || return 1
  # Module zips keep no file modes: make the toolchain's programs executable.
  chmod +x "$dir"/bin/* "$dir"/pkg/tool/*/* || return 1
  "${sudo_cmd[@]}" ln -sf "$dir/bin/go" /usr/local/bin/go
}
if [[ "${FFID_WITHOUT_GO:-0}" == 1 ]]; then
  :
elif ! find_go >/dev/null; then
  echo "install-deps: no Go 1.26 or later; fetching ${go_toolchain} from the Go module proxy with Debian's golang-go"
  sudo_cmd=()
  if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
  if ! dpkg-query -W -f='${Status}' golang-go 2>/dev/null | grep -q "ok installed"; then
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -q
    "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends golang-go
  fi
  if ! bootstrap_go /usr/bin/go || ! find_go >/dev/null; then
    echo "install-deps: error: the Go client (clients/go) needs Go 1.26 or later, and it could" >&2
    echo "not be installed. Install Go 1.26 (go.dev/dl) so that 'go' is on PATH or in" >&2
    echo "/usr/local/go/bin, then run this script again." >&2
    exit 1
  fi
fi
if [[ "${FFID_WITHOUT_GO:-0}" != 1 ]]; then
  echo "install-deps: Go: $("$(find_go)" version)"
fi
