#!/usr/bin/env bash
# Installs what is needed, then runs every test twice: in a normal build and
# in an AddressSanitizer + UndefinedBehaviorSanitizer build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/check-format.sh

jobs=$(nproc)
run_suite() {
  local dir=$1
  shift
  cmake -S . -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
  rm -f "$dir/client-matrix.txt"
  (cd "$dir" && ctest -j "$jobs" --output-on-failure)
  # integration/test_clients.py's table: what each real client ran at once.
  if [ -f "$dir/client-matrix.txt" ]; then cat "$dir/client-matrix.txt"; fi
}

echo "== tests (build/)"
run_suite build
echo "== tests under ASan + UBSan (build-asan/)"
run_suite build-asan -DJOBBRIDGE_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
