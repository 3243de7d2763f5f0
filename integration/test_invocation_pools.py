"""Per-invocation pools (in progress, JOBBRIDGE_INVOCATION_POOLS=1): a make
started through the shim gets a pool of its own, and what it held when it
was killed comes back when its last recipe has ended."""

import os
import signal
import sys
import unittest

from harness import BridgeTestCase, max_overlap, wait_for

SWITCH = {}


class KilledSubMakeTest(BridgeTestCase):
    def test_a_killed_sub_make_gives_back_its_tokens_and_orphans_keep_their_slots(self):
        project = self.sandbox.copy_fixture("invocation-kill")
        pid_file = os.path.join(project, "make-a.pid")
        bridge = self.sandbox.start([self.bridge, "-v", "-j4", "--", "make", "-s"], cwd=project,
                                    env=dict(self.sandbox.env, **SWITCH))
        # Two of a's jobs running: one on its implicit slot, one on a token
        # it took from its pool, which it holds when it is killed.
        wait_for(lambda: sum(name.startswith("a-") for name, _, end in self.sandbox.intervals()
                             if end is None) >= 2 and os.path.exists(pid_file)
                 and open(pid_file).read().strip(), 30, "sub-make a to run two jobs")
        with open(pid_file) as f:
            os.kill(int(f.read()), signal.SIGKILL)
        _, stderr = bridge.communicate(timeout=60)
        self.assertEqual(bridge.returncode, 2, stderr)  # make: a sub-make was killed
        self.assertRegex(stderr, r"jobbridge: warning: pid \d+ \(make -s -f sub.mk PART=a\) "
                                 r"ended holding \d+ token\(s\) \(killed\?\); given back")
        intervals = self.sandbox.intervals()
        self.assertTrue(all(end is not None for _, _, end in intervals), intervals)
        # The killed make's orphaned recipes keep their slots until they end:
        # its parent frees the slot it ran on at once (plain make -j4 peaks at
        # 5 here), so the pool owes it until its life pipe ends.
        self.assertLessEqual(max_overlap(intervals), 4)
        self.assertIn("jobbridge: all 3 jobserver tokens came back (budget 4)", stderr)
        self.assert_no_leftovers()


class RogueRecipeTest(BridgeTestCase):
    def test_tokens_a_killed_plus_recipe_held_come_back_when_its_sub_make_ends(self):
        # make itself fails the recipe (it was killed) and stops; what matters
        # is the 3 tokens: they come back when the sub-make's invocation ends,
        # not only when the whole build does.
        project = self.sandbox.copy_fixture("invocation-rogue")
        result = self.sandbox.run([self.bridge, "-v", "-j4", "--", "make", "-s", "-k"],
                                  cwd=project, env=dict(self.sandbox.env, **SWITCH), timeout=60)
        with open(os.path.join(project, "grabbed.txt")) as f:
            self.assertEqual(f.read().strip(), "3")
        self.assertRegex(result.stderr, r"jobbridge: warning: pid \d+ \(make -s -f sub.mk\) "
                                        r"ended holding 3 token\(s\) \(killed\?\); given back")
        self.assertLessEqual(max_overlap(self.sandbox.intervals()), 4)
        self.assertIn("jobbridge: all 3 jobserver tokens came back (budget 4)", result.stderr)
        self.assert_no_leftovers()


# The command of the accept test: socket clients connect until the root has
# no fd left (it pauses accepting them), then a make asks for its pool.
FILL_THEN_MAKE = """
import os, socket, subprocess, sys
root = os.getppid()
limit = int(sys.argv[1])
def used():
    return sum(1 for name in os.listdir(f"/proc/{root}/fd") if int(name) < limit)
conns = []
for _ in range(limit - 10):  # more than the root has room for; the rest wait
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.environ["JOBSERVERV2"])
    conns.append(s)
while used() < limit:
    os.sched_yield()
status = subprocess.call(["make", "-s", "-C", "sub", "PART=a", "JOB_SECONDS=0.1"],
                         close_fds=False)  # the jobserver's fds go to make
for s in conns:
    s.close()
sys.exit(status)
"""


class OutOfFdsTest(BridgeTestCase):
    """A root short of fds gives the tools it cannot serve no pool of their
    own: each shares the pool it was given, says so, and the build goes on."""

    def lowest_limit_serving_pools(self):
        for limit in range(20, 100):
            result = self.sandbox.run(["prlimit", f"--nofile={limit}:{limit}", self.bridge,
                                       "-j2", "--", "true"])
            self.assertIn(result.returncode, (0, 1), result.stderr)
            if result.returncode == 0 and "file descriptors are free" not in result.stderr:
                return limit
        self.fail("pools were not served under any limit below 100")

    def run_under(self, limit, command):
        project = self.sandbox.copy_fixture("make-recursive")
        result = self.sandbox.run(["prlimit", f"--nofile={limit}:{limit}", self.bridge, "-v",
                                   "-j4", "--", *command], cwd=project, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("no reply from the pools socket", result.stderr)
        self.assertNotIn("no more pools are given out", result.stderr)
        return result

    def assert_refused(self, stderr, detail):
        self.assertEqual(stderr.count(f"jobbridge: warning: pools socket: out of file "
                                      f"descriptors ({detail}"), 1, stderr)
        self.assertRegex(stderr, r"jobbridge: warning: adapt: no pool of its own for make: the "
                                 r"root refused a pool: the root is out of file descriptors \("
                                 + detail + r".*Too many open files\); it shares the pool it "
                                 r"was given")

    def test_sub_makes_the_root_has_no_fds_for_share_their_parents_pool(self):
        # At the lowest limit that serves pools, the top make gets one and
        # the root has no room left for its three sub-makes' pipes.
        result = self.run_under(self.lowest_limit_serving_pools(),
                                ["make", "-s", "JOB_SECONDS=1"])
        self.assert_refused(result.stderr, "creating an invocation's ")
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 12)
        self.assertEqual(max_overlap(intervals), 4)
        self.assert_nothing_lost(result, 3)

    def test_a_request_the_root_cannot_accept_is_refused_at_once(self):
        # Not left to wait out the shim's 10 s in the backlog.
        limit = self.lowest_limit_serving_pools()
        result = self.run_under(limit, [sys.executable, "-c", FILL_THEN_MAKE, str(limit)])
        self.assert_refused(result.stderr, "accepting a request: ")
        self.assertEqual(len(self.sandbox.intervals()), 4)
        self.assert_nothing_lost(result, 3)


if __name__ == "__main__":
    unittest.main()
