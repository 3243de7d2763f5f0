"""jobbridge report under the real binary and a real browser: the page
drawn from a build's trace is loaded in headless Chromium, which tells what
it drew (the DOM after layout) and keeps a screenshot in the build folder.
The figures are recomputed here from the trace, independently."""

import json
import os
import re
import shutil
import subprocess
import sys
import unittest

from harness import BridgeTestCase, HERE, wait_for
from long_trace import long_trace, overall_utilisation

CLIENT = os.path.join(HERE, "socket_client.py")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def utilisation(events):
    """Slot-seconds in use over slot-seconds of the budget, while any
    request waited (docs/CONTROL.md, "The report")."""
    steps = []
    for e in events:
        if e["ph"] == "C" and e["name"] in ("in use", "waiting", "budget"):
            value = e["args"]["slots"] if e["name"] == "budget" else sum(e["args"].values())
            steps.append((e["ts"], e["name"], value))
    end = max(e.get("ts", 0) for e in events)
    steps.sort(key=lambda s: s[0])
    state = {"in use": 0, "waiting": 0, "budget": 0}
    used = available = 0.0
    last = 0
    for ts, name, value in steps + [(end, None, None)]:
        if state["waiting"] > 0:
            used += state["in use"] * (ts - last)
            available += state["budget"] * (ts - last)
        last = ts
        if name:
            state[name] = value
    return used / available


class ReportTest(BridgeTestCase):
    def chromium(self, *args):
        browser = shutil.which("chromium")
        self.assertIsNotNone(browser, "chromium is missing: run scripts/install-deps.sh")
        profile = os.path.join(self.sandbox.root, "chromium-profile")
        return subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120)

    def test_the_report_of_a_build_renders_in_chromium(self):
        trace = os.path.join(self.sandbox.root, "build.trace.json")
        page = os.path.join(self.sandbox.root, "report.html")
        self.sandbox.write_file("Makefile", "all: " + " ".join(f"m{i}" for i in range(6)) + "\n"
                                + "".join(f'm{i}:\n\t@"$(JOB)" make{i} 0.3\n' for i in range(6)))
        script = ("make -s & "
                  + " ".join(f"{sys.executable} {CLIENT} sock{i} 0.2 3 &" for i in range(3))
                  + " wait")
        result = self.sandbox.run([self.bridge, "-v", "-j3", "--trace", trace, "--", "sh", "-c",
                                   script])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assert_nothing_lost(result, 2)
        report = self.sandbox.run([self.bridge, "report", trace, "-o", page])
        self.assertEqual(report.returncode, 0, report.stderr)
        with open(trace) as f:
            events = json.load(f)["traceEvents"]
        with open(page) as f:
            html = f.read()
        # Self-contained: nothing to fetch.
        self.assertNotRegex(html, r"\b(src|href)=")
        self.assertEqual(re.findall(r"https?://[^\"' ]+", html), ["http://www.w3.org/2000/svg"])

        dom = self.chromium("--dump-dom", "file://" + page)
        self.assertEqual(dom.returncode, 0, dom.stderr[-2000:])
        drawn = dom.stdout
        slices = drawn.count('class="slice"')
        grants = sum(1 for e in events if e["ph"] == "X")
        self.assertEqual(slices, grants, "one slice drawn per grant")
        figure = re.search(r'id="utilisation">([\d.]+)%<', drawn)
        self.assertIsNotNone(figure, drawn[:2000])
        expected = utilisation(events) * 100
        self.assertAlmostEqual(float(figure.group(1)), expected, delta=0.06)
        tracks = len({e["tid"] for e in events if e["ph"] in ("X", "b")})
        self.assertEqual(drawn.count('class="track"'), tracks)
        self.assertIn('id="holders"', drawn)

        shot = os.path.join(os.environ.get("JOBBRIDGE_BUILD_DIR", self.sandbox.root),
                            "report-screenshot.png")
        taken = self.chromium(f"--screenshot={shot}", "--window-size=1200,900", "file://" + page)
        self.assertEqual(taken.returncode, 0, taken.stderr[-2000:])
        with open(shot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        self.assertGreater(os.path.getsize(shot), 10000, "an empty screenshot")
        print(f"\nreport: {slices} slices, utilisation {figure.group(1)}% while work waited "
              f"(recomputed: {expected:.2f}%); screenshot kept at {shot}", file=sys.stderr)
        self.assert_no_leftovers()

    def test_the_report_of_a_trace_of_hours_is_thinned_and_renders(self):
        """A trace as a build of 4 hours at -j16 writes it: 100000 grants by
        1000 tool invocations, the counters at every grant. The page stays a
        few MB, Chromium draws it, and it says what it merged."""
        events = long_trace(grants=100000, holders=1000, budget=16, hours=4)
        trace = self.sandbox.write_file("long.trace.json", json.dumps(
            {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"version": 1}}))
        page = os.path.join(self.sandbox.root, "long.html")
        report = self.sandbox.run([self.bridge, "report", trace, "-o", page])
        self.assertEqual(report.returncode, 0, report.stderr)
        self.assertLess(os.path.getsize(page), 4 << 20)

        dom = self.chromium("--dump-dom", "file://" + page)
        self.assertEqual(dom.returncode, 0, dom.stderr[-2000:])
        drawn = dom.stdout
        thinned = re.search(r"(\d+) grants are drawn as (\d+) bars", drawn)
        self.assertIsNotNone(thinned, drawn[:3000])
        # The rows are the 300 holders with the most slot-seconds: their grants.
        held, grants = {}, {}
        for e in events:
            if e["ph"] == "X":
                held[e["tid"]] = held.get(e["tid"], 0) + e["dur"]
                grants[e["tid"]] = grants.get(e["tid"], 0) + 1
        top = sorted(held, key=held.get, reverse=True)[:300]
        self.assertEqual(int(thinned.group(1)), sum(grants[tid] for tid in top))
        self.assertIn(f"of the trace's 100000 grants), 700 more do not", drawn)
        bars = drawn.count("<rect ")  # no waits in this trace: every bar is a slice
        self.assertEqual(bars, int(thinned.group(2)))
        self.assertLessEqual(bars, 20000)
        self.assertEqual(drawn.count('class="track"'), 300)
        self.assertIn("and 700 more holders", drawn)
        figure = re.search(r'id="utilisation-overall">([\d.]+)%<', drawn)
        self.assertIsNotNone(figure)
        self.assertAlmostEqual(float(figure.group(1)), overall_utilisation(events) * 100,
                               delta=0.06)
        print(f"\nlong report: {os.path.getsize(page) >> 10} KiB, {bars} bars for 100000 grants",
              file=sys.stderr)

    def test_bad_traces_are_named(self):
        page = os.path.join(self.sandbox.root, "r.html")
        not_json = self.sandbox.write_file("x.json", "hello")
        foreign = self.sandbox.write_file("f.json", '{"traceEvents": []}')
        cases = [([not_json, "-o", page], 1, "not a JSON trace"),
                 ([foreign, "-o", page], 1, "not one written by jobbridge --trace"),
                 (["/nonexistent.json", "-o", page], 1, "cannot read /nonexistent.json"),
                 ([not_json], 2, "give the trace and the page to write")]
        for args, status, message in cases:
            with self.subTest(args=args):
                result = self.sandbox.run([self.bridge, "report", *args])
                self.assertEqual(result.returncode, status, result.stderr)
                self.assertIn(message, result.stderr)
                self.assertFalse(os.path.exists(page))


if __name__ == "__main__":
    unittest.main()
