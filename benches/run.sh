#!/usr/bin/env bash
# The sockasync benchmark suite: raw system calls vs libuv vs tokio vs sockasync over
# loopback TCP (127.0.0.1 only). Scenarios:
#   1. small sends   1,000,000 x 64 B to a draining reader: ns per send, sends that went
#                    pending, and user-space instructions per call (callgrind, 20,000 sends)
#   2. streaming     1 GiB in 64 KiB sends to a draining reader: GB/s
#   3. ping-pong     64 B request/response, TCP_NODELAY, 100,000 round trips: p50/p99 us
#   4. fan-out       C connections (10,000; --quick 1,000) echoing 16 KiB messages through
#                    one echo server, server SO_SNDBUF 4 KiB and client SO_RCVBUF 4 KiB so
#                    most server sends go pending: echoes/s, pending share, RSS bytes per
#                    idle connection; each server with 1 and with 2 threads (here "raw" is a
#                    hand-written edge-triggered epoll server)
# tokio (benches/tokio, its own cargo package, built here in release mode) takes part in 1
# and 3. The io_uring backend takes part in every scenario, alternating with the rest:
# "sa-batch" in 1 (the batched path: SOCK_OPTION_BATCH_SENDS, 256 args in turn), and
# "sa-uring" in 2, 3 and 4 (SOCKASYNC_BACKEND=io_uring; in 4 with batched echo sends).
#
#   bash benches/run.sh [--rounds N] [--quick]
#
# Each scenario runs the mechanisms alternately, raw uv sa tokio raw uv sa tokio ..., for N
# rounds (default 5, and 3N for the two quick scenarios, small sends and streaming;
# --quick: 3 rounds and smaller sizes, a smoke test), so slow phases of a
# shared machine hit all of them alike; the table shows each mechanism's median and the
# ratio of sockasync's median to the other's, with the median and range of the per-round
# ratios. The table goes to stdout and to build/benches/results.md; progress and logs go to
# stderr and build/benches/logs/. Exit status is non-zero if any run failed its own checks.
# The default run takes about 7 minutes on a 2-core machine (the first tokio build adds
# some 10 s), --quick about 2.
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
# Small sends and streaming take about a second a run and swing most from run to run on a
# shared VM: three times the rounds steady their medians for little time.
FAST_ROUNDS=$((ROUNDS * 3))

if [ $QUICK = 1 ]; then
  SMALL_N=200000
  STREAM_BYTES=$((128 * 1024 * 1024))
  PING_N=20000
  FAN_CONNS=1000
  FAN_SECONDS=2
else
  SMALL_N=1000000
  STREAM_BYTES=$((1024 * 1024 * 1024))
  PING_N=100000
  FAN_CONNS=10000
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

# tokio from crates.io, pinned by benches/tokio/Cargo.lock; its own target directory, so the
# library's builds never see it. The first build downloads and compiles tokio.
TOKIO_BIN=$OUT/tokio-target/release/bench_tokio
log "== cargo build --release --locked (benches/tokio)"
tokio_build_start=$SECONDS
if (cd "$ROOT/benches/tokio" && cargo build --release --locked --target-dir "$OUT/tokio-target" >&2); then
  TOKIO_BUILD="its cargo build here: $((SECONDS - tokio_build_start)) s; a cold one about 15 s"
else
  log "   FAILED: the tokio contender does not build; its cells show FAIL"
  TOKIO_BUILD="FAILED to build"
  TOKIO_BIN=""
fi
TOKIO_VERSION=$(awk '/^name = "tokio"$/ { getline; gsub(/[^0-9.]/, ""); print }' "$ROOT/benches/tokio/Cargo.lock")

# The fan-out with 1 server thread, then with 2 (raw2, uv2, sa2: two epoll loops, two libuv
# loops, two reactor threads).
FAN_MECHS=(raw uv sa raw2 uv2 sa2)

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
  if [ -z "${1:-}" ]; then # a contender that did not build
    echo "not built" >"$err"
    echo FAIL
    return
  fi
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
MECHS_TOKIO=(raw uv sa tokio)
URING=(env SOCKASYNC_BACKEND=io_uring)
BUSY_POLL_US=50 # sa-spin: sock_runtime_set_busy_poll's window, through its environment variable

