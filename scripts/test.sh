#!/usr/bin/env bash
# Installs what is needed, then runs every test twice: in a normal build and
# in an AddressSanitizer + UndefinedBehaviorSanitizer build; then the client
# library's threaded tests under ThreadSanitizer, a Release build and its
# Debian package, and the fuzzers for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/check-format.sh

jobs=$(nproc)
# No test may leave a System V semaphore set behind (the Robust Jobserver's,
# made by every root jobbridge): sets of this user made since the suite
# started and still there at its end are listed and fail the run. (Run it
# alone: a jobbridge running beside it counts too.)
started=$(date +%s)
leftover_sets() {
  awk -v uid="$(id -u)" -v since="$started" \
    'NR > 1 && $7 == uid && $10 >= since { print "  sysvsem:" $2 " (made " $10 ")" }' \
    /proc/sysvipc/sem
}
run_suite() {
  local dir=$1
  shift
  cmake -S . -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
  rm -f "$dir/client-matrix.txt" "$dir/chaos-summary.txt"
  (cd "$dir" && ctest -j "$jobs" --output-on-failure)
  # integration/test_clients.py's table: what each real client ran at once.
  if [ -f "$dir/client-matrix.txt" ]; then cat "$dir/client-matrix.txt"; fi
  # integration/test_chaos.py's counts: seed, cycles, kills, peak, losses.
  if [ -f "$dir/chaos-summary.txt" ]; then cat "$dir/chaos-summary.txt"; fi
}

echo "== tests (build/)"
run_suite build -DJOBBRIDGE_WERROR=ON
echo "== tests under ASan + UBSan (build-asan/)"
run_suite build-asan -DJOBBRIDGE_WERROR=ON -DJOBBRIDGE_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
# The client library's threaded paths (cancel, timeouts, concurrent acquire)
# under ThreadSanitizer: prints the tests, cycles and threads it ran.
echo "== client library threads under ThreadSanitizer (build-tsan/)"
scripts/tsan.sh
# What a user or a packager builds: Release, warnings not fatal. It must
# build and run.
echo "== Release build (build-release/)"
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DJOBBRIDGE_TESTS=OFF >/dev/null
cmake --build build-release -j "$jobs"
build-release/jobbridge -v -j2 -- true
# The Debian package of that build, unpacked and run as a user would get it.
scripts/check-package.sh build-release
echo "== fuzzing (build-fuzz/)"
scripts/fuzz.sh
echo "== System V semaphore sets left by the tests"
left=$(leftover_sets)
if [ -n "$left" ]; then
  echo "left behind (remove them with ipcrm -s ID):"
  echo "$left"
  exit 1
fi
echo "none"
