#!/usr/bin/env bash
# Builds the Debian package from a Release build folder (default
# build-release/) and checks it as a user would get it: unpacked into an
# empty root, its jobbridge runs a make build within the budget using the
# shims beside it, and it says what it depends on.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-release}
(cd "$build" && cpack -G DEB >/dev/null)
deb=$(ls "$build"/jobbridge_*.deb)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
depends=$(dpkg-deb -f "$deb" Depends)
case "$depends" in *libuv1*) ;; *) echo "check-package: Depends lacks libuv1: $depends"; exit 1;; esac
for file in usr/bin/jobbridge usr/bin/jobbridge-shims/make usr/bin/jobbridge-shims/ninja \
            usr/share/man/man1/jobbridge.1 usr/lib/pkgconfig/jobbridge-client.pc; do
  [ -e "$root/$file" ] || { echo "check-package: $file missing from $deb"; exit 1; }
done
# Four jobs that record how many run at once, under a budget of 2.
cat > "$root/Makefile" <<'MAKEFILE'
all: a b c d
a b c d:
	@echo start >> log; n=$$(grep -c start log); e=$$(grep -c end log 2>/dev/null || true); \
	 echo "running $$((n - e))" >> peaks; sleep 0.2; echo end >> log
MAKEFILE
(cd "$root" && env PATH=/usr/bin:/bin "$root/usr/bin/jobbridge" -v -j2 -- make -s) 2> "$root/err"
grep -q "jobbridge: all 1 jobserver tokens came back" "$root/err" || { cat "$root/err"; exit 1; }
peak=$(sed 's/running //' "$root/peaks" | sort -n | tail -1)
[ "$peak" -le 2 ] || { echo "check-package: $peak jobs at once under -j2"; exit 1; }
echo "check-package: $(basename "$deb") (Depends: $depends) unpacked and ran make -j2: at most $peak at once"
