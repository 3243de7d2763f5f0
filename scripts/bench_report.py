"""What a long trace costs `jobbridge report` and the browser, in one run:
the page of a trace of 100000 grants by 1000 holders over 4 hours at -j16
(as a long build writes it), against the page of a short trace of 1000
grants by 10 holders over 3 minutes (the reference: a page drawn as it is,
one bar per grant). For each: the page's size, the time `jobbridge report`
takes, and the time headless Chromium takes to load and lay it out
(--dump-dom); medians of RUNS, the ratio long / short. Without thinning
(docs/CONTROL.md, "The report") the long page was 51 MB and took 18.7 s to
load.

usage: bench_report.py JOBBRIDGE [RUNS]
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from long_trace import long_trace  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def seconds(argv):
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   timeout=300)
    return time.perf_counter() - start


def measure(jobbridge, browser, folder, name, runs, **shape):
    trace = os.path.join(folder, f"{name}.trace.json")
    page = os.path.join(folder, f"{name}.html")
    with open(trace, "w") as f:
        json.dump({"traceEvents": long_trace(**shape), "displayTimeUnit": "ms",
                   "otherData": {"version": 1}}, f)
    report, load = [], []
    for run in range(runs):
        report.append(seconds([jobbridge, "report", trace, "-o", page]))
        if browser:
            profile = os.path.join(folder, f"profile-{name}-{run}")
            load.append(seconds([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                 "--dump-dom", "file://" + page]))
    return {"page_kib": os.path.getsize(page) / 1024, "report_s": statistics.median(report),
            "load_s": statistics.median(load) if load else None}


def main():
    jobbridge = os.path.abspath(sys.argv[1])
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    browser = shutil.which("chromium")
    with tempfile.TemporaryDirectory(prefix="jobbridge-bench-report.") as folder:
        short = measure(jobbridge, browser, folder, "short", runs, grants=1000, holders=10,
                        budget=16, hours=0.05)
        long = measure(jobbridge, browser, folder, "long", runs, grants=100000, holders=1000,
                       budget=16, hours=4)
    print(f"{'report of a long trace (reference: a short one)':44} {'short':>12} {'long':>12} "
          f"{'ratio':>7}  target")
    rows = [("page size (KiB)", "page_kib", "<= 20x (100x the grants)"),
            ("jobbridge report (s)", "report_s", "info"),
            ("Chromium load and layout (s)", "load_s", "<= 5x")]
    for label, key, target in rows:
        if short[key] is None:
            print(f"{label:44} skipped: no chromium (run scripts/install-deps.sh)")
            continue
        print(f"{label:44} {short[key]:12.2f} {long[key]:12.2f} "
              f"{long[key] / short[key]:6.1f}x  {target}")
    print(f"Medians of {runs} runs. The long trace has 100x the grants and 100x the holders;"
          " its page is thinned (at most 300 rows, 20000 bars, one counter column per pixel).")


if __name__ == "__main__":
    main()
