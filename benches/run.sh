#!/usr/bin/env bash
# The sockasync benchmark suite: raw system calls vs libuv vs sockasync over loopback TCP
# (127.0.0.1 only). Scenarios:
#   1. small sends   1,000,000 x 64 B to a draining reader: ns per send, sends that went
#                    pending, and user-space instructions per call (callgrind, 20,000 sends)
#   2. streaming     1 GiB in 64 KiB sends to a draining reader: GB/s
#   3. ping-pong     64 B request/response, TCP_NODELAY, 100,000 round trips: p50/p99 us
#   4. fan-out       C connections (2,000; --quick 500) echoing 16 KiB messages through one
#                    echo server, SO_RCVBUF 4 KiB: echoes/s and RSS bytes per idle connection
#                    (here "raw" is a hand-written edge-triggered epoll server)
#
#   bash benches/run.sh [--rounds N] [--quick]
#
# Each scenario runs the three mechanisms alternately, raw uv sa raw uv sa ..., for N rounds
# (default 5; --quick: 3 rounds and smaller sizes, a smoke test), so slow phases of a shared
# machine hit all three alike; the table shows each mechanism's median and the ratio of
# sockasync's median to the other's, with the median and range of the per-round ratios.
# The table goes to stdout and to build/benches/results.md; progress and logs go to stderr
# and build/benches/logs/. Exit status is non-zero if any run failed its own checks.
# The default run takes about 1.5-2 minutes on a 2-core machine (--rounds 15: about 5).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/build/benches
LOGS=$OUT/logs

usage() {
  echo "usage: bash benches/run.sh [--rounds N] [--quick]" >&2
  exit 2
}

ROUNDS=""
QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds)
      [ $# -ge 2 ] || usage
      ROUNDS=$2
      shift 2
      ;;
    --rounds=*)
      ROUNDS=${1#--rounds=}
      shift
      ;;
    --quick)
      QUICK=1
      shift
      ;;
    -h | --help) usage ;;
    *) usage ;;
  esac
done
if [ -z "$ROUNDS" ]; then
  if [ $QUICK = 1 ]; then ROUNDS=3; else ROUNDS=5; fi
fi
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || usage

if [ $QUICK = 1 ]; then
  SMALL_N=200000
  STREAM_BYTES=$((128 * 1024 * 1024))
  PING_N=20000
  FAN_CONNS=500
  FAN_SECONDS=2
else
  SMALL_N=1000000
  STREAM_BYTES=$((1024 * 1024 * 1024))
  PING_N=100000
  FAN_CONNS=2000
  FAN_SECONDS=3
fi
PING_WARMUP=1000
CALLGRIND_N=20000
RUN_TIMEOUT=300 # seconds for one run of one program; a hang is a failure, not a result

log() { echo "$*" >&2; }

# ---- what this needs, installed only if missing ------------------------------------------
missing=()
for pkg in libuv1-dev valgrind pkg-config gcc make; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
for cmd in valgrind pkg-config gcc make; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "== installing libuv1-dev valgrind pkg-config gcc make (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y libuv1-dev valgrind pkg-config gcc make >&2
fi
command -v cargo >/dev/null 2>&1 || { log "cargo is missing: install Rust (rustup) first"; exit 1; }

