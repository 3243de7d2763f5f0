"""The socket protocol root: one budget with the legacy side, crash-safe slots."""

import os
import signal
import socket
import subprocess
import sys
import time
import unittest

from harness import (BridgeTestCase, idle_gaps, max_overlap, read_stamps, read_wants, wait_for,
                     HERE)

CLIENT = os.path.join(HERE, "socket_client.py")
# A make job's start stamp comes after make reaped the last one, and a fork
# and two execs (sh, date): on a loaded 2-core machine that alone took up to
# ~100 ms. A gap shorter than this is the measurement; a policy that idles a
# slot (waits for a probe or a timer that never comes) is longer.
GAP_TOLERANCE_NS = 250_000_000


def py(*args):
    return " ".join([sys.executable, *args])


class MixedTreeTest(BridgeTestCase):
    def test_make_and_socket_clients_share_a_budget_of_4(self):
        self.sandbox.copy_fixture("make-recursive")
        script = ("make -s -C make-recursive JOB_SECONDS=0.5 & "
                  + " ".join(f"{py(CLIENT, f'sock{i}', '0.4', '4')} &" for i in range(6))
                  + " wait")
        result = self.sandbox.run([self.bridge, "-v", "-j4", "--", "sh", "-c", script])
        self.assertEqual(result.returncode, 0, result.stderr)
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 12 + 24)
        self.assertLessEqual(max_overlap(intervals), 4)
        self.assertEqual(max_overlap(intervals), 4)
        # While make runs, it uses the command's implicit slot (docs/PROTOCOL.md),
        # so no socket job may wait while fewer than 4 jobs run.
        make_end = max(end for name, _, end in intervals if not name.startswith("sock"))
        gaps = idle_gaps(intervals, read_wants(self.sandbox.log), 4, make_end,
                         read_stamps(self.sandbox.log, "grant"))
        long_gaps = [(b - a) / 1e6 for a, b in gaps if b - a > GAP_TOLERANCE_NS]
        self.assertEqual(long_gaps, [], "ms in which a socket job waited below the budget")
        self.assert_nothing_lost(result, 3)


    def test_both_sides_get_a_share_under_saturating_demand(self):
        # Budget 5: the command's implicit slot (make's) plus 4 shared. make
        # alone would take all 4; the broker keeps half for the socket side.
        self.sandbox.copy_fixture("make-many")
        script = ("make -s -C make-many & "
                  + " ".join(f"{py(CLIENT, f'sock{i}', '0.2', '10')} &" for i in range(8))
                  + " wait")
        result = self.sandbox.run([self.bridge, "-v", "-j5", "--", "sh", "-c", script])
        self.assertEqual(result.returncode, 0, result.stderr)
        intervals = self.sandbox.intervals()
        self.assertLessEqual(max_overlap(intervals), 5)
        # The window in which both sides had work: until the first side ran out.
        legacy = [(s, e) for n, s, e in intervals if n.startswith("make")]
        sockets = [(s, e) for n, s, e in intervals if n.startswith("sock")]
        window_start = max(min(s for s, _ in legacy), min(s for s, _ in sockets))
        window_end = min(max(e for _, e in legacy), max(e for _, e in sockets))

        def slot_time(spans):
            return sum(max(0, min(e, window_end) - max(s, window_start)) for s, e in spans)

        legacy_time, socket_time = slot_time(legacy), slot_time(sockets)
        socket_share = socket_time / (legacy_time + socket_time)
        print(f"\nslot-time shares over {(window_end - window_start) / 1e9:.2f} s: "
              f"legacy {1 - socket_share:.2f} (implicit slot + tokens), socket {socket_share:.2f}",
              file=sys.stderr)
        # Fair is 3/5 legacy (its implicit slot and half of the shared 4) and
        # 2/5 socket; neither side may starve.
        self.assertGreater(socket_share, 0.25)
        self.assertGreater(1 - socket_share, 0.25)
        self.assert_nothing_lost(result, 4)


