#!/usr/bin/env bash
# Runs the libFuzzer targets in fuzz/ for a bounded time each (FUZZ_SECONDS,
# default 30), from the seed corpora in fuzz/corpus/, and prints libFuzzer's
# counts. A crash fails the run and leaves the input in build-fuzz/ (make it
# a regression test, and a file in the corpus). Needs clang with libFuzzer
# (scripts/install-deps.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-30}
out=build-fuzz
mkdir -p "$out"
flags=(-std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Isrc)
clang++ "${flags[@]}" fuzz/makeflags_fuzzer.cc src/core/makeflags.cc -o "$out/makeflags_fuzzer"
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
cp fuzz/corpus/makeflags/* "$corpus/"
echo "fuzz: makeflags_fuzzer for ${seconds} s"
(cd "$out" && ./makeflags_fuzzer -max_total_time="$seconds" -print_final_stats=1 \
  -max_len=512 "$corpus" 2>&1 | grep -E "^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+ +DONE)|ERROR|SUMMARY" )
