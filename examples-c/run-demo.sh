#!/usr/bin/env bash
# The echo demo: builds the library and the C examples, starts echo_server on a free
# loopback port, runs three echo_clients against it at the same time, and checks that they
# and the server all succeed.
#   bash examples-c/run-demo.sh            (or: make -C examples-c run)
# Set DEMO_WRAP to run every example under a tool, e.g.
#   DEMO_WRAP="valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99" \
#     bash examples-c/run-demo.sh
# or set DEMO_SAN=1 to run them built with AddressSanitizer + UBSan. DEMO_SERVER or
# DEMO_CLIENT replace one side by another program with the same arguments and output, e.g.
#   DEMO_SERVER="mono build/csharp/Echo.exe server" bash examples-c/run-demo.sh
# Ends with "echo demo: N passed, M failed" (the clients plus the server) and exits non-zero
# if anything failed.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
san=${DEMO_SAN:+1}
bin=$root/build/examples${san:+-san}
read -r -a wrap <<<"${DEMO_WRAP:-}"
read -r -a server_program <<<"${DEMO_SERVER:-$bin/echo_server}"
read -r -a client_program <<<"${DEMO_CLIENT:-$bin/echo_client}"

# Each client: MESSAGES SIZE.
clients=("1000 1024" "100 65536" "10000 16")
total=$((${#clients[@]} + 1)) # the clients and the server

work=$(mktemp -d)
server_pid=
client_pids=()
# On any exit: stop what we started and is still running (by process id), remove our files.
cleanup() {
  local pid
  for pid in $server_pid "${client_pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
    fi
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stops early: everything that did not get to run counts as failed.
give_up() {
  echo "echo demo: $1" >&2
  echo "echo demo: 0 passed, $total failed"
  exit 1
}

echo "== building the library (cargo build --release)"
(cd "$root" && timeout 600 cargo build --release --quiet) || give_up "the library did not build"
echo "== building the examples"
timeout 60 make -s -C "$here" ${san:+SAN=1} || give_up "the examples did not build"

echo "== starting ${server_program[*]##*/} on 127.0.0.1, port 0 (a free one), for ${#clients[@]} connections"
timeout 60 "${wrap[@]}" "${server_program[@]}" 127.0.0.1:0 "${#clients[@]}" \
  >"$work/server.out" 2>"$work/server.err" &
server_pid=$!

# Its first line of output names the port it got: wait for it (at most 10 s).
endpoint=
for _ in $(seq 100); do
  line=$(head -n 1 "$work/server.out")
  if [[ $line == "listening on "* ]]; then
    endpoint=${line#listening on }
    break
  fi
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$endpoint" ]; then
  cat "$work/server.err" >&2
  give_up "echo_server did not report its endpoint"
fi
echo "   echo_server is listening on $endpoint"

echo "== running ${#clients[@]} echo_clients at once"
for i in "${!clients[@]}"; do
  read -r messages size <<<"${clients[$i]}"
  timeout 60 "${wrap[@]}" "${client_program[@]}" "$endpoint" "$messages" "$size" \
    >"$work/client$i.out" 2>"$work/client$i.err" &
  client_pids+=($!)
done

passed=0
failed=0
for i in "${!clients[@]}"; do
  read -r messages size <<<"${clients[$i]}"
  wait "${client_pids[$i]}"
  rc=$?
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    echo "   client #$((i + 1)) ($messages x $size B): ok: $(cat "$work/client$i.out")"
  else
    failed=$((failed + 1))
    echo "   client #$((i + 1)) ($messages x $size B): exit status $rc$([ "$rc" -eq 124 ] && echo ' (timed out)')"
    sed 's/^/     | /' "$work/client$i.out" "$work/client$i.err"
  fi
done

if [ "$failed" -gt 0 ]; then
  # It would wait for its missing connections until the timeout: stop it now instead
  # (SIGTERM makes it shut down cleanly, as after its last connection).
  echo "== stopping echo_server early: not every client got to finish"
  kill -TERM "$server_pid" 2>/dev/null
else
  echo "== waiting for echo_server to exit"
fi
wait "$server_pid"
rc=$?
server_pid=
if [ "$rc" -eq 0 ]; then
  passed=$((passed + 1))
  echo "   echo_server: ok: $(tail -n +2 "$work/server.out")"
else
  failed=$((failed + 1))
  echo "   echo_server: exit status $rc$([ "$rc" -eq 124 ] && echo ' (timed out)')"
fi
sed 's/^/     | /' "$work/server.err"

echo "echo demo: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