OVER_RELEASE_PROBE = """
import fcntl, os, struct, termios, time
auth = os.environ["MAKEFLAGS"].split("--jobserver-auth=")[1].split()[0]
r, w = (int(x) for x in auth.split(","))
os.write(w, b"xxxxx")
def in_returns():  # FIONREAD on the write end: what the bridge has not read yet
    return struct.unpack("i", fcntl.ioctl(w, termios.FIONREAD, b"\\0" * 4))[0]
def in_pool():  # what the bridge has put back into the token pipe
    return struct.unpack("i", fcntl.ioctl(r, termios.FIONREAD, b"\\0" * 4))[0]
deadline = time.monotonic() + 30
# The bridge reads the returns pipe and puts back what it keeps in one
# turn: wait for both, or a read between them sees too few.
while (in_returns() or in_pool() < 3) and time.monotonic() < deadline:
    time.sleep(0.001)
fd = os.open(f"/proc/self/fd/{r}", os.O_RDONLY | os.O_NONBLOCK)
got = 0
try:
    while data := os.read(fd, 10):
        got += len(data)
except BlockingIOError:
    pass
open(os.environ["JOBLOG"], "w").write(str(got))
"""


# Connects, and must not be granted within the window: the command (this
# script) holds the budget's only slot.
NO_SLOT_PROBE = """
import os, select, socket, sys
client = socket.socket(socket.AF_UNIX)
client.connect(os.environ["JOBSERVERV2"])
readable, _, _ = select.select([client], [], [], 1.0)
sys.exit(3 if readable else 0)
"""


class BudgetOfOneTest(BridgeTestCase):
    def test_a_socket_client_under_j1_is_told_why_it_waits(self):
        # The command holds the only slot: the client waits until it ends,
        # which used to look like a hang without a word.
        probe = self.sandbox.write_file("probe.py", NO_SLOT_PROBE)
        result = self.sandbox.run([self.bridge, "-v", "-j1", "--", sys.executable, probe])
        self.assertEqual(result.returncode, 0, "granted under -j1: " + result.stderr)
        self.assertRegex(result.stderr, r"a socket client \(pid \d+\) waits for a slot, but "
                                        r"with a budget of 1 the command holds the only one")
        self.assertIn("(-j2)", result.stderr)
        self.assertEqual(result.stderr.count("waits for a slot"), 1)
        self.assert_nothing_lost(result, 0)


ROGUE_PROBE = """
import fcntl, os, struct, sys, termios, time
auth = os.environ["MAKEFLAGS"].split("--jobserver-auth=")[1].split()[0]
w = int(auth.split(",")[1])
os.write(w, b"x" * 100)
if sys.argv[1] == "pipe":  # wait until jobbridge has read its returns pipe
    def queued():
        return struct.unpack("i", fcntl.ioctl(w, termios.FIONREAD, b"\\0" * 4))[0]
    deadline = time.monotonic() + 30
    while queued() and time.monotonic() < deadline:
        time.sleep(0.001)
"""


class RogueWriterTest(BridgeTestCase):
    def check_report(self, style):
        # A client writes 100 tokens it never took. Whatever was contained
        # during the run, the exit report must not say "all came back".
        probe = self.sandbox.write_file("probe.py", ROGUE_PROBE)
        result = self.sandbox.run([self.bridge, "-v", "-j3", f"--legacy-style={style}", "--",
                                   sys.executable, probe, style])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("all 2 jobserver tokens came back", result.stderr)
        self.assertRegex(result.stderr, r"(wrote back 99 token\(s\) they never took during the "
                                        r"run, the first \d+\.\d s after the start|held 99 "
                                        r"token\(s\) more than)")
        self.assert_no_leftovers()

    def test_the_exit_report_counts_surplus_dropped_during_the_run(self):
        self.check_report("pipe")

    def test_the_exit_report_counts_surplus_left_in_a_fifo(self):
        self.check_report("fifo")


