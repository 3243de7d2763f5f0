"""Adapters: each legacy tool gets the jobserver form it understands, inside
one budget (make 4.3 needs R,W; ninja 1.13 needs fifo:PATH)."""

import os
import shutil
import subprocess
import sys
import unittest

from harness import BridgeTestCase, max_overlap, ninja_binary


class AdaptTest(BridgeTestCase):
    def setUp(self):
        super().setUp()
        # ninja 1.13.2 must be found in PATH, behind jobbridge's shims.
        ninja_dir = os.path.dirname(ninja_binary())
        self.sandbox.env["PATH"] = ninja_dir + ":" + self.sandbox.env["PATH"]

    def check_budget(self, result, jobs, count):
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output)
        self.assertNotIn("not supported", output)
        self.assertNotIn("Ignoring jobserver", output)
        self.assertNotIn("invalid --jobserver-auth", output)
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), count, output)
        self.assertLessEqual(max_overlap(intervals), jobs)
        return max_overlap(intervals)

    def test_make_recipe_runs_ninja_within_the_budget(self):
        project = self.sandbox.copy_fixture("make-runs-ninja")
        result = self.sandbox.run([self.bridge, "-v", "-j4", "--", "make"], cwd=project)
        self.assertEqual(self.check_budget(result, 4, 4 + 8), 4)
        self.assert_nothing_lost(result, 3)

    def test_without_adapters_ninja_ignores_the_pipe(self):
        # The failure the adapters exist for, as ninja itself reports it.
        project = self.sandbox.copy_fixture("make-runs-ninja")
        result = self.sandbox.run([self.bridge, "-v", "-j4", "--no-adapters", "--", "make"],
                                  cwd=project)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("not supported", result.stdout + result.stderr)
        self.assert_nothing_lost(result, 3)

    def test_explicit_adapt_does_the_same(self):
        project = self.sandbox.copy_fixture("make-runs-ninja")
        result = self.sandbox.run([self.bridge, "-v", "-j4", "--no-adapters", "--", "make",
                                   f"NINJA_RECIPE={self.bridge} adapt -- ninja"], cwd=project)
        self.assertEqual(self.check_budget(result, 4, 4 + 8), 4)
        self.assert_nothing_lost(result, 3)

    def test_adapt_under_a_plain_make_reaches_make_s_own_pipe(self):
        # No jobbridge at the root: make 4.3's anonymous pipe, handed to ninja
        # as fifo:/proc/self/fd/R by `jobbridge adapt`.
        project = self.sandbox.copy_fixture("make-runs-ninja")
        result = self.sandbox.run(["make", "-j3", f"NINJA_RECIPE={self.bridge} adapt -- ninja"],
                                  cwd=project)
        self.assertEqual(self.check_budget(result, 3, 4 + 8), 3)
        self.assertNotIn("INTERNAL", result.stderr)  # make counted its tokens back
        self.assert_no_leftovers()

    def test_cargo_fifo_build_script_runs_make_4_3(self):
        project = self.sandbox.copy_fixture("cargo-runs-make")
        env = dict(self.sandbox.env, CARGO_TARGET_DIR=os.path.join(self.sandbox.root, "target"))
        result = self.sandbox.run([self.bridge, "-v", "-j3", "--legacy-style=fifo", "--",
                                   "cargo", "build", "--offline"], cwd=project, env=env)
        self.check_budget(result, 3, 4)
        self.assert_nothing_lost(result, 2)

    def test_ninja_runs_ninja_and_make(self):
        project = self.sandbox.copy_fixture("ninja-runs-both")
        result = self.sandbox.run([self.bridge, "-v", "-j3", "--", "ninja"], cwd=project)
        self.check_budget(result, 3, 4 + 4 + 4)
        self.assert_nothing_lost(result, 2)

    def test_closed_jobserver_fds_are_a_warning_and_the_tool_runs(self):
        project = self.sandbox.copy_fixture("make-runs-ninja")
        result = self.sandbox.run([self.bridge, "-v", "-j2", "--", "make", "no-plus"],
                                  cwd=project)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("is not open: a make recipe without '+'", result.stderr)
        self.assertIn("running ninja with it unchanged", result.stderr)
        self.assertEqual(len(self.sandbox.intervals()), 8)
        self.assert_nothing_lost(result, 1)

    def test_shims_of_two_jobbridge_binaries_do_not_exec_each_other(self):
        # A second jobbridge binary (an installed copy beside a build) with
        # shims of its own: each shim used to skip only its own binary, so
        # one's shim, found by the other (by full path, as a CMake cache made
        # under it names it, or further down PATH when nested), exec'd the
        # other's forever.
        other = os.path.join(self.sandbox.root, "other")
        os.makedirs(os.path.join(other, "jobbridge-shims"))
        shutil.copy2(self.bridge, os.path.join(other, "jobbridge"))
        for tool in ("make", "gmake", "ninja"):
            os.symlink("../jobbridge", os.path.join(other, "jobbridge-shims", tool))
        with open(os.path.join(self.sandbox.root, "Makefile"), "w") as f:
            f.write('all: a b\na b:\n\t@"$(JOB)" $@ 0.2\n')
        other_bridge = os.path.join(other, "jobbridge")
        other_make = os.path.join(other, "jobbridge-shims", "make")
        for args in ([self.bridge, "-v", "-j2", "--", other_make, "-s"],
                     [other_bridge, "-v", "-j2", "--", self.bridge, "--root", "-j2", "--",
                      "make", "-s"]):
            with self.subTest(args=args):
                if os.path.exists(self.sandbox.log):
                    os.unlink(self.sandbox.log)
                result = self.sandbox.run(args, timeout=60)
                self.assertEqual(self.check_budget(result, 2, 2), 2)
                self.assertIn("jobbridge: all 1 jobserver tokens came back", result.stderr)
        self.assert_no_leftovers()

    def test_make_below_a_process_that_closed_the_fds_uses_the_fifo_path(self):
        # Python's subprocess closes inherited fds (close_fds=True): in fifo
        # style R,W are gone below it, and the make shim opens the FIFO anew
        # instead of handing make dead fds ("jobserver unavailable": -j1).
        with open(os.path.join(self.sandbox.root, "Makefile"), "w") as f:
            f.write('all: a b c\na b c:\n\t@"$(JOB)" $@ 0.3\n')
        driver = "import subprocess, sys; sys.exit(subprocess.run(['make', '-s']).returncode)"
        result = self.sandbox.run([self.bridge, "-v", "-j3", "--legacy-style=fifo", "--",
                                   sys.executable, "-c", driver])
        self.assertNotIn("jobserver unavailable", result.stderr)
        self.assertNotIn("cannot give make", result.stderr)
        self.assertEqual(self.check_budget(result, 3, 3), 3)
        self.assert_nothing_lost(result, 2)

    def test_a_regular_file_in_place_of_the_fifo_is_not_handed_on(self):
        # The FIFO replaced by a regular file mid-build: the make shim used to
        # open it as the pool (make spun at 99% CPU, or ran beyond -j3). It
        # checks the type now: the fds that still reach the pool are used.
        with open(os.path.join(self.sandbox.root, "Makefile"), "w") as f:
            f.write("all: " + " ".join(f"j{i}" for i in range(6)) +
                    '\nj%:\n\t@"$(JOB)" $@ 0.3\n')
        script = ('p="${MAKEFLAGS#*fifo:}"; p="${p%% *}"; rm "$p" && echo junk > "$p" && '
                  'exec make -s')
        result = self.sandbox.run([self.bridge, "-v", "-j3", "--legacy-style=fifo", "--",
                                   "sh", "-c", script], timeout=60)
        self.assertEqual(self.check_budget(result, 3, 6), 3)
        self.assert_nothing_lost(result, 2)
        # Named only by that path, the jobserver is refused with the reason,
        # and make runs as it would have (make 4.3 then stops on the fifo:).
        regular = os.path.join(self.sandbox.root, "not-a-fifo")
        with open(regular, "w") as f:
            f.write("junk")
        env = dict(self.sandbox.env, MAKEFLAGS=f"-j3 --jobserver-auth=fifo:{regular}")
        result = self.sandbox.run([self.bridge, "adapt", "--", "make", "-s"], env=env,
                                  timeout=60)
        self.assertIn(f"{regular} is not a FIFO; running make with it unchanged", result.stderr)
        self.assert_no_leftovers()

    def test_adapt_errors(self):
        result = self.sandbox.run([self.bridge, "adapt"])
        self.assertEqual(result.returncode, 2)
        self.assertIn("no tool given", result.stderr)
        env = dict(self.sandbox.env, PATH="/nonexistent")
        result = self.sandbox.run([self.bridge, "adapt", "--", "ninja"], env=env)
        self.assertEqual(result.returncode, 127)
        self.assertIn("no 'ninja' in PATH", result.stderr)


if __name__ == "__main__":
    unittest.main()
