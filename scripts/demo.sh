#!/usr/bin/env bash
# Installs what is needed, builds jobbridge and runs it on the built-in demo:
# a make build whose recipes run sub-makes and a cargo build, under one budget.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build >/dev/null
cmake --build build -j "$(nproc)" --target jobbridge
python3 scripts/demo.py build/jobbridge "${1:-3}"