# The command line of one run of MECH in SCENARIO (small, ping).
command_of() {
  case $1.$2 in
    small.tokio) [ -z "$TOKIO_BIN" ] || echo "$TOKIO_BIN small $SMALL_N" ;;
    small.*) echo "$B/bench_small $2 $SMALL_N" ;;
    ping.sa-uring) echo "${URING[*]} $B/bench_pingpong sa $PING_N $PING_WARMUP" ;;
    ping.sa-spin) echo "env SOCKASYNC_BUSY_POLL_US=$BUSY_POLL_US $B/bench_pingpong sa $PING_N $PING_WARMUP" ;;
    ping.tokio) [ -z "$TOKIO_BIN" ] || echo "$TOKIO_BIN pingpong $PING_N $PING_WARMUP" ;;
    ping.*) echo "$B/bench_pingpong $2 $PING_N $PING_WARMUP" ;;
  esac
}

# ---- 1. small sends -----------------------------------------------------------------------
log "== 1. small sends: $SMALL_N x 64 B, $FAST_ROUNDS rounds (raw uv sa tokio sa-batch alternately)"
for ((r = 1; r <= FAST_ROUNDS; r++)); do
  line="   round $r:"
  for m in "${MECHS_TOKIO[@]}" sa-batch; do
    # shellcheck disable=SC2046 # the command line is split on purpose
    v=$(run_one "small-$m-r$r" $(command_of small "$m"))
    [ "$v" = FAIL ] && FAILURES=$((FAILURES + 1))
    VALUES[small.$m]+="$v "
    if [[ "$m" = sa* ]]; then w=$(stat_of pending "$LOGS/small-$m-r$r.err"); else w=$(stat_of eagain "$LOGS/small-$m-r$r.err"); fi
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
log "== 2. streaming: $STREAM_BYTES bytes in 64 KiB sends, $FAST_ROUNDS rounds"
for ((r = 1; r <= FAST_ROUNDS; r++)); do
  line="   round $r:"
  for m in "${MECHS[@]}" sa-uring; do
    if [ "$m" = sa-uring ]; then cmd=("${URING[@]}" "$B/bench_stream" sa); else cmd=("$B/bench_stream" "$m"); fi
    v=$(run_one "stream-$m-r$r" "${cmd[@]}" "$STREAM_BYTES")
    [ "$v" = FAIL ] && FAILURES=$((FAILURES + 1))
    VALUES[stream.$m]+="$v "
    EXTRA[stream.$m]+="$(stat_of pending "$LOGS/stream-$m-r$r.err") "
    line+=" $m ${v} GB/s"
  done
  log "$line"
done

