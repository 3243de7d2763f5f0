"""jobbridge -j N -- cargo build: build scripts run within the budget."""

import os
import unittest

from harness import BridgeTestCase, max_overlap


class CargoTest(BridgeTestCase):
    def run_cargo(self, jobs, style="pipe"):
        project = self.sandbox.copy_fixture("cargo-sleepers")
        env = dict(self.sandbox.env, CARGO_TARGET_DIR=os.path.join(self.sandbox.root, "target"),
                   JOB_SECONDS="1", CARGO_TERM_COLOR="never")
        return self.sandbox.run([self.bridge, "-v", f"-j{jobs}", f"--legacy-style={style}", "--",
                                 "cargo", "build", "--offline"], cwd=project, env=env)

    def check(self, jobs, style="pipe"):
        result = self.run_cargo(jobs, style)
        self.assertEqual(result.returncode, 0, result.stderr)
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 3, result.stderr)
        self.assertLessEqual(max_overlap(intervals), jobs)
        self.assert_nothing_lost(result, jobs - 1)
        return max_overlap(intervals)

    def test_cargo_keeps_budget_of_2(self):
        self.check(2)

    def test_cargo_obeys_a_budget_below_its_default(self):
        # On this 2-core machine cargo alone would run 2 build scripts at once.
        self.assertEqual(self.check(1), 1)

    def test_cargo_uses_the_fifo_form_too(self):
        self.check(2, "fifo")


if __name__ == "__main__":
    unittest.main()
