#!/usr/bin/env bash
# Runs the libFuzzer targets in fuzz/ for a bounded time each (FUZZ_SECONDS,
# default 30), from the seed corpora in fuzz/corpus/, and prints libFuzzer's
# counts. A crash fails the run and leaves the input in build-fuzz/ (make it
# a regression test, and a file in the corpus). Needs clang with libFuzzer
# (scripts/install-deps.sh installs it) and libuv (for socket_fuzzer and
# control_fuzzer).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-30}
out=build-fuzz
mkdir -p "$out"
flags=(-std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Isrc)
# The two builds run side by side; each is checked by its wait.
clang++ "${flags[@]}" fuzz/makeflags_fuzzer.cc src/core/makeflags.cc -o "$out/makeflags_fuzzer" &
makeflags_build=$!
# shellcheck disable=SC2046  # pkg-config prints several words
clang++ "${flags[@]}" -Itests fuzz/socket_fuzzer.cc src/broker.cc src/broker_pools.cc src/broker_semaphore.cc src/broker_status.cc \
  src/endpoints/socket_server-posix.cc src/endpoints/unix_listener-posix.cc src/endpoints/socket_endpoint.cc \
  src/endpoints/invocation_pool-posix.cc src/endpoints/invocation_endpoint.cc \
  src/endpoints/legacy_pool-posix.cc src/endpoints/root_pool_endpoint.cc \
  src/read_watcher-posix.cc src/core/ledger.cc src/core/makeflags.cc src/counted_waiters.cc \
  $(pkg-config --cflags --libs libuv) -o "$out/socket_fuzzer" &
socket_build=$!
clang++ "${flags[@]}" fuzz/control_fuzzer.cc src/control/control_protocol.cc \
  src/control/control_server-posix.cc src/endpoints/unix_listener-posix.cc \
  $(pkg-config --cflags --libs libuv) -o "$out/control_fuzzer" &
control_build=$!
clang++ "${flags[@]}" fuzz/report_fuzzer.cc src/report_model.cc src/report_drawing.cc src/report_html.cc \
  -o "$out/report_fuzzer" &
report_build=$!
wait "$makeflags_build"
wait "$socket_build"
wait "$control_build"
wait "$report_build"
corpora=$(mktemp -d)
trap 'rm -rf "$corpora"' EXIT

# run TARGET CORPUS_NAME: fuzzes for $seconds from a copy of the seeds.
run() {
  local target=$1 corpus="$corpora/$2"
  mkdir -p "$corpus"
  cp "fuzz/corpus/$2/"* "$corpus/"
  echo "fuzz: ${target} for ${seconds} s"
  (cd "$out" && "./$target" -max_total_time="$seconds" -print_final_stats=1 \
    -max_len=512 "$corpus" 2>&1 | grep -E "^(stat::number_of_executed_units|stat::new_units_added|Done [0-9]+ runs)|ERROR|SUMMARY|invariant broken|Test unit written" )
}
run makeflags_fuzzer makeflags
run socket_fuzzer socket
run control_fuzzer control
run report_fuzzer report
