"""What per-invocation pools cost (docs/LEAKS.md), in one run:

- build: a recursive make build of 200 tiny jobs (20 sub-makes x 10 jobs of
  `true`) under `jobbridge -j4` with per-invocation pools (the default) and
  with --no-adapters (every tool shares the command's pool), and under plain
  `make -j4` as the reference; alternated, RUNS times each, medians shown.
- set-up: the start of one adapted `make --version` under a jobbridge root,
  with a pool of its own and without (JOBBRIDGE_POOLS unset), medians of
  STARTS; the difference is what one invocation's pool costs.

usage: bench_pools.py JOBBRIDGE [RUNS] [STARTS]
       bench_pools.py --starts STARTS JOBBRIDGE  (inside a root: the set-up part)
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

SUBMAKES, JOBS = 20, 10


def wall_ms(argv, env, cwd=None):
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    return (time.perf_counter() - start) * 1000


def write_build(folder):
    parts = " ".join(f"p{i}" for i in range(SUBMAKES))
    with open(os.path.join(folder, "Makefile"), "w") as f:
        f.write(f"all: {parts}\n{parts}:\n\t+@$(MAKE) -s -f sub.mk PART=$@\n")
    with open(os.path.join(folder, "sub.mk"), "w") as f:
        jobs = " ".join(f"$(PART)-{j}" for j in range(JOBS))
        f.write(f"all: {jobs}\n$(PART)-%:\n\t@true\n")


def build(bridge, runs):
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    sides = {
        "plain make -j4": ["make", "-s", "-j4"],
        "jobbridge, pools": [bridge, "-j4", "--", "make", "-s"],
        "jobbridge --no-adapters": [bridge, "-j4", "--no-adapters", "--", "make", "-s"],
    }
    times = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as folder:
        write_build(folder)
        for _ in range(runs):
            for name, argv in sides.items():
                times[name].append(wall_ms(argv, env, folder))
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"{SUBMAKES * JOBS}-job recursive make build ({SUBMAKES} sub-makes x {JOBS} jobs of "
          f"`true`), -j4, median of {runs} runs each (ms):")
    reference = medians["plain make -j4"]
    for name, median in medians.items():
        print(f"  {name:26} {median:8.1f}   {median / reference:5.2f}x plain make")
    ratio = medians["jobbridge, pools"] / medians["jobbridge --no-adapters"]
    print(f"  pools / --no-adapters: {ratio:.2f}x")


def setup(bridge, starts):
    """Run inside a root: adapted starts with and without a pool of their own."""
    with_pool = dict(os.environ)
    without = {k: v for k, v in os.environ.items() if k != "JOBBRIDGE_POOLS"}
    if "JOBBRIDGE_POOLS" not in with_pool:
        sys.exit("bench_pools: JOBBRIDGE_POOLS is not set: run under a jobbridge root")
    argv = [bridge, "adapt", "--", "make", "--version"]
    times = {"with": [], "without": []}
    for _ in range(starts):
        times["with"].append(wall_ms(argv, with_pool))
        times["without"].append(wall_ms(argv, without))
    a, b = statistics.median(times["with"]), statistics.median(times["without"])
    print(f"adapted `make --version` under a root, median of {starts} starts each: "
          f"{a:.2f} ms with a pool of its own, {b:.2f} ms without; "
          f"one pool's set-up: {(a - b) * 1000:.0f} us")


def main():
    if sys.argv[1] == "--starts":
        setup(os.path.abspath(sys.argv[3]), int(sys.argv[2]))
        return
    bridge = os.path.abspath(sys.argv[1])
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    starts = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    build(bridge, runs)
    subprocess.run([bridge, "-j4", "--", sys.executable, os.path.abspath(__file__), "--starts",
                    str(starts), bridge], check=True)


if __name__ == "__main__":
    main()