FIFO_ROGUE_PROBE = """
import fcntl, os, struct, sys, termios, time
auth = os.environ["MAKEFLAGS"].split("--jobserver-auth=")[1].split()[0]
r, w = (int(fd) for fd in auth.split(","))
os.write(w, b"x" * 100)
def in_fifo():
    return struct.unpack("i", fcntl.ioctl(r, termios.FIONREAD, b"\\0" * 4))[0]
deadline = time.monotonic() + 30  # jobbridge drops the surplus as it lands
while in_fifo() > 3 and time.monotonic() < deadline:
    time.sleep(0.001)
os.execvp("make", ["make", "-s", "JOB_SECONDS=0.3"])
"""


class FifoSurplusTest(BridgeTestCase):
    def test_surplus_written_into_the_fifo_is_dropped_as_it_lands(self):
        # In fifo style clients write tokens back into the pool itself. The
        # broker looked only at socket events, so 100 tokens written there
        # stayed for make to read (13 jobs at once under -j3).
        project = self.sandbox.copy_fixture("make-many")
        probe = self.sandbox.write_file("probe.py", FIFO_ROGUE_PROBE)
        result = self.sandbox.run([self.bridge, "-v", "-j3", "--legacy-style=fifo", "--",
                                   sys.executable, probe], cwd=project)
        self.assertEqual(result.returncode, 0, result.stderr)
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 40)
        # One token may be the command's lent slot (the budget's documented
        # ambiguity): at most one job beyond the budget, not 13.
        self.assertLessEqual(max_overlap(intervals), 4)
        self.assertIn("wrote into the FIFO 99 token(s) it never took", result.stderr)
        self.assertNotIn("all 2 jobserver tokens came back", result.stderr)
        self.assert_no_leftovers()


class OverReleaseTest(BridgeTestCase):
    def test_tokens_written_back_without_taking_are_dropped(self):
        # A legacy client writes 5 bytes it never read into a -j3 pool. One
        # may be the command's implicit slot, lent (cc-rs does that); the
        # other 4 are dropped, so the pool hands out at most 3 tokens.
        probe = self.sandbox.write_file("probe.py", OVER_RELEASE_PROBE)
        result = self.sandbox.run([self.bridge, "-j3", "--", sys.executable, probe])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("a legacy client wrote back 4 token(s) it never took; dropped",
                      result.stderr)
        self.assertEqual(self.sandbox.read_log().strip(), "3")
        self.assert_no_leftovers()


LEND_AND_EXIT_PROBE = """
import os
auth = os.environ["MAKEFLAGS"].split("--jobserver-auth=")[1].split()[0]
os.write(int(auth.split(",")[1]), b"|")  # lends the implicit slot, never takes it back
"""


class LentSlotTest(BridgeTestCase):
    def check_one_unpaired_lend_is_not_surplus(self, style):
        # A lender that ended before taking its slot back (killed, say) left
        # the command's own slot in the pool: it came back, it is no surplus.
        probe = self.sandbox.write_file("probe.py", LEND_AND_EXIT_PROBE)
        result = self.sandbox.run([self.bridge, "-v", "-j2", f"--legacy-style={style}", "--",
                                   sys.executable, probe])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("never took", result.stderr)
        self.assert_nothing_lost(result, 1)

    def test_one_unpaired_lend_is_not_surplus_in_pipe_style(self):
        self.check_one_unpaired_lend_is_not_surplus("pipe")

    def test_one_unpaired_lend_is_not_surplus_in_fifo_style(self):
        self.check_one_unpaired_lend_is_not_surplus("fifo")


