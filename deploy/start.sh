#!/usr/bin/env bash
# The README's first command: installs what ffid needs, builds it, installs
# `ffid`, `ffid-worker` and `ffictl`, starts the daemon on its default unix
# socket (if it is not already running) and makes a first call through it.
set -euo pipefail
cd "$(dirname "$0")/.."

FFID_WITHOUT_GO=1 bash deploy/install-deps.sh  # the daemon needs no Go

if [[ $(id -u) -eq 0 ]]; then prefix=/usr/local; else prefix="$HOME/.local"; fi
bash deploy/build-release.sh "$prefix"
bin="$prefix/bin"
echo "installed ffid, ffid-worker and ffictl in $bin"

if [[ -n "${XDG_RUNTIME_DIR:-}" && -w "${XDG_RUNTIME_DIR}" ]]; then
  rundir="$XDG_RUNTIME_DIR/ffid"
else
  rundir="/tmp/ffid-$(id -u)"
fi
socket="$rundir/ffid.sock"
log="$rundir/ffid.log"

if "$bin/ffictl" call libm.so.6 'double cos(double)' 0 >/dev/null 2>&1; then
  echo "ffid is already running on unix:$socket"
else
  mkdir -p "$rundir" && chmod 700 "$rundir"
  nohup "$bin/ffid" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    [[ -S "$socket" ]] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "ffid failed to start; its log ($log):" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "started ffid (pid $pid) on unix:$socket; log: $log; stop it with: kill $pid"
fi

echo "\$ ffictl call libm.so.6 'double cos(double)' 0.5"
"$bin/ffictl" call libm.so.6 'double cos(double)' 0.5
case ":$PATH:" in
  *":$bin:"*) ;;
  *) echo "note: $bin is not on your PATH; add it to run ffictl by name" ;;
esac
