"""Per-invocation pools (docs/LEAKS.md): every make and ninja started
through the shims gets a pool of its own, and what it held when it was
killed comes back when its last process (orphaned recipes included) ends.

Each test measures what a user would see from the jobs' own stamps (the
width, the peak against the budget), the exit code and the messages, and
ends with every token back and nothing left behind. The wall time against
plain make is test_parity.py's.
"""

import os
import random
import re
import signal
import sys
import unittest

from harness import BridgeTestCase, max_overlap, wait_for

RECLAIMED = (r"jobbridge: warning: pid (\d+) \(({command})\) ended holding (\d+) token\(s\) "
             r"\(killed\?\); given back to the budget")


def running_at(intervals, instant):
    """How many jobs ran at `instant` (a job that ends then does not count)."""
    return sum(1 for _, start, end in intervals
               if start <= instant and (end is None or end > instant))


def first_full_width(intervals, budget, since):
    """The first job start at or after `since` at which `budget` jobs ran."""
    for _, start, _ in sorted(intervals, key=lambda i: i[1]):
        if start >= since and running_at(intervals, start) >= budget:
            return start
    return None


def read_text(path):
    with open(path) as f:
        return f.read().strip()


class KilledSubMakeTest(BridgeTestCase):
    def test_a_killed_sub_make_gives_back_its_tokens_and_orphans_keep_their_slots(self):
        project = self.sandbox.copy_fixture("invocation-kill")
        pid_file = os.path.join(project, "make-a.pid")
        bridge = self.sandbox.start([self.bridge, "-v", "-j4", "--", "make", "-s"], cwd=project)
        # Two of a's jobs running: one on its implicit slot, one on a token
        # it took from its pool, which it holds when it is killed.
        wait_for(lambda: sum(name.startswith("a-") for name, _, end in self.sandbox.intervals()
                             if end is None) >= 2 and os.path.exists(pid_file)
                 and read_text(pid_file), 30, "sub-make a to run two jobs")
        with open(pid_file) as f:
            killed = int(f.read())
        os.kill(killed, signal.SIGKILL)
        _, stderr = bridge.communicate(timeout=60)
        self.assertEqual(bridge.returncode, 2, stderr)  # make: a sub-make was killed
        match = re.search(RECLAIMED.format(command="make -s -f sub.mk PART=a"), stderr)
        self.assertIsNotNone(match, stderr)
        self.assertEqual(int(match.group(1)), killed)
        self.assertGreaterEqual(int(match.group(3)), 1)
        # The summary at exit names it too.
        self.assertRegex(stderr, rf"given back to the budget then: pid {killed} "
                                 rf"\(make -s -f sub.mk PART=a\): {match.group(3)} token")
        intervals = self.sandbox.intervals()
        self.assertTrue(all(end is not None for _, _, end in intervals), intervals)
        # The killed make's orphaned recipes keep their slots until they end:
        # its parent frees the slot it ran on at once (plain make -j4 peaks at
        # 5 here), so the pool owes it until its life pipe ends.
        self.assertLessEqual(max_overlap(intervals), 4)
        # Within 1 s after the last process of a's tree ended, b runs 4 wide.
        a_ended = max(end for name, _, end in intervals if name.startswith("a-"))
        full = first_full_width(intervals, 4, a_ended)
        self.assertIsNotNone(full, f"never 4 wide after a's tree ended: {intervals}")
        self.assertLess((full - a_ended) / 1e9, 1.0)
        self.assertIn("jobbridge: all 3 jobserver tokens came back (budget 4)", stderr)
        self.assert_no_leftovers()


