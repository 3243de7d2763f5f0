"""The control socket (docs/CONTROL.md) under the real binary: `jobbridge
status` during a mixed build of make, ninja, socket and semaphore clients;
what it reports must add up and name the real processes; resize, stop, and
bad clients beside a build. Every test ends by proving
that nothing was lost."""

import json
import os
import select
import socket
import subprocess
import sys
import time
import types
import unittest

from harness import (BridgeTestCase, HERE, max_overlap, ninja_binary, read_stamps, read_text,
                     wait_for)
from sysvsem_support import build_sysvsem_client

CLIENT = os.path.join(HERE, "socket_client.py")
SIDES = ("command", "legacy", "socket", "sysvsem", "upstream")


class StatusTest(BridgeTestCase):
    def status(self, *args):
        result = self.sandbox.run([self.bridge, "status", *args], timeout=30)
        return result

    def test_status_during_a_mixed_build_adds_up_and_names_the_socket_clients(self):
        # make (with a recipe running ninja), socket clients and semaphore
        # clients, all at once.
        self.sandbox.write_file("Makefile", "all: nj " + " ".join(f"m{i}" for i in range(8)) + "\n"
                                + "".join(f'm{i}:\n\t@"$(JOB)" make{i} 0.3\n' for i in range(8))
                                + "nj:\n\t+@ninja -C nj >/dev/null\n.PHONY: all nj\n")
        os.mkdir(os.path.join(self.sandbox.root, "nj"))
        self.sandbox.write_file("nj/build.ninja", 'rule job\n  command = "$$JOB" $name 0.3\n'
                                + "".join(f"build n{i}: job\n  name = ninja{i}\n"
                                          for i in range(4)))
        semaphore_client = build_sysvsem_client(self.sandbox.root)
        env = dict(self.sandbox.env)
        env["PATH"] = os.path.dirname(ninja_binary()) + os.pathsep + env["PATH"]
        script = ("make -s & "
                  + " ".join(f"{sys.executable} {CLIENT} sock{i} 0.3 4 &" for i in range(3))
                  + " ".join(f" {semaphore_client} sem{i} 0.3 3 &" for i in range(2))
                  + " wait; touch done")
        bridge = self.sandbox.start([self.bridge, "-v", "-j4", "--", "sh", "-c", script], env=env)
        done = os.path.join(self.sandbox.root, "done")
        wait_for(lambda: self.sandbox.runtime_leftovers() and os.path.exists(os.path.join(
            self.sandbox.tmp, self.sandbox.runtime_leftovers()[0], "control.sock")), 30,
            "the control socket")
        samples = []
        while not os.path.exists(done):
            result = self.status("--json", "--pid", str(bridge.pid))
            if result.returncode != 0:
                # Only once the command has ended may jobbridge stop answering.
                self.assertTrue(os.path.exists(done), result.stderr)
                break
            samples.append(json.loads(result.stdout))
        out, err = bridge.communicate(timeout=60)
        self.assertEqual(bridge.returncode, 0, err)
        self.assertGreater(len(samples), 5, "too few samples to say anything")
        pids = read_stamps(self.sandbox.log, "pid")  # socket clients: name -> pid
        seen = set()
        for sample in samples:
            self.assertEqual(sample["version"], 1)
            status = sample["status"]
            self.assertEqual(set(status["in_use"]), set(SIDES))
            self.assertEqual(status["budget"], 4)
            self.assertIsNone(status["joined"])
            self.assertIs(status["daemon"], False)
            total = (sum(status["in_use"].values()) + sum(status["idle"].values())
                     + status["free"])
            self.assertEqual(total, 4 + status["withheld"], status)
            for part in ("in_use", "idle", "waiting"):
                self.assertTrue(all(n >= 0 for n in status[part].values()), status)
            self.assertEqual(status["withheld"], 0)
            self.assertEqual(status["in_use"]["command"], 1)
            socket_in_use = 0
            for holder in sample["holders"]["holders"]:
                self.assertGreater(holder["slots"], 0, holder)
                if holder["side"] != "socket":
                    continue
                socket_in_use += holder["slots"]
                self.assertTrue(holder["attributed"])
                name = next(n for n, p in pids.items() if p == holder["pid"])
                self.assertIn(f"socket_client.py {name} 0.3 4", holder["command"])
                seen.add(name)
            self.assertEqual(socket_in_use, status["in_use"]["socket"], sample)
        self.assertEqual(seen, {"sock0", "sock1", "sock2"}, "socket clients never listed")
        # Every side was seen holding slots in some sample.
        for side in ("legacy", "socket", "sysvsem"):
            self.assertTrue(any(x["status"]["in_use"][side] > 0 for x in samples), side)
        self.assertNotIn("sysvsem_client:", err)
        self.assertLessEqual(max_overlap(self.sandbox.intervals()), 4)
        print(f"\n{len(samples)} status samples during the build, each adding up to 4",
              file=sys.stderr)
        # -v's exit summary.
        self.assertRegex(err, r"jobbridge: utilisation [\d.]+ % while work waited \([\d.]+ s\), "
                         r"[\d.]+ % over the run; peak [1-9]\d* waiting; 0 reclaimed, "
                         r"0 surplus dropped\n")
        self.assert_nothing_lost(types.SimpleNamespace(stderr=err), 3)

    def test_resize_shrinks_within_a_job_and_grows_back(self):
        jobs = 30
        self.sandbox.write_file("Makefile", "all: " + " ".join(f"m{i}" for i in range(jobs))
                                + "\n" + "".join(f'm{i}:\n\t@"$(JOB)" m{i} 0.5\n'
                                                 for i in range(jobs)))
        bridge = self.sandbox.start([self.bridge, "-v", "-j4", "--", "make", "-s"])

        wait_for(lambda: self.sandbox.ended_jobs() >= 6, 60, "6 jobs to end")
        (_, shrunk_ns), said = self.resize(bridge.pid, 2)
        self.assertRegex(said, r"^budget now 2( \(2 slot\(s\) still out beyond it: withheld as "
                         r"they come back\))?\n$")
        wait_for(lambda: self.sandbox.ended_jobs() >= 16, 60, "10 more jobs to end")
        (grown_ns, _), said = self.resize(bridge.pid, 4)
        self.assertEqual(said, "budget now 4\n")
        out, err = bridge.communicate(timeout=60)
        self.assertEqual(bridge.returncode, 0, err)
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), jobs)

        def peak(start_ns, end_ns):
            clipped = [(n, max(s, start_ns), min(e, end_ns)) for n, s, e in intervals
                       if s < end_ns and e > start_ns]
            return max_overlap(clipped) if clipped else 0

        job_ns = 500_000_000
        before, after_shrink = peak(0, shrunk_ns), peak(shrunk_ns + job_ns + 100_000_000, grown_ns)
        after_grow = peak(grown_ns, 2**63)
        print(f"\nresize under make -j4 of 0.5 s jobs: peak {before} before, {after_shrink} from "
              f"one job after resize 2, {after_grow} after resize 4", file=sys.stderr)
        self.assertEqual(before, 4)
        self.assertLessEqual(after_shrink, 2)
        self.assertEqual(after_grow, 4)
        self.assert_nothing_lost(types.SimpleNamespace(stderr=err), 3)

    def build(self, abuse):
        """make -j4 of 24 jobs of 0.2 s; with `abuse`, two clients of the
        control socket meanwhile: one sends 10,000 malformed lines (reading
        the error replies), one floods status requests without reading.
        Returns (seconds from the first job's start to the last one's end,
        peak overlap, malformed replies, flood closed). The command waits
        after make for a gate the test opens when the clients are done, so
        jobbridge serves them to the end (under ASan they outlast make)."""
        gate = os.path.join(self.sandbox.root, "gate")
        for path in (self.sandbox.log, gate):
            if os.path.exists(path):
                os.unlink(path)
        if not abuse:
            open(gate, "w").close()
        bridge = self.sandbox.start([self.bridge, "-v", "-j4", "--", "sh", "-c",
                                     "make -s; until [ -e gate ]; do sleep 0.02; done"])
        errors, flood_closed = 0, False
        if abuse:
            wait_for(lambda: any(os.path.exists(os.path.join(self.sandbox.tmp, d, "control.sock"))
                                 for d in self.sandbox.runtime_leftovers()), 30,
                     "the control socket")
            path = next(os.path.join(self.sandbox.tmp, d, "control.sock")
                        for d in self.sandbox.runtime_leftovers())
            flood = socket.socket(socket.AF_UNIX)
            flood.connect(path)
            flood.setblocking(False)
            bad = socket.socket(socket.AF_UNIX)
            bad.connect(path)
            garbage = [b"hello", b"{", b"[1,2]", b'{"request": 5}', b'{"request":"nope"}',
                       b'{"request":"resize","jobs":"x"}', b"\xff\xfe", b"{}"]
            lines = b"".join(garbage[i % len(garbage)] + b"\n" for i in range(10000))
            sent, pending = 0, b""
            flood_burst = b'{"request":"status"}\n' * 200
            while errors < 10000:
                # It reads its replies: at most 500 requests unanswered (the
                # server closes a client whose unread replies pass 1 MiB).
                if sent < len(lines) and lines.count(b"\n", 0, sent) - errors < 500:
                    try:
                        sent += bad.send(lines[sent:sent + 4096], socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        pass
                if not flood_closed:
                    try:
                        flood.send(flood_burst, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        pass
                    except OSError:
                        flood_closed = True
                ready, _, _ = select.select([bad], [], [], 0.01)
                if ready:
                    chunk = bad.recv(1 << 20)
                    self.assertTrue(chunk, "the server closed the malformed client")
                    pending += chunk
                    *replies, pending = pending.split(b"\n")
                    for reply in replies:
                        self.assertFalse(json.loads(reply)["ok"], reply)
                        errors += 1
            # The flooder, never reading, is closed once 1 MiB of replies waits.
            deadline = time.monotonic() + 30
            while not flood_closed and time.monotonic() < deadline:
                try:
                    flood.send(flood_burst, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    select.select([], [flood], [], 0.05)
                except OSError:
                    flood_closed = True
            bad.close()
            flood.close()
            open(gate, "w").close()
        out, err = bridge.communicate(timeout=120)
        self.assertEqual(bridge.returncode, 0, err)
        self.assert_nothing_lost(types.SimpleNamespace(stderr=err), 3)
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 24)
        span = (max(end for _, _, end in intervals) - min(start for _, start, _ in intervals)) / 1e9
        return span, max_overlap(intervals), errors, flood_closed

    def test_malformed_messages_and_a_flood_leave_the_build_alone(self):
        self.sandbox.write_file("Makefile", "all: " + " ".join(f"m{i}" for i in range(24))
                                + "\n" + "".join(f'm{i}:\n\t@"$(JOB)" m{i} 0.2\n'
                                                 for i in range(24)))
        plain, plain_peak, _, _ = self.build(False)
        abused, abused_peak, errors, flood_closed = self.build(True)
        print(f"\nmake -j4 of 24 x 0.2 s jobs, first start to last end: {plain:.2f} s alone, "
              f"{abused:.2f} s with 10,000 "
              f"malformed control messages and a flood (ratio {abused / plain:.2f}); "
              f"peak {plain_peak} and {abused_peak}", file=sys.stderr)
        self.assertEqual(errors, 10000)
        self.assertTrue(flood_closed, "the flooding client was never closed")
        self.assertEqual(plain_peak, 4)
        self.assertEqual(abused_peak, 4)
        # Loose: a shared 2-core machine; a stalled token service would
        # take seconds (the figure is printed).
        self.assertLess(abused, plain * 1.5 + 0.5)

    def test_a_joined_jobbridge_refuses_resize_and_says_whose_budget_it_is(self):
        script = f'"{self.bridge}" resize 2; echo "resize_status=$?"'
        result = self.sandbox.run([self.bridge, "-v", "-j3", "--", self.bridge, "--", "sh", "-c",
                                   script])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("resize_status=1", result.stdout)
        self.assertIn("resize refused: this jobbridge joined the socket root ", result.stderr)
        self.assertIn("resize the outermost jobbridge, or restart with --root", result.stderr)
        self.assert_nothing_lost(result, 2)

    def test_watch_redraws_until_jobbridge_ends_and_stop_ends_the_tree(self):
        bridge = self.sandbox.start([self.bridge, "-v", "-j2", "--", "sh", "-c",
                                     'echo started >> "$JOBLOG"; sleep 60; echo survived >> "$JOBLOG"'])
        wait_for(lambda: "started" in self.sandbox.read_log(), 30, "the command to start")
        watch = subprocess.Popen([self.bridge, "status", "--watch", "--pid", str(bridge.pid)],
                                 env=self.sandbox.env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        frames = b""
        while frames.count(b"\x1b[H") < 2:
            chunk = watch.stdout.read1(65536)
            self.assertTrue(chunk, "status --watch ended early")
            frames += chunk
        self.assertIn(b"budget 2 (root): 1 in use, 1 idle, 0 free, 0 waiting", frames)
        # stop over the control socket: the tree ends as on a SIGTERM.
        path = next(os.path.join(self.sandbox.tmp, d, "control.sock")
                    for d in self.sandbox.runtime_leftovers())
        with socket.socket(socket.AF_UNIX) as control:
            control.connect(path)
            control.sendall(b'{"request":"stop","id":"bye"}\n')
            reply = json.loads(control.makefile().readline())
        self.assertEqual(reply, {"stopping": True, "summary_follows": False, "ok": True, "version": 1,
                                 "id": "bye"})
        out, err = bridge.communicate(timeout=30)
        self.assertEqual(bridge.returncode, 128 + 15, err)  # the command died of SIGTERM
        self.assertNotIn("survived", self.sandbox.read_log())
        rest, said = watch.communicate(timeout=30)
        self.assertEqual(watch.returncode, 0, said)  # watched to its end
        self.assert_no_leftovers()

    def test_the_table_and_the_errors_a_user_sees(self):
        bridge = self.sandbox.start([self.bridge, "-j3", "--", "sh", "-c",
                                     'echo "$JOBBRIDGE_CONTROL" > control.txt; exec sleep 60'])
        path = os.path.join(self.sandbox.root, "control.txt")
        wait_for(lambda: os.path.exists(path) and read_text(path).endswith("\n"), 30,
                 "the command to say its JOBBRIDGE_CONTROL")
        with open(path) as f:
            control = f.read().strip()
        table = self.status("--socket", control)
        self.assertEqual(table.returncode, 0, table.stderr)
        self.assertIn("budget 3 (root): 1 in use, 2 idle, 0 free, 0 waiting", table.stdout)
        # COMMAND holds the implicit slot; the shell exec'd sleep.
        self.assertRegex(table.stdout, r"\n  \d+ +command +1 +[\d.]+s  sleep 60\n")
        env = dict(self.sandbox.env)
        env.pop("JOBBRIDGE_CONTROL", None)
        cases = [
            ([], 1, "JOBBRIDGE_CONTROL is not set: run jobbridge status inside a jobbridge's tree"),
            (["--pid", "1"], 1, "no jobbridge with pid 1 has a runtime folder here"),
            (["--pid", "x"], 2, "--pid x is not a process id"),
            (["--socket", "/nonexistent/c.sock"], 1,
             "cannot reach the jobbridge at /nonexistent/c.sock"),
            (["--pid", "1", "--socket", "s"], 2, "give --pid or --socket, not both"),
            (["--frobnicate"], 2, "unknown argument --frobnicate"),
        ]
        for args, status, message in cases:
            with self.subTest(args=args):
                result = self.sandbox.run([self.bridge, "status", *args], env=env, timeout=30)
                self.assertEqual(result.returncode, status, result.stderr)
                self.assertIn(message, result.stderr)
                self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        bridge.terminate()
        bridge.communicate(timeout=30)
        self.assert_no_leftovers()


if __name__ == "__main__":
    unittest.main()
