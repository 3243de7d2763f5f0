"""Runs the built-in demo under jobbridge and reports how many jobs ran at once.

usage: demo.py JOBBRIDGE [BUDGET]
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import FIXTURES, HERE, JOB, max_overlap, read_intervals  # noqa: E402


def main():
    bridge, budget = os.path.abspath(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with tempfile.TemporaryDirectory(prefix="jobbridge-demo-") as root:
        for name in ("demo", "make-recursive", "cargo-sleepers"):
            shutil.copytree(os.path.join(FIXTURES, name), os.path.join(root, name))
        log = os.path.join(root, "jobs.log")
        env = {k: v for k, v in os.environ.items()
               if k not in ("MAKEFLAGS", "MFLAGS", "CARGO_MAKEFLAGS", "JOBSERVERV2")}
        env.update(JOB=JOB, JOBLOG=log, CARGO_TARGET_DIR=os.path.join(root, "target"))
        command = [bridge, "-v", f"-j{budget}", "--", "make", "-s", "-C", "demo"]
        print("$ " + " ".join(["jobbridge"] + command[1:]), flush=True)
        command += [f"JB={bridge}", f"CLIENT={os.path.join(HERE, 'socket_client.py')}"]
        status = subprocess.run(command, cwd=root, env=env).returncode
        intervals = [i for i in read_intervals(log) if i[2] is not None]
    if status != 0 or not intervals:
        print(f"demo: the build failed (exit {status})")
        return 1
    peak = max_overlap(intervals)
    work = sum(end - start for _, start, end in intervals) / 1e9
    wall = (max(i[2] for i in intervals) - min(i[1] for i in intervals)) / 1e9
    kinds = sorted({re.split(r"[-.]", name)[0] for name, _, _ in intervals})
    print(f"demo: {len(intervals)} jobs ({', '.join(kinds)}) under a budget of {budget}")
    print(f"demo: at most {peak} ran at once (budget {budget})")
    print(f"demo: {work:.1f} s of jobs in {wall:.1f} s of wall time "
          f"({work / wall:.2f} jobs busy on average)")
    if peak > budget:
        print("demo: FAILED: the budget was exceeded")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
