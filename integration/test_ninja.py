"""jobbridge -j3 --legacy-style=fifo -- ninja: ninja 1.13 follows the FIFO pool."""

import os
import stat
import unittest

from harness import BridgeTestCase, max_overlap, ninja_binary


class NinjaTest(BridgeTestCase):
    def run_ninja(self, jobs, style):
        project = self.sandbox.copy_fixture("ninja-sleepers")
        return self.sandbox.run([self.bridge, "-v", f"-j{jobs}", f"--legacy-style={style}", "--",
                                 ninja_binary()], cwd=project)

    def test_ninja_keeps_budget_of_3(self):
        result = self.run_ninja(3, "fifo")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        output = result.stdout + result.stderr
        self.assertNotIn("Ignoring jobserver", output)
        self.assertNotIn("not supported", output)
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 12)
        self.assertEqual(max_overlap(intervals), 3)
        self.assert_nothing_lost(result, 2)

    def test_ninja_keeps_budget_of_1(self):
        result = self.run_ninja(1, "fifo")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(max_overlap(self.sandbox.intervals()), 1)
        self.assert_nothing_lost(result, 0)

    def test_fifo_is_a_real_fifo_in_a_private_folder(self):
        probe = ('p="${MAKEFLAGS#*fifo:}"; p="${p%% *}"; stat -c "%F %a" "$p"; '
                 'stat -c "%a" "$(dirname "$p")"')
        result = self.sandbox.run([self.bridge, "-j2", "--legacy-style=fifo", "--", "sh", "-c",
                                   probe])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.split("\n")[:2], ["fifo 600", "700"])
        self.assert_no_leftovers()

    def test_pipe_style_is_what_ninja_cannot_use(self):
        # Documented in the README: ninja 1.13 needs fifo:. This pins the
        # message users will see, so the README stays true.
        result = self.run_ninja(2, "pipe")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("not supported", result.stdout + result.stderr)
        self.assert_nothing_lost(result, 1)


if __name__ == "__main__":
    unittest.main()
