#!/usr/bin/env bash
# Runs the client library's threaded tests (ctest label `threads`: cancel,
# timeouts, many threads on one client, in socket and legacy mode) under
# ThreadSanitizer in build-tsan/. Only the client library and that test
# binary are built: they use no libuv, which is not instrumented. The label
# also holds the bridge's own threaded path (a joined jobbridge's threads
# waiting on an outer semaphore, jobbridge_upstream_threads_tests), built
# with the bridge's library: libuv's side of the hand-over is not checked. Any race
# stops its test (halt_on_error=1) and fails the run. Ends with one line:
# tests run, acquire/release cycles the tests' threads completed (each test
# prints its own), the threads (summed over the tests), races reported.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build-tsan
jobs=$(nproc)
start=$SECONDS

cmake -S . -B "$dir" -DJOBBRIDGE_TSAN=ON -DJOBBRIDGE_WERROR=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$dir" -j "$jobs" --target jobbridge_client_threads_tests \
  jobbridge_upstream_threads_tests

log="$dir/tsan-threads.log"
status=0
# -V: the tests' own "threads-test:" lines and any TSan report land in the log.
(cd "$dir" && TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}" \
  ctest -L threads -j "$jobs" -V --no-tests=error) >"$log" 2>&1 || status=$?

grep -E "(Test +#[0-9]+: .*(Passed|Failed|\*\*\*)|tests passed|ThreadSanitizer)" "$log" || true
tests=$(grep -oE "tests passed, [0-9]+ tests failed out of [0-9]+" "$log" | grep -oE "[0-9]+$" || echo 0)
read -r cycles threads < <(grep -oE "threads-test: cycles=[0-9]+ threads=[0-9]+" "$log" |
  awk -F'[= ]' '{c += $3; t += $5} END {print c + 0, t + 0}')
races=$(grep -c "WARNING: ThreadSanitizer" "$log" || true)
if [ "$status" -ne 0 ]; then
  echo "tsan: FAILED (ctest exit $status); the log is $log" >&2
fi
echo "tsan: ${tests} tests, ${cycles} acquire/release cycles across ${threads} threads," \
  "${races} races ($((SECONDS - start)) s)"
exit "$status"
