"""Per-invocation pools cost no width (docs/LEAKS.md): a recursive build of
8 sub-makes x 10 jobs at -j4 takes within 5 % of plain make -j4's wall time,
as the jobs measure it, and so does a make whose recipes run ninja. Run on
its own (RUN_SERIAL): it compares wall times. In a sanitized build the
figures are printed, not compared.
"""

import os
import unittest

from harness import BridgeTestCase, max_overlap, ninja_binary


def wall(intervals):
    return (max(end for _, _, end in intervals) - min(start for _, start, _ in intervals)) / 1e9


class ParityTest(BridgeTestCase):
    """No slot idles in the stocking policy: 8 sub-makes x 10 jobs at -j4 take
    within 5 % of plain make -j4's wall time, measured by the jobs."""

    SUBMAKES, JOBS, SECONDS = 8, 10, 0.1

    def write_build(self, runner):
        parts = " ".join(f"p{i}" for i in range(self.SUBMAKES))
        self.sandbox.write_file("Makefile", f"""\
all: {parts}
{parts}:
\t+@{runner}
""")
        self.sandbox.write_file("sub.mk", f"""\
all: {" ".join(f"$(PART)-{j}" for j in range(self.JOBS))}
$(PART)-%:
\t@$(JOB) $@ {self.SECONDS}
""")
        for i in range(self.SUBMAKES):
            rules = "".join(f"build p{i}-{j}: job\n  name = p{i}-{j}\n"
                            for j in range(self.JOBS))
            self.sandbox.write_file(f"p{i}.ninja", "rule job\n  command = \"$$JOB\" $name "
                                    f"{self.SECONDS}\n" + rules)

    def measure(self, args, env=None):
        """Runs one build; returns its result and the jobs' intervals."""
        if os.path.exists(self.sandbox.log):
            os.remove(self.sandbox.log)
        result = self.sandbox.run(args, timeout=120, env=env)
        self.assertEqual(result.returncode, 0, result.stderr)
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), self.SUBMAKES * self.JOBS)
        return result, intervals

    def parity(self, runner):
        # Three runs of each, alternated, compared by their fastest: a load
        # spike on a shared machine slows one run, not all three.
        env = dict(self.sandbox.env, PATH=os.path.dirname(ninja_binary()) + ":" +
                   self.sandbox.env["PATH"])  # ninja 1.13 next in PATH after the shim
        plain, bridged = [], []
        for _ in range(3):
            self.write_build("$(MAKE) -s -f sub.mk PART=$@")
            plain.append(wall(self.measure(["make", "-s", "-j4"])[1]))
            self.write_build(runner)
            result, intervals = self.measure([self.bridge, "-v", "-j4", "--", "make", "-s"], env)
            self.assertEqual(max_overlap(intervals), 4)
            self.assertIn("jobbridge: all 3 jobserver tokens came back (budget 4)", result.stderr)
            self.assertNotIn("warning", result.stderr)
            bridged.append(wall(intervals))
        print(f"\n{runner.split()[0]}: plain make -j4 {min(plain):.3f} s, jobbridge "
              f"{min(bridged):.3f} s (fastest of 3), ratio {min(bridged) / min(plain):.3f}")
        if "sanitize" in os.environ.get("JOBBRIDGE_CC_FLAGS", ""):
            return  # a sanitized build's own speed is not jobbridge's
        self.assertLessEqual(min(bridged), min(plain) * 1.05)
        self.assert_no_leftovers()

    def test_sub_makes(self):
        self.parity("$(MAKE) -s -f sub.mk PART=$@")

    def test_a_make_whose_recipes_run_ninja(self):
        self.parity("ninja --quiet -f $@.ninja")


if __name__ == "__main__":
    unittest.main()