class CrashSafetyTest(BridgeTestCase):
    def test_killed_holder_hands_its_slot_to_the_next_waiter_at_once(self):
        driver = os.path.join(HERE, "socket_driver.py")
        result = self.sandbox.run([self.bridge, "-v", "-j2", "--", sys.executable, driver,
                                   "kill-handoff"])
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        latency_ms = float(result.stdout.split("handoff_ms=")[1].split()[0])
        print(f"\nkill -9 to next grant: {latency_ms:.2f} ms", file=sys.stderr)
        # "At once": on the kernel's close, not on a timer or at the end.
        # Usually 1-5 ms; the bound only catches a hand-off that waits for
        # something else (an ASan build under load once took 66 ms).
        # scripts/bench.sh measures the hand-off itself.
        self.assertLess(latency_ms, 1000)
        self.assert_nothing_lost(result, 1)

    def test_50_random_kills_lose_nothing(self):
        driver = os.path.join(HERE, "socket_driver.py")
        result = self.sandbox.run([self.bridge, "-v", "-j4", "--", sys.executable, driver,
                                   "random-kills", "50"], timeout=240)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("kills=50", result.stdout)
        self.assertIn("final_concurrent=3", result.stdout)
        self.assertLessEqual(max_overlap(self.sandbox.intervals()), 3)
        self.assert_nothing_lost(result, 3)


class BadClientTest(BridgeTestCase):
    def run_driver(self, mode, jobs=2):
        driver = os.path.join(HERE, "socket_driver.py")
        result = self.sandbox.run([self.bridge, "-v", f"-j{jobs}", "--", sys.executable, driver,
                                   mode])
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        return result

    def test_garbage_byte_closes_only_that_connection(self):
        result = self.run_driver("garbage")
        self.assertIn("protocol error: it sent 0x78, which is neither '+' nor '-'", result.stderr)
        self.assertIn("waiter_granted=1", result.stdout)
        self.assert_nothing_lost(result, 1)

    def test_release_without_a_slot_closes_that_connection(self):
        result = self.run_driver("bogus-release")
        self.assertIn("sent '-' without holding a slot", result.stderr)
        self.assertIn("holder_kept=1", result.stdout)
        self.assert_nothing_lost(result, 1)

    def test_several_slots_on_one_connection_in_arrival_order(self):
        result = self.run_driver("multi", jobs=3)
        self.assertIn("multi=ok", result.stdout)
        self.assert_nothing_lost(result, 2)

    def test_other_uid_is_refused(self):
        result = self.run_driver("other-uid")
        self.assertIn("refused a connection from uid 65534", result.stderr)
        self.assertIn("other_uid=refused own_uid=granted", result.stdout)
        self.assert_nothing_lost(result, 1)

    def test_running_out_of_fds_pauses_accepting_without_spinning(self):
        # A hard limit of 32 fds: jobbridge cannot hold all 60 connections.
        driver = os.path.join(HERE, "socket_driver.py")
        result = self.sandbox.run(["prlimit", "--nofile=32:32", self.bridge, "-v", "-j3", "--",
                                   sys.executable, driver, "emfile"], timeout=180)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(result.stderr.count("out of file descriptors"), 1, result.stderr)
        self.assertIn("served=60", result.stdout)
        share = float(result.stdout.split("bridge_cpu_share=")[1].split()[0])
        self.assertLess(share, 0.5, "jobbridge spun while it could not accept")
        self.assert_nothing_lost(result, 2)

    def test_command_gets_the_fd_limit_jobbridge_was_given(self):
        result = self.sandbox.run(["prlimit", "--nofile=100:4096", self.bridge, "--", "sh", "-c",
                                   "ulimit -Sn; ulimit -Hn"])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.split(), ["100", "4096"])
        self.assert_no_leftovers()

    def test_a_full_receive_buffer_delays_grants_but_loses_none(self):
        result = self.run_driver("many-grants", jobs=1001)
        self.assertIn("grants=1000", result.stdout)
        self.assertNotIn("protocol error", result.stderr)
        self.assert_nothing_lost(result, 1000)

    def test_waiting_client_sees_eof_when_the_root_goes_away(self):
        result = self.run_driver("orphan")
        wait_for(lambda: "server-gone" in self.sandbox.read_log(), 30,
                 "the orphaned client to see the jobserver go away")
        self.assert_nothing_lost(result, 1)


if __name__ == "__main__":
    unittest.main()
