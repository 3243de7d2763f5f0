"""Per-invocation pools (in progress, JOBBRIDGE_INVOCATION_POOLS=1): a make
started through the shim gets a pool of its own, and what it held when it
was killed comes back when its last recipe has ended."""

import os
import signal
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


if __name__ == "__main__":
    unittest.main()
