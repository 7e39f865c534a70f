#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz: the config parser, request
# validation, and the service's handlers against a real worker) with clang in the "fuzz" preset (ASan + UBSan) and runs each
# for SECONDS (default 10) from its seed corpus in tests/fuzz/corpus/. New
# inputs go to build/fuzz/corpus/; a crash stops with a non-zero status and
# leaves its input as build/fuzz/crash-*. deploy/test.sh runs it briefly.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"

cmake --preset fuzz >/dev/null
cmake --build --preset fuzz --target config_fuzzer request_fuzzer service_fuzzer ffid_worker_main

for name in config request service; do
  work="build/fuzz/corpus/$name"
  mkdir -p "$work"
  echo "== ${name}_fuzzer for ${seconds}s"
  "build/fuzz/bin/${name}_fuzzer" -max_total_time="$seconds" -max_len=4096 \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix=build/fuzz/ "$work" "tests/fuzz/corpus/$name" 2>&1 |
    grep -a -E '^(stat::|Done|INFO: (Seed|A corpus)|==[0-9]+==ERROR|SUMMARY)' || true
  # grep hides libFuzzer's progress lines; the fuzzer's own status decides.
  test "${PIPESTATUS[0]}" -eq 0
done
echo "fuzzers: no findings"