# ---- 3. ping-pong -------------------------------------------------------------------------
# Each mechanism twice per round: unpinned (the scheduler places the two ends; on a VM a
# wake-up across vCPUs dominates the round trip) and with the whole process on CPU 0
# ("one": both ends on one core, where the software path's cost shows).
ONE_CORE=(taskset -c 0)
log "== 3. ping-pong: $PING_N round trips after $PING_WARMUP, $ROUNDS rounds (raw uv sa tokio sa-uring sa-wait, each unpinned and on one core; sa-spin unpinned)"
for ((r = 1; r <= ROUNDS; r++)); do
  line="   round $r:"
  for m in "${MECHS_TOKIO[@]}" sa-uring sa-wait sa-spin; do
    # Two spinning reactors on one core would only take turns: sa-spin runs unpinned.
    placements=("" one)
    [ "$m" = sa-spin ] && placements=("")
    for placement in "${placements[@]}"; do
      # shellcheck disable=SC2207 # the command line is split on purpose
      cmd=($(command_of ping "$m"))
      [ -n "$placement" ] && [ ${#cmd[@]} -gt 0 ] && cmd=("${ONE_CORE[@]}" "${cmd[@]}")
      v=$(run_one "ping$placement-$m-r$r" "${cmd[@]}")
      if [ "$v" = FAIL ]; then
        FAILURES=$((FAILURES + 1))
        VALUES[p50$placement.$m]+="FAIL "
        VALUES[p99$placement.$m]+="FAIL "
      else
        read -r p50 p99 <<<"$v"
        VALUES[p50$placement.$m]+="$p50 "
        VALUES[p99$placement.$m]+="$p99 "
      fi
      EXTRA[pingcpu$placement.$m]+="$(stat_of cpu_us_per_round_trip "$LOGS/ping$placement-$m-r$r.err") "
      line+=" $m${placement:+ (one core)} ${v/ //} us"
    done
  done
  log "$line"
done

# ---- 4. fan-out --------------------------------------------------------------------------
log "== 4. fan-out: $FAN_CONNS connections x 16 KiB echoes for $FAN_SECONDS s, $ROUNDS rounds (${FAN_MECHS[*]} sa-uring; raw = epoll, 2 = two server threads)"
for ((r = 1; r <= ROUNDS; r++)); do
  line="   round $r:"
  for m in "${FAN_MECHS[@]}" sa-uring; do
    case $m in
      raw) cmd=(epoll "$FAN_CONNS" "$FAN_SECONDS" 1) ;;
      raw2) cmd=(epoll "$FAN_CONNS" "$FAN_SECONDS" 2) ;;
      sa-uring) cmd=(sa "$FAN_CONNS" "$FAN_SECONDS" 1) ;;
      *2) cmd=("${m%2}" "$FAN_CONNS" "$FAN_SECONDS" 2) ;;
      *) cmd=("$m" "$FAN_CONNS" "$FAN_SECONDS" 1) ;;
    esac
    if [ "$m" = sa-uring ]; then
      v=$(run_one "fanout-$m-r$r" "${URING[@]}" BENCH_BATCH_SENDS=1 "$B/bench_fanout" "${cmd[@]}")
    else
      v=$(run_one "fanout-$m-r$r" "$B/bench_fanout" "${cmd[@]}")
    fi
    if [ "$v" = FAIL ]; then
      FAILURES=$((FAILURES + 1))
      VALUES[fan.$m]+="FAIL "
      VALUES[fanmem.$m]+="FAIL "
    else
      read -r rate mem <<<"$v"
      VALUES[fan.$m]+="$rate "
      VALUES[fanmem.$m]+="$mem "
    fi
    p=$(stat_of pending_pct "$LOGS/fanout-$m-r$r.err")
    t=$(stat_of threads "$LOGS/fanout-$m-r$r.err")
    EXTRA[fan.$m]+="${p:-FAIL} "
    EXTRA[fanthreads.$m]+="${t:-FAIL} "
    c=$(stat_of server_cpu_us_per_echo "$LOGS/fanout-$m-r$r.err")
    VALUES[fancpu.$m]+="${c:-FAIL} "
    EXTRA[fanclient.$m]+="$(stat_of client_cpu_pct "$LOGS/fanout-$m-r$r.err") "
    line+=" $m ${v/ / echoes\/s, } B/conn ${p:-?}% pending;"
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

