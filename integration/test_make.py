"""jobbridge -j3 -- make: a recursive make build keeps the budget of 3."""

import os
import unittest

from harness import BridgeTestCase, max_overlap

JOB_SECONDS = 0.5


class MakeTest(BridgeTestCase):
    def run_make(self, jobs, *extra):
        project = self.sandbox.copy_fixture("make-recursive")
        return self.sandbox.run([self.bridge, "-v", f"-j{jobs}", *extra, "--", "make",
                                 f"JOB_SECONDS={JOB_SECONDS}"], cwd=project)

    def check_budget(self, jobs, result):
        self.assertEqual(result.returncode, 0, result.stderr)
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 12)
        self.assertTrue(all(end is not None for _, _, end in intervals))
        self.assertEqual(max_overlap(intervals), jobs)
        wall = (max(e for _, _, e in intervals) - min(s for _, s, _ in intervals)) / 1e9
        rounds = wall / JOB_SECONDS
        # 12 jobs 3 at a time is 4 rounds; serial would be 12.
        self.assertLess(rounds, 12 / jobs + 2, f"{wall:.2f} s for 12 x {JOB_SECONDS} s")
        self.assertNotIn("jobserver unavailable", result.stderr)
        self.assertNotIn("INTERNAL", result.stderr)
        self.assert_nothing_lost(result, jobs - 1)

    def test_recursive_make_keeps_budget_of_3(self):
        self.check_budget(3, self.run_make(3))

    def test_budget_of_2_is_kept_too(self):
        self.check_budget(2, self.run_make(2))

    def test_make_gets_pipe_fds_it_can_use(self):
        # MAKEFLAGS as make sees it: R,W form, -jN, and the same in MFLAGS.
        # CARGO_MAKEFLAGS is cleared (jobserver-rs reads MAKEFLAGS then), so
        # a make below that starts its own pool is the nearest, as under make.
        env = dict(self.sandbox.env, CARGO_MAKEFLAGS="-j9 --jobserver-auth=fifo:/stale")
        result = self.sandbox.run([self.bridge, "-j5", "--", "sh", "-c",
                                   'printf "%s\\n" "$MAKEFLAGS" "$MFLAGS" '
                                   '"${CARGO_MAKEFLAGS-unset}"'], env=env)
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual(len(lines), 3)
        self.assertRegex(lines[0], r"^-j5 --jobserver-auth=\d+,\d+$")
        self.assertEqual(lines[0], lines[1])
        self.assertEqual(lines[2], "unset")
        self.assert_no_leftovers()

    def test_users_other_makeflags_survive(self):
        env = dict(self.sandbox.env, MAKEFLAGS="k -j7 --jobserver-auth=-2,-2 -- CC=clang")
        result = self.sandbox.run([self.bridge, "-j2", "--", "sh", "-c", 'echo "$MAKEFLAGS"'],
                                  env=env)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout.strip(), r"^k -j2 --jobserver-auth=\d+,\d+ -- CC=clang$")
        self.assert_no_leftovers()


if __name__ == "__main__":
    unittest.main()
