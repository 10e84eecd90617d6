#!/usr/bin/env bash
# Every test sockasync has, in one command (what CI runs):
#   bash scripts/test.sh
# Gates (rustfmt, clippy, header freshness), the Rust tests, the C tests against the
# committed header and the built .so (plain, under valgrind memcheck, and with ASan+UBSan),
# the C examples talking to each other, the C# binding (its tests, and its echo example
# against the C one), the Python binding's pytest suite (which also fetches a file from
# python3 -m http.server), and the packaging (header as C and C++, soname, make install and
# pkg-config). Ends with one "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/tools.sh test || exit 1

passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Runs one step; a step's own "N passed, N failed" / cargo "test result" lines are added
# up, and a step with none counts as one test.
step() {
  local name=$1
  shift
  echo "== $name"
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local p f
  p=$(grep -Eo '([0-9]+) passed' "$log" | awk '{s+=$1} END {print s+0}')
  f=$(grep -Eo '([0-9]+) failed' "$log" | awk '{s+=$1} END {print s+0}')
  if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
    if [ "$rc" -eq 0 ]; then p=1; else f=1; fi
  elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    f=1
  fi
  passed=$((passed + p))
  failed=$((failed + f))
  [ "$rc" -eq 0 ] || echo "!! $name failed (exit $rc)"
}

c_suites() {
  local wrapper=("$@")
  local rc=0
  for t in build/tests/test_*; do
    if [ "${wrapper[0]:-}" = valgrind ] && [ "$t" = build/tests/test_uring ]; then
      # Valgrind 3.19 holds its one big lock while a thread waits in io_uring_enter, so
      # every other thread stops (bugs.kde.org 463859): the io_uring suite runs under
      # ASan+UBSan instead.
      echo "-- skipped under valgrind: $t"
      continue
    fi
    echo "-- ${wrapper[*]:-} $t"
    timeout 300 "${wrapper[@]}" "$t" || rc=1
  done
  return $rc
}

c_suites_sanitized() {
  local rc=0
  for t in build/tests-san/test_*; do
    echo "-- $t (ASan+UBSan)"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
      timeout 300 "$t" || rc=1
  done
  return $rc
}

# Definite and possible leaks fail: every C program ends with sock_runtime_shutdown, which
# joins the library's threads, so nothing of the library's may be left.
VALGRIND=(valgrind --quiet --error-exitcode=99 --leak-check=full
  --errors-for-leak-kinds=definite,possible --show-leak-kinds=definite,possible
  --suppressions=tests/c/valgrind.supp)

step "rustfmt" cargo fmt --all -- --check
step "clippy" cargo clippy --all-targets --quiet -- -D warnings
step "header is fresh" cbindgen -q --config cbindgen.toml --crate sockasync --output include/sockasync.h --verify
step "rust tests" cargo test --quiet
step "rust tests on the io_uring backend" env SOCKASYNC_BACKEND=io_uring cargo test --quiet
step "release build" cargo build --release --quiet
step "C tests: build" make -s -C tests/c
step "C tests" c_suites
step "C tests with 2 reactor threads and Pool dispatch" \
  env SOCKASYNC_REACTOR_THREADS=2 SOCKASYNC_DISPATCH=pool bash -c "$(declare -f c_suites); c_suites"
step "C tests on the io_uring backend" \
  env SOCKASYNC_BACKEND=io_uring bash -c "$(declare -f c_suites); c_suites"
# The transfer suite once more with the reactors spinning between turns (busy poll), on each
# backend: every path with the spin on (test_busy_poll checks the spin itself).
step "C transfer tests with busy poll" env SOCKASYNC_BUSY_POLL_US=50 timeout 300 build/tests/test_transfer
step "C transfer tests with busy poll on the io_uring backend" \
  env SOCKASYNC_BUSY_POLL_US=50 SOCKASYNC_BACKEND=io_uring timeout 300 build/tests/test_transfer
step "C tests under valgrind" c_suites "${VALGRIND[@]}"
step "C tests: ASan+UBSan build" make -s -C tests/c SAN=1
step "C tests under ASan+UBSan" c_suites_sanitized
step "C examples: echo demo" bash examples-c/run-demo.sh
step "C examples: echo demo under valgrind" env DEMO_WRAP="${VALGRIND[*]}" bash examples-c/run-demo.sh
step "C examples: echo demo with ASan+UBSan" env DEMO_SAN=1 \
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 bash examples-c/run-demo.sh
# Mono finds libsockasync.so.0 (SockAsync.dll.config) on the loader's path.
csharp_env=(env LD_LIBRARY_PATH="$PWD/target/release")
step "C#: build with mcs" bash bindings/csharp/build.sh
step "C# tests (Mono)" "${csharp_env[@]}" timeout 300 mono build/csharp/SockAsyncTests.exe
step "C# tests with 2 reactor threads and Pool dispatch" "${csharp_env[@]}" \
  SOCKASYNC_REACTOR_THREADS=2 SOCKASYNC_DISPATCH=pool timeout 300 mono build/csharp/SockAsyncTests.exe
step "C# tests on the io_uring backend" "${csharp_env[@]}" \
  SOCKASYNC_BACKEND=io_uring timeout 300 mono build/csharp/SockAsyncTests.exe
step "C# echo server with the C echo clients" "${csharp_env[@]}" \
  DEMO_SERVER="mono build/csharp/Echo.exe server" bash examples-c/run-demo.sh
step "C# echo clients with the C echo server" "${csharp_env[@]}" \
  DEMO_CLIENT="mono build/csharp/Echo.exe client" bash examples-c/run-demo.sh
step "packaging: version macros, header as C and C++, soname, make install, pkg-config" \
  bash tests/packaging/run.sh

# The build tree's library, not one installed under a soname. No cache or bytecode is
# written into the tree. pytest's last line ("N passed, N failed in Ts") is the count.
PYTEST=(env SOCKASYNC_LIB="$PWD/target/release/libsockasync.so" PYTHONDONTWRITEBYTECODE=1
  timeout 300 python3 -m pytest -q -p no:cacheprovider bindings/python/tests)
step "Python binding: pytest" "${PYTEST[@]}"
step "Python binding: pytest with 2 reactor threads and Pool dispatch" \
  env SOCKASYNC_REACTOR_THREADS=2 SOCKASYNC_DISPATCH=pool "${PYTEST[@]}"
step "Python binding: pytest on the io_uring backend" env SOCKASYNC_BACKEND=io_uring "${PYTEST[@]}"

# Random C API programs under ASan (scripts/fuzz.sh; longer by hand: bash scripts/fuzz.sh 3600),
# on each backend.
step "fuzz: C API" bash scripts/fuzz.sh "${SOCKASYNC_FUZZ_SECONDS:-40}"
step "fuzz: C API on the io_uring backend (batched sends reachable)" \
  env SOCKASYNC_BACKEND=io_uring bash scripts/fuzz.sh "${SOCKASYNC_FUZZ_SECONDS:-40}"

echo
echo "all: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