# ---- build --------------------------------------------------------------------------------
log "== cargo build --release"
(cd "$ROOT" && cargo build --release >&2)
log "== make -C benches"
make -C "$ROOT/benches" --no-print-directory >&2
mkdir -p "$LOGS"
rm -f "$LOGS"/*.err "$OUT"/callgrind.*.out

START_SECONDS=$SECONDS
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
FAILURES=0
declare -A VALUES # "scenario.mech" -> space-separated per-round values ("FAIL" for a failure)
declare -A EXTRA  # "scenario.mech" -> per-round values of a stat from the stderr line

# Runs one program; prints its stdout, or FAIL (and counts a failure) if it exits non-zero.
run_one() {
  local tag=$1
  shift
  local err="$LOGS/$tag.err" out
  if out=$(timeout "$RUN_TIMEOUT" "$@" 2>"$err") && [[ "$out" =~ ^[0-9.]+( [0-9.]+)?$ ]]; then
    echo "$out"
  else
    log "   FAILED: $* (exit status or output wrong; see $err):"
    sed 's/^/      /' "$err" | tail -5 >&2
    echo FAIL
  fi
}

# stat KEY FILE: the value of key=VALUE on the file's "stats:" line.
stat_of() {
  { grep -o "$1=[0-9.]*" "$2" 2>/dev/null || true; } | tail -1 | cut -d= -f2
}

B=$OUT
MECHS=(raw uv sa)

# ---- 1. small sends -----------------------------------------------------------------------
log "== 1. small sends: $SMALL_N x 64 B, $ROUNDS rounds (raw uv sa alternately)"
for ((r = 1; r <= ROUNDS; r++)); do
  line="   round $r:"
  for m in "${MECHS[@]}"; do
    v=$(run_one "small-$m-r$r" "$B/bench_small" "$m" "$SMALL_N")
    [ "$v" = FAIL ] && FAILURES=$((FAILURES + 1))
    VALUES[small.$m]+="$v "
    if [ "$m" = sa ]; then w=$(stat_of pending "$LOGS/small-$m-r$r.err"); else w=$(stat_of eagain "$LOGS/small-$m-r$r.err"); fi
    EXTRA[small.$m]+="${w:-FAIL} "
    line+=" $m ${v} ns"
  done
  log "$line"
done

log "== 1. small sends under callgrind: $CALLGRIND_N sends each"
declare -A IR_PER_CALL CG_CALLS CG_WAITS
for m in "${MECHS[@]}"; do
  case $m in
    raw) fn=raw_send_call ;;
    uv) fn=uv_try_write ;;
    sa) fn=sock_send_async ;;
  esac
  cg="$OUT/callgrind.$m.out"
  if timeout "$RUN_TIMEOUT" valgrind --tool=callgrind --toggle-collect="$fn" \
    --callgrind-out-file="$cg" "$B/bench_small" "$m" "$CALLGRIND_N" \
    >/dev/null 2>"$LOGS/callgrind-$m.err"; then
    ir=$(awk '/^summary:/ {print $2}' "$cg")
    calls=$(stat_of calls "$LOGS/callgrind-$m.err")
    if [ "$m" = sa ]; then waits=$(stat_of pending "$LOGS/callgrind-$m.err"); else waits=$(stat_of eagain "$LOGS/callgrind-$m.err"); fi
    IR_PER_CALL[$m]=$(awk -v ir="$ir" -v c="$calls" 'BEGIN {printf "%.1f", ir / c}')
    CG_CALLS[$m]=$calls
    CG_WAITS[$m]=$waits
    log "   $m: $ir Ir in $fn over $calls calls = ${IR_PER_CALL[$m]} Ir/call ($waits pending/EAGAIN)"
  else
    log "   FAILED: callgrind $m (see $LOGS/callgrind-$m.err)"
    IR_PER_CALL[$m]=FAIL
    FAILURES=$((FAILURES + 1))
  fi
done

# ---- 2. streaming -------------------------------------------------------------------------
log "== 2. streaming: $STREAM_BYTES bytes in 64 KiB sends, $ROUNDS rounds"
for ((r = 1; r <= ROUNDS; r++)); do
  line="   round $r:"
  for m in "${MECHS[@]}"; do
    v=$(run_one "stream-$m-r$r" "$B/bench_stream" "$m" "$STREAM_BYTES")
    [ "$v" = FAIL ] && FAILURES=$((FAILURES + 1))
    VALUES[stream.$m]+="$v "
    EXTRA[stream.$m]+="$(stat_of pending "$LOGS/stream-$m-r$r.err") "
    line+=" $m ${v} GB/s"
  done
  log "$line"
done

# ---- 3. ping-pong -------------------------------------------------------------------------
log "== 3. ping-pong: $PING_N round trips after $PING_WARMUP, $ROUNDS rounds"
for ((r = 1; r <= ROUNDS; r++)); do
  line="   round $r:"
  for m in "${MECHS[@]}"; do
    v=$(run_one "ping-$m-r$r" "$B/bench_pingpong" "$m" "$PING_N" "$PING_WARMUP")
    if [ "$v" = FAIL ]; then
      FAILURES=$((FAILURES + 1))
      VALUES[p50.$m]+="FAIL "
      VALUES[p99.$m]+="FAIL "
    else
      read -r p50 p99 <<<"$v"
      VALUES[p50.$m]+="$p50 "
      VALUES[p99.$m]+="$p99 "
    fi
    line+=" $m ${v/ //} us"
  done
  log "$line"
done

# ---- 4. fan-out --------------------------------------------------------------------------
log "== 4. fan-out: $FAN_CONNS connections x 16 KiB echoes for $FAN_SECONDS s, $ROUNDS rounds (epoll uv sa)"
for ((r = 1; r <= ROUNDS; r++)); do
  line="   round $r:"
  for m in "${MECHS[@]}"; do
    arg=$m
    [ "$m" = raw ] && arg=epoll
    v=$(run_one "fanout-$m-r$r" "$B/bench_fanout" "$arg" "$FAN_CONNS" "$FAN_SECONDS")
    if [ "$v" = FAIL ]; then
      FAILURES=$((FAILURES + 1))
      VALUES[fan.$m]+="FAIL "
      VALUES[fanmem.$m]+="FAIL "
    else
      read -r rate mem <<<"$v"
      VALUES[fan.$m]+="$rate "
      VALUES[fanmem.$m]+="$mem "
    fi
    EXTRA[fan.$m]+="$(stat_of pending "$LOGS/fanout-$m-r$r.err") "
    line+=" $arg ${v/ / echoes\/s, } B/conn"
  done
  log "$line"
done

ELAPSED=$((SECONDS - START_SECONDS))
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- the table ----------------------------------------------------------------------------

# median VALUES...: the median, or FAIL if any value failed.
median() {
  if [ $# -eq 0 ] || printf '%s\n' "$@" | grep -qv '^[0-9.]*$'; then
    echo FAIL
    return
  fi
  printf '%s\n' "$@" | sort -g | awk '
    { v[NR] = $1 }
    END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ratio SCENARIO OTHER: "R (paired P, LO-HI)": R = sockasync's median / the other's median;
# P, LO, HI = the median, min and max of the per-round ratios (sockasync / the other run
# right before or after it in the same round).
ratio() {
  local sa=(${VALUES[$1.sa]}) other=(${VALUES[$1.$2]})
  local msa mo paired
  msa=$(median "${sa[@]}")
  mo=$(median "${other[@]}")
  if [ "$msa" = FAIL ] || [ "$mo" = FAIL ]; then
    echo FAIL
    return
  fi
  paired=$(awk -v sa="${sa[*]}" -v ot="${other[*]}" 'BEGIN {
    n = split(sa, x, " "); split(ot, y, " ")
    for (i = 1; i <= n; i++) if (y[i] > 0) printf "%.6f\n", x[i] / y[i]
  }' | sort -g)
  awk -v a="$msa" -v b="$mo" -v p="$(median $paired)" -v list="$paired" 'BEGIN {
    n = split(list, q, " ")
    printf "%.2f (paired %.2f, %.2f-%.2f)", a / b, p, q[1], q[n]
  }'
}

# ratio_of_medians SCENARIO OTHER: the bare number, for the target checks.
rom() {
  local a b
  a=$(median ${VALUES[$1.sa]})
  b=$(median ${VALUES[$1.$2]})
  awk -v a="$a" -v b="$b" 'BEGIN { if (a == "FAIL" || b == "FAIL" || b == 0) print "FAIL"; else printf "%.4f", a / b }'
}

fmt() { # fmt PRINTF_FORMAT VALUE
  if [ "$2" = FAIL ]; then echo FAIL; else LC_ALL=C printf "$1" "$2"; fi
}

check() { # check AWK_CONDITION -v NAME=VALUE... -> yes/no
  local cond=$1
  shift
  awk "$@" "BEGIN { if ($cond) print \"yes\"; else print \"no\" }" </dev/null
}

thousands() { # 1000000 -> 1,000,000
  echo "$1" | sed -e ':a' -e 's/\B[0-9]\{3\}\>/,&/' -e 'ta'
}

ok_small=$(r=$(rom small raw); [ "$r" = FAIL ] && echo FAIL || check "r <= 1.05" -v r="$r")
ok_ir=$(i=${IR_PER_CALL[sa]}; [ "$i" = FAIL ] && echo FAIL || check "i <= 100" -v i="$i")
ok_stream=$(a=$(rom stream raw); b=$(rom stream uv); { [ "$a" = FAIL ] || [ "$b" = FAIL ]; } && echo FAIL || check "a >= 0.97 && b >= 1.0" -v a="$a" -v b="$b")
ok_fan=$(b=$(rom fan uv); m=$(median ${VALUES[fanmem.sa]}); { [ "$b" = FAIL ] || [ "$m" = FAIL ]; } && echo FAIL || check "b >= 1.2 && m <= 256" -v b="$b" -v m="$m")
ok_p50=$(a=$(rom p50 raw); b=$(rom p50 uv); { [ "$a" = FAIL ] || [ "$b" = FAIL ]; } && echo FAIL || check "a <= 1.05 && b < 1.0" -v a="$a" -v b="$b")

# spread VALUES...: "median (min-max)", or FAIL.
spread() {
  local m
  m=$(median "$@")
  if [ "$m" = FAIL ]; then echo FAIL; return; fi
  printf '%s\n' "$@" | sort -g | awk -v m="$m" '{ v[NR] = $1 } END { printf "%.0f (%s-%s)", m, v[1], v[NR] }'
}
small_pending=$(spread ${EXTRA[small.sa]})
small_eagain_raw=$(spread ${EXTRA[small.raw]})
small_eagain_uv=$(spread ${EXTRA[small.uv]})
stream_pending=$(spread ${EXTRA[stream.sa]})
fan_pending=$(spread ${EXTRA[fan.sa]})
fan_eagain_raw=$(spread ${EXTRA[fan.raw]})

mb=$((STREAM_BYTES / 1024 / 1024))
if [ "$mb" -ge 1024 ]; then stream_size="$((mb / 1024)) GiB"; else stream_size="$mb MiB"; fi
commit=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(cd "$ROOT" && git status --porcelain -- src include Cargo.toml 2>/dev/null | wc -l)
[ "$dirty" -gt 0 ] && commit="$commit + uncommitted changes in src/"

table() {
  cat <<EOF
## sockasync benchmarks: raw system calls vs libuv vs sockasync (loopback TCP, 127.0.0.1)

$(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit, $(nproc) CPUs, kernel $(uname -r), libuv $(pkg-config --modversion libuv).
$ROUNDS rounds, mechanisms alternating (raw, libuv, sockasync) in every round; each cell is
the median over the rounds. A ratio cell is sockasync's median / the other's median, then
in parentheses the median and range of the per-round (paired) ratios. Whole run:
${ELAPSED} s; load average before ${LOAD_BEFORE}, after ${LOAD_AFTER} (other work on the
machine makes absolute numbers noisy; the paired ratios are what to read).

| scenario | metric | raw syscalls | libuv | sockasync | sockasync / raw | sockasync / libuv | target | met |
|---|---|---:|---:|---:|---:|---:|---|---|
| 1. small sends: $(thousands "$SMALL_N") x 64 B, no TCP_NODELAY, reader thread draining | ns per send (lower is better) | $(fmt %.0f "$(median ${VALUES[small.raw]})") | $(fmt %.0f "$(median ${VALUES[small.uv]})") | $(fmt %.0f "$(median ${VALUES[small.sa]})") | $(ratio small raw) | $(ratio small uv) | <= 1.05x raw non-blocking send | $ok_small |
| 1. small sends | sends that hit EAGAIN (raw, libuv) or went pending (sockasync) per run: median (min-max) | $small_eagain_raw | $small_eagain_uv | $small_pending | | | | |
| 1. small sends under callgrind: $(thousands "$CALLGRIND_N") x 64 B, Ir of the toggled send function | user-space instructions (Ir) per call | ${IR_PER_CALL[raw]} | ${IR_PER_CALL[uv]} | ${IR_PER_CALL[sa]} | $(awk -v a="${IR_PER_CALL[sa]}" -v b="${IR_PER_CALL[raw]}" 'BEGIN { if (a+0 && b+0) printf "%.2f", a/b; else print "FAIL" }') | $(awk -v a="${IR_PER_CALL[sa]}" -v b="${IR_PER_CALL[uv]}" 'BEGIN { if (a+0 && b+0) printf "%.2f", a/b; else print "FAIL" }') | <= 100 per synchronous sock_send_async | $ok_ir |
| 2. streaming: $stream_size in 64 KiB sends to a reader thread | GB/s (higher is better) | $(fmt %.2f "$(median ${VALUES[stream.raw]})") | $(fmt %.2f "$(median ${VALUES[stream.uv]})") | $(fmt %.2f "$(median ${VALUES[stream.sa]})") | $(ratio stream raw) | $(ratio stream uv) | >= 0.97x raw blocking, >= 1.00x libuv | $ok_stream |
| 3. ping-pong: 64 B, TCP_NODELAY, $(thousands "$PING_N") round trips; both ends in one process, 2 threads, unpinned | p50 round trip, us (lower is better) | $(fmt %.1f "$(median ${VALUES[p50.raw]})") | $(fmt %.1f "$(median ${VALUES[p50.uv]})") | $(fmt %.1f "$(median ${VALUES[p50.sa]})") | $(ratio p50 raw) | $(ratio p50 uv) | <= 1.05x raw, < libuv | $ok_p50 |
| 3. ping-pong | p99 round trip, us | $(fmt %.1f "$(median ${VALUES[p99.raw]})") | $(fmt %.1f "$(median ${VALUES[p99.uv]})") | $(fmt %.1f "$(median ${VALUES[p99.sa]})") | $(ratio p99 raw) | $(ratio p99 uv) | | |
| 4. fan-out: $(thousands "$FAN_CONNS") connections, 16 KiB echoes for $FAN_SECONDS s, SO_RCVBUF 4 KiB; raw = hand-written epoll server; client a separate epoll process | completed echoes/s (higher is better) | $(fmt %.0f "$(median ${VALUES[fan.raw]})") | $(fmt %.0f "$(median ${VALUES[fan.uv]})") | $(fmt %.0f "$(median ${VALUES[fan.sa]})") | $(ratio fan raw) | $(ratio fan uv) | >= 1.2x libuv completions/s with 2 reactor threads (sockasync has 1 reactor thread until issue 5 adds the setting); <= 256 B library memory per idle connection | $ok_fan |
| 4. fan-out | server RSS bytes per idle connection (lower is better) | $(fmt %.0f "$(median ${VALUES[fanmem.raw]})") | $(fmt %.0f "$(median ${VALUES[fanmem.uv]})") | $(fmt %.0f "$(median ${VALUES[fanmem.sa]})") | $(ratio fanmem raw) | $(ratio fanmem uv) | <= 256 B | |
| 4. fan-out | server sends that hit EAGAIN (raw) or went pending (sockasync) per run: median (min-max) | $fan_eagain_raw | n/a | $fan_pending | | | | |

How each was run (programs in benches/, built by benches/Makefile with -O2):
- 1. small sends (bench_small): one connection, no TCP_NODELAY, a reader thread in the same
  process draining with blocking recv into 64 KiB and checking every byte and the total;
  an untimed 1% warm-up, then the send loop's wall time / sends. raw: non-blocking send(2)
  with MSG_NOSIGNAL, poll(POLLOUT) on EAGAIN. libuv: uv_try_write, poll(POLLOUT) on
  UV_EAGAIN. sockasync: sock_send_async with one reused args; a pending send is waited for
  (semaphore posted by its callback); each result's status and socket error are checked.
- 1. callgrind: valgrind --tool=callgrind --toggle-collect=FN on the same program with
  $(thousands "$CALLGRIND_N") sends (+1% warm-up), FN = raw_send_call (a never-inlined wrapper around
  the loop's send(2) call), uv_try_write, sock_send_async. Ir per call = total collected Ir /
  calls of FN: FN and everything it calls in user space (libc, the library), including the
  system-call entry stub up to the syscall instruction, but no kernel instructions. Calls:
  raw ${CG_CALLS[raw]:-?}, libuv ${CG_CALLS[uv]:-?}, sockasync ${CG_CALLS[sa]:-?} (of which ${CG_WAITS[sa]:-?} went pending, so nearly all are
  synchronous completions).
- 2. streaming (bench_stream): the same kind of reader (checking a byte every 4 KiB of the
  stream, the last byte of every recv, and the total); GB/s = 10^9 bytes/s from the first
  send until the reader has the last byte. raw: a plain blocking socket and send(2). libuv: uv_write, the next one
  issued from the write callback. sockasync: sock_send_async, the next send issued inline
  while sends complete synchronously and from the completion callback (reactor thread)
  after one went pending (pending sends per run: ${stream_pending}).
- 3. ping-pong (bench_pingpong): TCP_NODELAY on both ends, both ends in one process on two
  threads, nothing pinned (the scheduler places the threads; placement on this VM moves
  latency a lot). $PING_WARMUP untimed round trips first; every response is compared with
  its request. raw: blocking send/recv, server on its own thread. libuv: both ends on
  libuv (uv_read_start + uv_write), each with its own loop and thread. sockasync: both ends
  on sockasync: the server's pending receive completes on the reactor thread, whose callback
  sends the echo and receives again; the client thread issues sock_send_async then
  sock_receive_async and waits on a semaphore when one goes pending.
- 4. fan-out (bench_fanout): the measured process runs only the echo server; the client is
  a forked process (a plain edge-triggered epoll loop, the same for every mechanism) that
  connects $(thousands "$FAN_CONNS") sockets, then keeps one 16 KiB message in flight per connection and
  checks every echoed byte; echoes/s = echoes completed in $FAN_SECONDS s / elapsed (messages in
  flight at the end must still come back within 10 s, else the run fails). SO_RCVBUF 4 KiB
  on the server's listener (before accept) and on every client socket. RSS per connection =
  (server VmRSS with all connections accepted and idle - VmRSS before connecting) / count;
  it includes the server program's own per-connection struct (16-32 B) but no message
  buffer (each server allocates one only while data moves). raw: epoll, reads into one
  scratch buffer, copies what a send leaves. libuv: uv_read_start + uv_write, a malloc'd
  buffer per read. sockasync: from callbacks: accept, then per connection one args cycling
  zero-byte receive -> receive into a malloc'd buffer -> sock_send_async -> free.
EOF
}

TABLE=$(table)
echo "$TABLE" >"$OUT/results.md"
echo "$TABLE"
log ""
log "== done in ${ELAPSED} s; table also in $OUT/results.md; logs in $LOGS"
if [ "$FAILURES" -gt 0 ]; then
  log "== $FAILURES run(s) FAILED their checks: see the logs above"
  exit 1
fi
