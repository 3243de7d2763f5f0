"""--trace FILE under the real binary (docs/CONTROL.md, "The trace"): a
build of make, socket and semaphore clients with a resize in the middle;
the trace parses, has the documented events, and its counters agree with
the jobs' own records; after SIGINT it is still valid JSON. Every test ends
by proving that nothing was lost."""

import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import shutil
import types
import unittest

from harness import BridgeTestCase, HERE, max_overlap, read_stamps, wait_for

CLIENT = os.path.join(HERE, "socket_client.py")


def counter_at(counters, ts):
    """The last counter event at or before ts (its args), or None."""
    last = None
    for event in counters:
        if event["ts"] > ts:
            break
        last = event["args"]
    return last


class TraceTest(BridgeTestCase):
    @classmethod
    def setUpClass(cls):
        cls.bin_dir = tempfile.mkdtemp(prefix="jb-trace-bin-")
        cls.semaphore_client = os.path.join(cls.bin_dir, "sysvsem_client")
        sanitize = os.environ.get("JOBBRIDGE_CC_FLAGS", "").split()
        cc = subprocess.run(["cc", "-std=c99", "-Wall", "-Werror", *sanitize, "-o",
                             cls.semaphore_client, os.path.join(HERE, "sysvsem_client.c")],
                            capture_output=True, text=True)
        if cc.returncode != 0:
            raise RuntimeError("cannot build sysvsem_client.c: " + cc.stderr)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.bin_dir, ignore_errors=True)

    def load(self, path):
        with open(path) as f:
            trace = json.load(f)  # valid JSON, or the test fails here
        self.assertEqual(trace["otherData"]["version"], 1)
        events = trace["traceEvents"]
        # Slices are complete events: a start and a duration.
        for event in events:
            self.assertNotIn(event["ph"], ("B", "E"), event)
            if event["ph"] == "X":
                self.assertGreaterEqual(event["dur"], 0, event)
        waits = collections.Counter()
        for event in events:
            if event["ph"] in ("b", "e"):
                waits[event["id"]] += 1 if event["ph"] == "b" else -1
        self.assertEqual(set(waits.values()) - {0}, set(), "waits left open")
        return events

    def test_a_mixed_build_with_a_resize_traced(self):
        trace = os.path.join(self.sandbox.root, "build.trace.json")
        self.sandbox.write_file("Makefile", "all: " + " ".join(f"m{i}" for i in range(12))
                                + "\n" + "".join(f'm{i}:\n\t@"$(JOB)" make{i} 0.3\n'
                                                 for i in range(12)))
        script = ("make -s & "
                  + " ".join(f"{sys.executable} {CLIENT} sock{i} 0.3 4 &" for i in range(2))
                  + " ".join(f" {self.semaphore_client} sem{i} 0.3 4 &" for i in range(2))
                  + " wait")
        bridge = self.sandbox.start([self.bridge, "-v", "-j4", "--trace", trace, "--", "sh",
                                     "-c", script])

        wait_for(lambda: self.sandbox.ended_jobs() >= 6, 60, "6 jobs to end")
        self.resize(bridge.pid, 2)
        wait_for(lambda: self.sandbox.ended_jobs() >= 12, 60, "6 more jobs to end")
        self.resize(bridge.pid, 4)
        out, err = bridge.communicate(timeout=120)
        self.assertEqual(bridge.returncode, 0, err)
        self.assertNotIn("sysvsem_client:", err)
        events = self.load(trace)
        kinds = collections.Counter(event["ph"] for event in events)
        print(f"\ntrace of a mixed build: {len(events)} events, "
              + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())), file=sys.stderr)
        clock = next(e for e in events if e["name"] == "jobbridge_clock")["args"]
        zero_ns = clock["epoch_us_at_ts_0"] * 1000
        names = {e["tid"]: e["args"]["name"] for e in events
                 if e["ph"] == "M" and e["name"] == "thread_name"}
        # A track per socket client process (its connections share it),
        # named with its real pid and command.
        for name, pid in read_stamps(self.sandbox.log, "pid").items():
            if name.startswith("sock"):
                self.assertTrue(any(track.startswith(f"socket: pid {pid} ")
                                    and f"socket_client.py {name} " in track
                                    for track in names.values()), names)
        resizes = [e["args"]["jobs"] for e in events if e["ph"] == "i" and e["name"] == "resize"]
        self.assertEqual(resizes, [2, 4])
        budgets = [e["args"]["slots"] for e in events if e["ph"] == "C" and e["name"] == "budget"]
        self.assertEqual(budgets, [4, 2, 4])
        in_use = [e for e in events if e["ph"] == "C" and e["name"] == "in use"]
        self.assertGreater(len(in_use), 10)
        # The counters against the jobs' own records, at the middle of
        # every job: each side's count covers its running jobs, with at most
        # one slot more (granted, its job not started yet).
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 12 + 8 + 8)
        side_of = {"make": "legacy", "sock": "socket", "sem": "sysvsem"}
        for _, start, end in intervals:
            middle = (start + end) // 2
            counts = counter_at(in_use, (middle - zero_ns) / 1000)
            self.assertIsNotNone(counts)
            running = collections.Counter(
                side_of[n.rstrip("0123456789.")] for n, s, e in intervals if s <= middle < e)
            # Socket slots come back through jobbridge at once: one slot
            # more at most (granted, its job not started yet). A semaphore
            # unit given back is seen at the next poll: each of its 2
            # clients may have given one back since.
            for side, slack in (("socket", 1), ("sysvsem", 2)):
                self.assertGreaterEqual(counts[side], running[side], (middle, counts, running))
                self.assertLessEqual(counts[side], running[side] + slack,
                                     (middle, counts, running))
            # make's jobs run on the command's implicit slot and legacy tokens.
            self.assertGreaterEqual(counts["legacy"] + counts["command"], running["legacy"])
            self.assertLessEqual(sum(counts.values()), 4)
        self.assertEqual(max(sum(c["args"].values()) for c in in_use), 4)
        self.assertLessEqual(max_overlap(intervals), 4)
        self.assert_nothing_lost(types.SimpleNamespace(stderr=err), 3)

    def test_a_joined_jobbridge_traces_its_tree_without_a_budget_of_its_own(self):
        trace = os.path.join(self.sandbox.root, "joined.trace.json")
        script = " ".join(f"{sys.executable} {CLIENT} sock{i} 0.2 2 &" for i in range(3)) + " wait"
        result = self.sandbox.run([self.bridge, "-v", "-j3", "--", self.bridge, "--trace", trace,
                                   "--", "sh", "-c", script])
        self.assertEqual(result.returncode, 0, result.stderr)
        events = self.load(trace)
        self.assertEqual([e for e in events if e["name"] == "budget"], [],
                         "a joined jobbridge has no budget of its own to trace")
        in_use = [e["args"]["socket"] for e in events if e["ph"] == "C" and e["name"] == "in use"]
        self.assertEqual(max(in_use), 2, "the leases of its socket clients, counted")
        self.assertEqual(sum(1 for e in events if e["ph"] == "X" and e["cat"] == "socket"), 6)
        self.assert_nothing_lost(result, 2)

    def test_the_trace_is_valid_after_sigint(self):
        trace = os.path.join(self.sandbox.root, "int.trace.json")
        script = " ".join(f"{sys.executable} {CLIENT} sock{i} 5 1 &" for i in range(4)) + " wait"
        bridge = self.sandbox.start([self.bridge, "-v", "-j3", "--trace", trace, "--", "sh",
                                     "-c", script])
        wait_for(lambda: len(read_stamps(self.sandbox.log, "grant")) == 2, 60,
                 "two socket clients to hold slots")
        bridge.send_signal(signal.SIGINT)
        out, err = bridge.communicate(timeout=60)
        self.assertNotEqual(bridge.returncode, 0)
        events = self.load(trace)
        grants = [e for e in events if e["ph"] == "X" and e.get("cat") == "socket"]
        self.assertEqual(len(grants), 2, "one slice per grant")
        self.assert_no_leftovers()

    def test_an_unwritable_trace_is_a_clear_error_before_anything_runs(self):
        result = self.sandbox.run([self.bridge, "--trace", "/nonexistent/dir/t.json", "--",
                                   "sh", "-c", 'echo ran >> "$JOBLOG"'])
        self.assertEqual(result.returncode, 2)
        self.assertIn("cannot write the trace to /nonexistent/dir/t.json: No such file or "
                      "directory", result.stderr)
        self.assertEqual(self.sandbox.read_log(), "")
        self.assert_no_leftovers()


if __name__ == "__main__":
    unittest.main()