class RogueRecipeTest(BridgeTestCase):
    def test_tokens_a_killed_plus_recipe_held_come_back_when_its_sub_make_ends(self):
        # The sub-make fails (its recipe was killed); what matters is the 3
        # tokens: they come back when the sub-make's invocation ends, so the
        # four jobs after it run 4 wide (1 wide if they were lost).
        project = self.sandbox.copy_fixture("invocation-rogue")
        result = self.sandbox.run([self.bridge, "-v", "-j4", "--", "make", "-s"], cwd=project,
                                  timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(os.path.join(project, "grabbed.txt")) as f:
            self.assertEqual(f.read().strip(), "3")
        self.assertRegex(result.stderr, RECLAIMED.format(command="make -s -f sub.mk")
                         .replace(r"(\d+) token", "3 token"))
        intervals = self.sandbox.intervals()
        self.assertLessEqual(max_overlap(intervals), 4)
        after = [i for i in intervals if i[0].startswith("after-")]
        self.assertEqual(len(after), 4)
        self.assertEqual(max_overlap(after), 4)
        self.assertIn("jobbridge: all 3 jobserver tokens came back (budget 4)", result.stderr)
        self.assert_no_leftovers()


class OverReleaseTest(BridgeTestCase):
    def test_a_rogue_writer_raises_the_width_by_at_most_what_its_invocation_holds(self):
        # Sub-make a holds 2 tokens (3 jobs running) when a '+' recipe of it
        # writes 100 tokens it never took. Those 2 are freed while still in
        # use, one more is taken for a's implicit slot lent (it goes into a's
        # own pool, for a's tree only); the rest is dropped, reported with
        # a's pid and command.
        project = self.sandbox.write_file("Makefile", """\
all: a b
a b:
\t+@$(MAKE) -s -f sub-$@.mk
""")
        project = os.path.dirname(project)
        self.sandbox.write_file("sub-a.mk", """\
all: rogue a-1 a-2
a-%:
\t@$(JOB) $@ 1.0
rogue:
\t+@python3 rogue.py
""")
        self.sandbox.write_file("sub-b.mk", """\
all: $(addprefix b-,1 2 3 4 5 6 7 8)
b-%:
\t@$(JOB) $@ 0.5
""")
        self.sandbox.write_file("rogue.py", """\
import os, re, time
words = os.environ["MAKEFLAGS"].split()
auth = [w.split("=", 1)[1] for w in words if re.fullmatch(r"--jobserver-auth=\\d+,\\d+", w)][-1]
write_fd = int(auth.split(",")[1])
log = os.environ["JOBLOG"]
def running(prefix):
    starts = ends = 0
    if not os.path.exists(log):  # no job has started yet
        return 0
    for line in open(log):
        kind, name = line.split()[:2]
        if name.startswith(prefix):
            starts += kind == "start"
            ends += kind == "end"
    return starts - ends
while running("a-") < 2:  # a-1 and a-2 hold a's implicit slot and a token
    time.sleep(0.01)
os.write(write_fd, b"+" * 100)
""")
        result = self.sandbox.run([self.bridge, "-v", "-j4", "--", "make", "-s"], cwd=project,
                                  timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        match = re.search(r"a legacy client \(pid (\d+), make -s -f sub-a.mk\) wrote back "
                          r"(\d+) token\(s\) it never took", result.stderr)
        self.assertIsNotNone(match, result.stderr)
        self.assertGreaterEqual(int(match.group(2)), 100 - 2 - 1)
        # a's rogue recipe, a-1 and a-2 ran on a's implicit slot and 2 tokens.
        self.assertLessEqual(max_overlap(self.sandbox.intervals()), 4 + 2 + 1)
        # Tokens a's make writes back later, for slots freed by the rogue's
        # write, are dropped too: all but the lent one, each reported with
        # a's pid.
        reports = re.findall(rf"a legacy client \(pid {match.group(1)}, make -s -f sub-a.mk\) "
                             r"wrote back (\d+) token", result.stderr)
        dropped = sum(int(n) for n in reports)
        self.assertIn(dropped, (99, 100))
        self.assertIn("jobbridge: warning: the 3 jobserver tokens came back, but legacy clients "
                      f"wrote back {dropped} token(s) they never took", result.stderr)
        self.assert_no_leftovers()


class RandomizedTest(BridgeTestCase):
    """200 legacy invocations with random lifetimes, a third killed while they
    hold tokens, in waves; after each wave a probe of 2N jobs must run N wide
    (the kills' tokens came back), never above N, everything back at the end."""

    WAVES, PER_WAVE = 20, 10

    def test_random_invocations_and_kills(self):
        seed = int(os.environ.get("INVOCATION_SEED", random.randrange(1 << 30)))
        print(f"\nINVOCATION_SEED={seed}")
        rng = random.Random(seed)
        budget = rng.randint(3, 6)
        targets, killed = [], 0
        for wave in range(self.WAVES):
            names = []
            for i in range(self.PER_WAVE):
                name = f"w{wave}i{i}"
                jobs = " ".join(f"{name}-{j}:{rng.uniform(0.02, 0.25):.3f}"
                                for j in range(rng.randint(1, 4)))
                kill = rng.random() < 1 / 3
                killed += kill
                after = f" probe{wave - 1}" if wave else ""
                targets.append(f"{name}:{after}\n\t-+@$(MAKE) -s -f inv.mk NAME={name} "
                               f"KILL={int(kill)} JOBS='{jobs}'\n")
                names.append(name)
            targets.append(f"probe{wave}: {' '.join(names)}\n"
                           f"\t+@$(MAKE) -s -f probe.mk WAVE={wave}\n")
        self.sandbox.write_file("Makefile", f"all: probe{self.WAVES - 1}\n" + "".join(targets))
        # A killed invocation's killer waits until one of its jobs runs beside
        # it (so its make holds a token), then kills that make with SIGKILL;
        # the jobs run on as orphans.
        self.sandbox.write_file("inv.mk", """\
all: $(foreach j,$(JOBS),$(word 1,$(subst :, ,$(j)))) $(if $(filter 1,$(KILL)),killer)
$(NAME)-%:
\t@$(JOB) $@ $(word 2,$(subst :, ,$(filter $@:%,$(JOBS))))
killer:
\t@n=0; while ! grep -q "^start $(NAME)-" "$$JOBLOG" && [ $$n -lt 500 ]; do \\
\t  sleep 0.01; n=$$((n+1)); done; kill -9 $$PPID
""")
        self.sandbox.write_file("probe.mk", f"""\
all: {" ".join(f"probe-$(WAVE)-{j}" for j in range(2 * budget))}
probe-%:
\t@$(JOB) $@ 0.15
""")
        result = self.sandbox.run([self.bridge, "-v", f"-j{budget}", "--", "make", "-s"],
                                  timeout=300)
        self.assertEqual(result.returncode, 0, result.stderr)
        intervals = self.sandbox.intervals()
        self.assertTrue(all(end is not None for _, _, end in intervals))
        self.assertLessEqual(max_overlap(intervals), budget, f"seed {seed}")
        for wave in range(self.WAVES):
            probes = [i for i in intervals if i[0].startswith(f"probe-{wave}-")]
            self.assertEqual(len(probes), 2 * budget)
            width = max(running_at(intervals, start) for _, start, _ in probes)
            self.assertEqual(width, budget, f"wave {wave} ran {width} wide, seed {seed}")
        reclaimed = sum(int(found[2]) for found in re.findall(
            RECLAIMED.format(command=r"make -s -f inv.mk [^)]*"), result.stderr))
        print(f"budget {budget}, {killed} of {self.WAVES * self.PER_WAVE} killed, "
              f"{reclaimed} token(s) reclaimed")
        self.assertGreater(reclaimed, 0)
        self.assertIn(f"jobbridge: all {budget - 1} jobserver tokens came back "
                      f"(budget {budget})", result.stderr)
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