# ratio SCENARIO OTHER [MECH]: "R (paired P, LO-HI)": R = MECH's median / the other's
# median; P, LO, HI = the median, min and max of the per-round ratios (MECH / the other run
# in the same round). MECH is sockasync (sa) unless given (sa2: 2 reactor threads).
ratio() {
  local sa=(${VALUES[$1.${3:-sa}]}) other=(${VALUES[$1.$2]})
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

# rom SCENARIO OTHER [MECH]: the ratio of medians as a bare number, for the target checks.
rom() {
  local a b
  a=$(median ${VALUES[$1.${3:-sa}]})
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
# The fan-out server program's own per-connection struct for sockasync (saconn: 32 B, 48 B
# with malloc's header) is in its RSS; the memory target is for the library's part.
SA_OWN_STRUCT=48
sa_lib_mem=$(m=$(median ${VALUES[fanmem.sa]}); [ "$m" = FAIL ] && echo FAIL || awk -v m="$m" -v o="$SA_OWN_STRUCT" 'BEGIN { printf "%.0f", m - o }')
ok_fanmem=$([ "$sa_lib_mem" = FAIL ] && echo FAIL || check "m <= 256" -v m="$sa_lib_mem")
# Against libuv with one loop (libuv's usual server) and with two (like for like).
ok_fan2=$(a=$(rom fan uv sa2); b=$(rom fan uv2 sa2); { [ "$a" = FAIL ] || [ "$b" = FAIL ]; } && echo FAIL || check "a >= 1.2 && b >= 1.2" -v a="$a" -v b="$b")
ok_batch=$(r=$(rom small raw sa-batch); [ "$r" = FAIL ] && echo FAIL || check "r <= 0.85" -v r="$r")
# ok_p50 SCENARIO: the ping-pong target on one placement (p50: unpinned, p50one: one core).
ok_p50() {
  local a b c
  a=$(rom "$1" raw)
  b=$(rom "$1" uv)
  c=$(rom "$1" tokio)
  if [ "$a" = FAIL ] || [ "$b" = FAIL ] || [ "$c" = FAIL ]; then echo FAIL; else check "a <= 1.05 && b < 1.0 && c < 1.0" -v a="$a" -v b="$b" -v c="$c"; fi
}
ok_p50_free=$(ok_p50 p50)
ok_p50_one=$(ok_p50 p50one)

# spread VALUES...: "median (min-max)", or FAIL. SPREAD_FORMAT (a printf format for the
# median, default %.0f) may precede the call.
spread() {
  local m
  m=$(median "$@")
  if [ "$m" = FAIL ]; then echo FAIL; return; fi
  printf '%s\n' "$@" | sort -g | awk -v m="$m" -v f="${SPREAD_FORMAT:-%.0f}" '{ v[NR] = $1 } END { printf f " (%s-%s)", m, v[1], v[NR] }'
}
pct_spread() { SPREAD_FORMAT=%.1f%% spread "$@"; } # "median% (min-max)"
small_pending=$(spread ${EXTRA[small.sa]})
small_eagain_raw=$(spread ${EXTRA[small.raw]})
small_eagain_uv=$(spread ${EXTRA[small.uv]})
small_eagain_tokio=$(spread ${EXTRA[small.tokio]})
stream_pending=$(spread ${EXTRA[stream.sa]})
fan_pending=$(pct_spread ${EXTRA[fan.sa]})
fan_pending_raw=$(pct_spread ${EXTRA[fan.raw]})
fan_pending_uv=$(pct_spread ${EXTRA[fan.uv]})
fan_threads=$(median ${EXTRA[fanthreads.sa]})
# ping_cpu MECH: "unpinned (one core)" CPU per round trip.
ping_cpu() {
  echo "$(fmt %.1f "$(median ${EXTRA[pingcpu.$1]:-FAIL})") ($(fmt %.1f "$(median ${EXTRA[pingcpuone.$1]:-FAIL})"))"
}
# fan_cpu MECH: "server us per echo (client N%)".
fan_cpu() {
  local c
  c=$(fmt %.1f "$(median ${VALUES[fancpu.$1]:-FAIL})")
  echo "$c (client $(fmt %.0f "$(median ${EXTRA[fanclient.$1]:-FAIL})")%)"
}
fan2_pending=$(pct_spread ${EXTRA[fan.sa2]})
fan2_pending_raw=$(pct_spread ${EXTRA[fan.raw2]})
fan2_pending_uv=$(pct_spread ${EXTRA[fan.uv2]})
fan2_threads=$(median ${EXTRA[fanthreads.sa2]})
fan2_note="server process threads: sockasync $fan2_threads (1 reactor thread: $fan_threads)"
if [ "$(check "b + 0 > 0 && b <= a" -v a="$fan_threads" -v b="$fan2_threads")" = yes ]; then
  fan2_note+="; the library did not start a second reactor thread"
fi

mb=$((STREAM_BYTES / 1024 / 1024))
if [ "$mb" -ge 1024 ]; then stream_size="$((mb / 1024)) GiB"; else stream_size="$mb MiB"; fi
commit=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(cd "$ROOT" && git status --porcelain -- src include Cargo.toml 2>/dev/null | wc -l)
[ "$dirty" -gt 0 ] && commit="$commit + uncommitted changes in src/"

table() {
  cat <<EOF
## sockasync benchmarks: raw system calls vs libuv vs tokio vs sockasync (loopback TCP, 127.0.0.1)

$(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit, $(nproc) CPUs, kernel $(uname -r), libuv $(pkg-config --modversion libuv), tokio ${TOKIO_VERSION:-?} (${TOKIO_BUILD}).
$ROUNDS rounds ($FAST_ROUNDS for small sends and streaming, about a second a run each),
mechanisms alternating in every round (raw, libuv, sockasync, tokio; in the
fan-out each server with 1 and with 2 threads); each cell is the median over the
rounds. A ratio cell is sockasync's median / the other's median, then in parentheses the
median and range of the per-round (paired) ratios. Whole run: ${ELAPSED} s; load average
before ${LOAD_BEFORE}, after ${LOAD_AFTER} (other work on the machine makes absolute
numbers noisy; the paired ratios are what to read).

| scenario | metric | raw syscalls | libuv | tokio | sockasync | sockasync / raw | sockasync / libuv | sockasync / tokio | target | met |
|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|
| 1. small sends: $(thousands "$SMALL_N") x 64 B, no TCP_NODELAY, reader thread draining | ns per send (lower is better) | $(fmt %.0f "$(median ${VALUES[small.raw]})") | $(fmt %.0f "$(median ${VALUES[small.uv]})") | $(fmt %.0f "$(median ${VALUES[small.tokio]})") | $(fmt %.0f "$(median ${VALUES[small.sa]})") | $(ratio small raw) | $(ratio small uv) | $(ratio small tokio) | <= 1.05x raw non-blocking send | $ok_small |
| 1. small sends | sends that hit EAGAIN (raw, libuv, tokio) or went pending (sockasync) per run: median (min-max) | $small_eagain_raw | $small_eagain_uv | $small_eagain_tokio | $small_pending | | | | | |
| 1. small sends under callgrind: $(thousands "$CALLGRIND_N") x 64 B, Ir of the toggled send function | user-space instructions (Ir) per call | ${IR_PER_CALL[raw]} | ${IR_PER_CALL[uv]} | n/a | ${IR_PER_CALL[sa]} | $(awk -v a="${IR_PER_CALL[sa]}" -v b="${IR_PER_CALL[raw]}" 'BEGIN { if (a+0 && b+0) printf "%.2f", a/b; else print "FAIL" }') | $(awk -v a="${IR_PER_CALL[sa]}" -v b="${IR_PER_CALL[uv]}" 'BEGIN { if (a+0 && b+0) printf "%.2f", a/b; else print "FAIL" }') | | <= 100 per synchronous sock_send_async | $ok_ir |
| 2. streaming: $stream_size in 64 KiB sends to a reader thread | GB/s (higher is better) | $(fmt %.2f "$(median ${VALUES[stream.raw]})") | $(fmt %.2f "$(median ${VALUES[stream.uv]})") | | $(fmt %.2f "$(median ${VALUES[stream.sa]})") | $(ratio stream raw) | $(ratio stream uv) | | >= 0.97x raw blocking, >= 1.00x libuv | $ok_stream |
| 3. ping-pong: 64 B, TCP_NODELAY, $(thousands "$PING_N") round trips; both ends in one process, each end on its own thread, unpinned (sockasync: both ends driven from their callbacks, 2 reactor threads) | p50 round trip, us (lower is better) | $(fmt %.1f "$(median ${VALUES[p50.raw]})") | $(fmt %.1f "$(median ${VALUES[p50.uv]})") | $(fmt %.1f "$(median ${VALUES[p50.tokio]})") | $(fmt %.1f "$(median ${VALUES[p50.sa]})") | $(ratio p50 raw) | $(ratio p50 uv) | $(ratio p50 tokio) | <= 1.05x raw, < libuv, < tokio | $ok_p50_free |
| 3. ping-pong | p99 round trip, us | $(fmt %.1f "$(median ${VALUES[p99.raw]})") | $(fmt %.1f "$(median ${VALUES[p99.uv]})") | $(fmt %.1f "$(median ${VALUES[p99.tokio]})") | $(fmt %.1f "$(median ${VALUES[p99.sa]})") | $(ratio p99 raw) | $(ratio p99 uv) | $(ratio p99 tokio) | | |
| 3. ping-pong, both ends on one core (the process on CPU 0, taskset -c 0: the placement of the issue's reference figures) | p50 round trip, us (lower is better) | $(fmt %.1f "$(median ${VALUES[p50one.raw]})") | $(fmt %.1f "$(median ${VALUES[p50one.uv]})") | $(fmt %.1f "$(median ${VALUES[p50one.tokio]})") | $(fmt %.1f "$(median ${VALUES[p50one.sa]})") | $(ratio p50one raw) | $(ratio p50one uv) | $(ratio p50one tokio) | <= 1.05x raw, < libuv, < tokio | $ok_p50_one |
| 3. ping-pong, one core | p99 round trip, us | $(fmt %.1f "$(median ${VALUES[p99one.raw]})") | $(fmt %.1f "$(median ${VALUES[p99one.uv]})") | $(fmt %.1f "$(median ${VALUES[p99one.tokio]})") | $(fmt %.1f "$(median ${VALUES[p99one.sa]})") | $(ratio p99one raw) | $(ratio p99one uv) | $(ratio p99one tokio) | | |
| 3. ping-pong, sockasync's client an application thread that waits for each completion (1 reactor thread; each round trip also crosses the hand-off from the reactor to the waiting thread) | p50 round trip, us (lower is better) | $(fmt %.1f "$(median ${VALUES[p50.raw]})") | $(fmt %.1f "$(median ${VALUES[p50.uv]})") | $(fmt %.1f "$(median ${VALUES[p50.tokio]})") | $(fmt %.1f "$(median ${VALUES[p50.sa-wait]:-FAIL})") | $(ratio p50 raw sa-wait) | $(ratio p50 uv sa-wait) | $(ratio p50 tokio sa-wait) | (reported) | |
| 3. ping-pong, the waiting client, one core | p50 round trip, us (lower is better) | $(fmt %.1f "$(median ${VALUES[p50one.raw]})") | $(fmt %.1f "$(median ${VALUES[p50one.uv]})") | $(fmt %.1f "$(median ${VALUES[p50one.tokio]})") | $(fmt %.1f "$(median ${VALUES[p50one.sa-wait]:-FAIL})") | $(ratio p50one raw sa-wait) | $(ratio p50one uv sa-wait) | $(ratio p50one tokio sa-wait) | (reported) | |
| 3. ping-pong, sockasync with a busy poll of ${BUSY_POLL_US} us (sock_runtime_set_busy_poll, opt-in: each reactor polls without sleeping for that long after a turn with work; unpinned, its reactors on both cores) | p50 round trip, us (lower is better) | $(fmt %.1f "$(median ${VALUES[p50.raw]})") | $(fmt %.1f "$(median ${VALUES[p50.uv]})") | $(fmt %.1f "$(median ${VALUES[p50.tokio]})") | $(fmt %.1f "$(median ${VALUES[p50.sa-spin]:-FAIL})") (p99 $(fmt %.1f "$(median ${VALUES[p99.sa-spin]:-FAIL})")) | $(ratio p50 raw sa-spin) | $(ratio p50 uv sa-spin) | $(ratio p50 tokio sa-spin) | (reported) | |
| 3. ping-pong | CPU (user + system, the whole process) per round trip, us, unpinned; on one core in parentheses (on a VM a blocked thread's wake-up is itself costly) | $(ping_cpu raw) | $(ping_cpu uv) | n/a | $(ping_cpu sa); with the busy poll: $(fmt %.1f "$(median ${EXTRA[pingcpu.sa-spin]:-FAIL})") | | | | | |
| 4. fan-out: $(thousands "$FAN_CONNS") connections, 16 KiB echoes for $FAN_SECONDS s, server SO_SNDBUF 4 KiB, client SO_RCVBUF 4 KiB; raw = hand-written edge-triggered epoll server; client a separate epoll process; 1 server thread (sockasync: 1 reactor thread; server process threads: $fan_threads) | completed echoes/s (higher is better) | $(fmt %.0f "$(median ${VALUES[fan.raw]})") | $(fmt %.0f "$(median ${VALUES[fan.uv]})") | | $(fmt %.0f "$(median ${VALUES[fan.sa]})") | $(ratio fan raw) | $(ratio fan uv) | | (the target is for 2 threads, next row) | |
| 4. fan-out with 2 server threads: 2 epoll loops (raw; the first accepts and deals the connections out in turn), 2 libuv loops (each its own SO_REUSEPORT listener), 2 reactor threads ($fan2_note) | completed echoes/s (higher is better) | $(fmt %.0f "$(median ${VALUES[fan.raw2]})") | $(fmt %.0f "$(median ${VALUES[fan.uv2]})") | | $(fmt %.0f "$(median ${VALUES[fan.sa2]})") | $(ratio fan raw2 sa2) | $(ratio fan uv2 sa2) | | >= 1.2x libuv completions/s with 2 reactor threads: against libuv with 1 loop $(ratio fan uv sa2), with 2 loops (left) | $ok_fan2 |
| 4. fan-out | server sends that went pending (sockasync: sock_send_async returned true; epoll: EAGAIN before the whole message was out; libuv: uv_write left bytes queued), % of sends: median (min-max) | $fan_pending_raw (2 loops: $fan2_pending_raw) | $fan_pending_uv (2 loops: $fan2_pending_uv) | | $fan_pending (2 reactor threads: $fan2_pending) | | | | most sends pending | |
| 4. fan-out | server CPU (user + system, all threads) per completed echo, us (lower is better); in parentheses the client process's CPU, % of one CPU (near 100%: the client is the limit); then the same with 2 server threads | $(fan_cpu raw); 2 loops: $(fan_cpu raw2) | $(fan_cpu uv); 2 loops: $(fan_cpu uv2) | | $(fan_cpu sa); 2 reactor threads: $(fan_cpu sa2) | $(ratio fancpu raw); 2 threads: $(ratio fancpu raw2 sa2) | $(ratio fancpu uv); 2 threads: $(ratio fancpu uv2 sa2) | | | |
| 4. fan-out | server RSS bytes per idle connection (lower is better; sockasync's includes the bench's own 48-B per-connection struct) | $(fmt %.0f "$(median ${VALUES[fanmem.raw]})") | $(fmt %.0f "$(median ${VALUES[fanmem.uv]})") | | $(fmt %.0f "$(median ${VALUES[fanmem.sa]})") (2 reactor threads: $(fmt %.0f "$(median ${VALUES[fanmem.sa2]})")) | $(ratio fanmem raw) | $(ratio fanmem uv) | | <= 256 B library memory per idle connection (RSS less the 48-B struct: $sa_lib_mem B) | $ok_fanmem |

### The io_uring backend (same run, alternating with the rows above)

| scenario | metric | raw syscalls | libuv | sockasync on epoll | sockasync on io_uring | io_uring / raw | io_uring / libuv | io_uring / epoll | target | met |
|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|
| 1. small sends through the batched path (SOCK_OPTION_BATCH_SENDS; every send pending: $(spread ${EXTRA[small.sa-batch]:-FAIL}) per run) | ns per send (lower is better) | $(fmt %.0f "$(median ${VALUES[small.raw]})") | $(fmt %.0f "$(median ${VALUES[small.uv]})") | $(fmt %.0f "$(median ${VALUES[small.sa]})") | $(fmt %.0f "$(median ${VALUES[small.sa-batch]:-FAIL})") | $(ratio small raw sa-batch) | $(ratio small uv sa-batch) | $(ratio small sa sa-batch) | <= 0.85x raw send(2) | $ok_batch |
| 2. streaming (readiness through the ring, sends tried at once as on epoll) | GB/s (higher is better) | $(fmt %.2f "$(median ${VALUES[stream.raw]})") | $(fmt %.2f "$(median ${VALUES[stream.uv]})") | $(fmt %.2f "$(median ${VALUES[stream.sa]})") | $(fmt %.2f "$(median ${VALUES[stream.sa-uring]:-FAIL})") | $(ratio stream raw sa-uring) | $(ratio stream uv sa-uring) | $(ratio stream sa sa-uring) | (reported) | |
| 3. ping-pong p50 | us (lower is better) | $(fmt %.1f "$(median ${VALUES[p50.raw]})") | $(fmt %.1f "$(median ${VALUES[p50.uv]})") | $(fmt %.1f "$(median ${VALUES[p50.sa]})") | $(fmt %.1f "$(median ${VALUES[p50.sa-uring]:-FAIL})") | $(ratio p50 raw sa-uring) | $(ratio p50 uv sa-uring) | $(ratio p50 sa sa-uring) | (reported) | |
| 3. ping-pong p50, one core | us (lower is better) | $(fmt %.1f "$(median ${VALUES[p50one.raw]})") | $(fmt %.1f "$(median ${VALUES[p50one.uv]})") | $(fmt %.1f "$(median ${VALUES[p50one.sa]})") | $(fmt %.1f "$(median ${VALUES[p50one.sa-uring]:-FAIL})") | $(ratio p50one raw sa-uring) | $(ratio p50one uv sa-uring) | $(ratio p50one sa sa-uring) | (reported) | |
| 4. fan-out, 1 reactor thread, batched echo sends | completed echoes/s (higher is better) | $(fmt %.0f "$(median ${VALUES[fan.raw]})") | $(fmt %.0f "$(median ${VALUES[fan.uv]})") | $(fmt %.0f "$(median ${VALUES[fan.sa]})") | $(fmt %.0f "$(median ${VALUES[fan.sa-uring]:-FAIL})") | $(ratio fan raw sa-uring) | $(ratio fan uv sa-uring) | $(ratio fan sa sa-uring) | (reported) | |
| 4. fan-out | server CPU per completed echo, us (lower is better) | $(fan_cpu raw) | $(fan_cpu uv) | $(fan_cpu sa) | $(fan_cpu sa-uring) | $(ratio fancpu raw sa-uring) | $(ratio fancpu uv sa-uring) | $(ratio fancpu sa sa-uring) | | |

How each was run (programs in benches/, built by benches/Makefile with -O2):
- tokio: benches/tokio (bench_tokio, a cargo package of its own built with --release
  --locked; tokio with only its current-thread runtime and I/O driver), the same scenarios,
  sizes, checks and output as the C programs.
- 1. small sends (bench_small): one connection, no TCP_NODELAY, a reader thread in the same
  process draining with blocking recv into 64 KiB and checking every byte and the total;
  an untimed 1% warm-up, then the send loop's wall time / sends. raw: non-blocking send(2)
  with MSG_NOSIGNAL, poll(POLLOUT) on EAGAIN. libuv: uv_try_write, poll(POLLOUT) on
  UV_EAGAIN. sockasync: sock_send_async with one reused args; a pending send is waited for
  (semaphore posted by its callback); each result's status and socket error are checked.
  tokio: TcpStream::try_write in a current-thread runtime, writable().await on WouldBlock.
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
  threads; every mechanism runs twice in each round: nothing pinned (the scheduler places
  the threads; placement on this VM moves latency a lot) and the whole process on CPU 0
  (taskset -c 0, so both ends share one core and every hand-off is a context switch there). $PING_WARMUP untimed round trips first; every response is compared with
  its request. raw: blocking send/recv, server on its own thread. libuv: both ends on
  libuv (uv_read_start + uv_write), each with its own loop and thread. sockasync
  (bench_pingpong sa): both ends on sockasync, 2 reactor threads (the server's socket on one,
  the client's on the other): the server's pending receive completes on its reactor thread,
  whose callback sends the echo and receives again; the client's receive callback checks the
  response and sends the next request (the row with the waiting client: bench_pingpong
  sa-wait, 1 reactor thread, the client thread issues sock_send_async then
  sock_receive_async and waits on a semaphore when one goes pending; the busy-poll row:
  bench_pingpong sa with SOCKASYNC_BUSY_POLL_US). tokio: both ends on
  tokio, each with its own current-thread runtime on its own thread (as libuv's), the
  server read + write_all, the client write_all + read_exact.
- 4. fan-out (bench_fanout): the measured process runs only the echo server; the client is
  a forked process (a plain edge-triggered epoll loop, the same for every mechanism) that
  connects $(thousands "$FAN_CONNS") sockets, then keeps one 16 KiB message in flight per connection and
  checks every echoed byte; echoes/s = echoes completed in $FAN_SECONDS s / elapsed (messages in
  flight at the end must still come back within 10 s, else the run fails). CPU: the client
  reads both processes' utime + stime (/proc/PID/stat) at the start and the end of the
  timed window. SO_SNDBUF 4 KiB
  on the server's listener (before accept, so every accepted socket has it) and SO_RCVBUF
  4 KiB on every client socket, the server's receive buffer left at the default: a message
  arrives in one receive and its echo cannot go out at once, so nearly every server send
  waits for the client to read. Each process raises RLIMIT_NOFILE to the hard limit (one
  descriptor per connection each). RSS per connection = (server VmRSS with all
  connections accepted and idle - VmRSS before connecting) / count; it includes the server
  program's own per-connection struct (epoll 32 B, sockasync 48 B with malloc's header) but
  no message buffer (each server allocates one only while data moves). raw: epoll, reads
  into a scratch buffer, copies what a send leaves. libuv: uv_read_start + uv_write, a
  malloc'd buffer per read. sockasync: from callbacks: accept, then per connection one
  args cycling zero-byte receive -> receive into a malloc'd buffer -> sock_send_async ->
  free; callbacks inline on the reactor threads. With 2 server threads (bench_fanout's
  fourth argument): raw runs 2 epoll loops (the first accepts and hands the connections to
  the two in turn), libuv 2 loops each with its own listener on the port (SO_REUSEPORT, the
  kernel spreads the connections), sockasync 2 reactor threads (given to the library before
  its first use; it spreads sockets over them in turn).
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
