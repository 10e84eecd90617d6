#!/usr/bin/env bash
# Fuzzes the C API with random programs over loopback sockets, Unix sockets on abstract names
# of the fuzzing process, and socketpairs (fuzz/fuzz_targets/c_api.rs; its only file is
# /tmp/sockasync-fuzz-<pid>.dat, which send-packets reads, removed by the next run):
#   bash scripts/fuzz.sh [SECONDS]        (default 60; CI runs it from scripts/test.sh)
# Installs the pinned cargo-fuzz if it is missing, builds the target with AddressSanitizer
# and debug assertions (the library's "completed twice" check), runs it for SECONDS on the
# committed seeds (fuzz/corpus/c_api/, read only) plus a working corpus that is kept between
# runs and never committed (fuzz/corpus/c_api-work/), prints the executions, and ends with
# "fuzz: 1 passed, 0 failed" or "fuzz: 0 passed, 1 failed". A crash, a hang (an input over
# 30 s) or a leak leaves the input in fuzz/artifacts/c_api/; replay it with
#   RUSTC_BOOTSTRAP=1 C_API_TRACE=1 cargo fuzz run -a c_api fuzz/artifacts/c_api/<file>
# (C_API_TRACE=1 prints each operation and start).
set -uo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
seconds=${1:-60}

if ! cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION (cargo install, about 30 seconds)"
  cargo install --quiet --locked --version "$CARGO_FUZZ_VERSION" cargo-fuzz || exit 1
fi

# Why RUSTC_BOOTSTRAP=1: cargo-fuzz passes nightly-only flags to rustc (-Zsanitizer=address,
# and the sancov instrumentation libFuzzer needs), while the project builds with the stable
# toolchain and no nightly can be fetched here. RUSTC_BOOTSTRAP=1 makes stable rustc accept
# them; stable ships the sanitizer runtimes (librustc-stable_rt.asan.a), so the build is the
# one a nightly would make. It is set for these two commands only: nothing else is built
# with unstable features.
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== building the c_api fuzz target (ASan, debug assertions)"
started=$(date +%s)
RUSTC_BOOTSTRAP=1 cargo fuzz build -a c_api >"$log" 2>&1
rc=$?
grep -Ev '^[[:space:]]*(Compiling|Downloaded?|Updating|Locking|Adding) ' "$log"
if [ "$rc" -ne 0 ]; then
  echo "fuzz: 0 passed, 1 failed"
  exit 1
fi
echo "   built in $(($(date +%s) - started)) s"

work=fuzz/corpus/c_api-work
mkdir -p "$work" fuzz/artifacts/c_api

echo "== fuzzing for $seconds s"
started=$(date +%s)
# -timeout: an input that runs 30 s is a hang (the target itself gives up on a lost
# completion after 5 s). New-coverage and reduce lines are left out of the output.
RUSTC_BOOTSTRAP=1 cargo fuzz run -a c_api "$work" fuzz/corpus/c_api -- \
  -max_total_time="$seconds" -timeout=30 -max_len=4096 -print_final_stats=1 \
  >"$log" 2>&1
rc=$?
elapsed=$(($(date +%s) - started))
# All but the coverage progress and the dictionary: the whole report when something broke.
grep -Ev '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)|^"|^#{6} ' "$log" | tail -n 400

runs=$(grep -Eo 'stat::number_of_executed_units: [0-9]+' "$log" | awk '{print $2}')
runs=${runs:-$(grep -Eo '^#[0-9]+' "$log" | tail -n 1 | tr -d '#')}
echo "fuzz: ${runs:-0} executions in ${elapsed} s ($(( ${runs:-0} / (elapsed > 0 ? elapsed : 1) ))/s)," \
  "working corpus $(ls "$work" | wc -l) inputs"
if [ "$rc" -eq 0 ]; then
  echo "fuzz: 1 passed, 0 failed"
else
  echo "!! the fuzzer stopped with exit $rc; the input is in fuzz/artifacts/c_api/:"
  ls -t fuzz/artifacts/c_api | head -n 3
  echo "fuzz: 0 passed, 1 failed"
fi
exit "$rc"
