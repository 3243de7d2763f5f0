"""The cost an adapter adds to starting a tool: median wall time of many
starts of `make --version` (and ninja --version), directly and through
jobbridge's shim, in one run, with a FIFO jobserver in MAKEFLAGS so that the
shim really rewrites it (for make: opens the FIFO, fifo: -> R,W).

usage: bench_adapt.py JOBBRIDGE NINJA [RUNS]
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time


def median_ms(argv, env, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main():
    bridge, ninja = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    with tempfile.TemporaryDirectory() as folder:
        fifo = os.path.join(folder, "fifo")
        os.mkfifo(fifo)
        keep = os.open(fifo, os.O_RDWR)  # the "server" end, so opens never block
        env = dict(os.environ, MAKEFLAGS=f"-j4 --jobserver-auth=fifo:{fifo}")
        print(f"adapter start-up cost, median of {runs} starts each (ms):")
        print(f"{'tool':8} {'direct':>8} {'adapted':>8} {'ratio':>6} {'added':>7}")
        for name, tool in (("make", "make"), ("ninja", ninja)):
            direct = median_ms([tool, "--version"], env, runs)
            adapted = median_ms([bridge, "adapt", "--", tool, "--version"], env, runs)
            print(f"{name:8} {direct:8.2f} {adapted:8.2f} {adapted / direct:6.2f} "
                  f"{adapted - direct:7.2f}")
        os.close(keep)


if __name__ == "__main__":
    main()
