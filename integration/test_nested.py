"""Nested jobbridges: one started inside an existing budget joins it.

Under an outer make (its jobserver pipe) or an outer jobbridge (its socket
root), a jobbridge passes the outer pool on to its children and relays its
own socket clients' slots to the outer budget, so the whole tree keeps the
outer -jN. A broken outer jobserver is a warning and a budget of its own;
--root asks for one; a lost outer socket root ends the nested jobbridge with
an error. Every test ends proving the outer budget got all its slots back
(make's own count at exit, or the root's -v line) and nothing was left behind.

Fixtures: nested-make (sub-makes and socket-client recipes), nested-kill (two
slot holders beside a sub-make), nested-own-budget (a recipe without '+', and
--root).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

from harness import BridgeTestCase, max_overlap, read_stamps, wait_for, HERE

CLIENT = os.path.join(HERE, "socket_client.py")
JOINED_MAKE = "jobbridge: joining the make jobserver in MAKEFLAGS"
JOINED_ROOT = "jobbridge: joining the socket root"
GIVEN_BACK = "for socket clients; all given back"
OWN_BUDGET = ("jobbridge: warning: no usable outer budget, so this tree gets a budget of its own"
              " (-j2)")


class NestedTestCase(BridgeTestCase):
    def make_vars(self, *extra):
        return [f"JB={self.bridge}", f"CLIENT={CLIENT}", *extra]

    def assert_make_counted_all_back(self, result):
        """The outer make exited 0 and did not complain about its tokens at exit."""
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output)
        self.assertNotIn("INTERNAL", output)  # "INTERNAL: Exiting with N jobserver tokens ..."
        self.assertNotIn("jobserver unavailable", output)

    def assert_overlap_is(self, intervals, budget):
        """Never above the budget, and the tree did fill it."""
        self.assertTrue(all(end is not None for _, _, end in intervals), intervals)
        self.assertLessEqual(max_overlap(intervals), budget)
        self.assertEqual(max_overlap(intervals), budget)

    def assert_socket_ran_beside_make(self, intervals):
        """A socket client's job overlapped a sub-make's: the outer pool's
        tokens went to the relay while make work was still running."""
        sockets = read_stamps(self.sandbox.log, "grant")
        makes = [(s, e) for name, s, e in intervals if name.startswith("make-")]
        beside = [name for name, s, e in intervals if name in sockets
                  and any(s < me and ms < e for ms, me in makes)]
        self.assertNotEqual(beside, [], "no socket job ran while a sub-make job ran")

    def assert_each_joined(self, stderr, joined, count):
        self.assertEqual(stderr.count(joined), count, stderr)
        self.assertEqual(stderr.count(GIVEN_BACK), count, stderr)
        self.assertNotIn("warning", stderr)


class JoinMakeTest(NestedTestCase):
    def test_outer_make_j4_bounds_nested_sub_makes_and_socket_clients(self):
        project = self.sandbox.copy_fixture("nested-make")
        # 1 s jobs: with 0.4 s ones an ASan build on a loaded machine once
        # started the 4th job only after the 1st had ended (peak 3).
        # make-a runs its six jobs one at a time on its recipe's slot. Two
        # parallel sub-makes could keep the one free token of the outer pipe
        # to themselves (make writes a token back and reads it again at once),
        # and on a loaded CI machine they once did until both ended. Here
        # make-b alone competes with the relay, and it ends after three
        # rounds of jobs, giving its recipe's token back, while make-a has
        # three rounds to go.
        result = self.sandbox.run(["make", "-j4",
                                   *self.make_vars("PARTS=make-a make-b sock-a",
                                                   "SERIAL_PARTS=make-a", "JOB_SECONDS=1")],
                                  cwd=project, timeout=60)
        self.assert_make_counted_all_back(result)
        self.assert_each_joined(result.stderr, JOINED_MAKE, 3)
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 6 + 6 + 1 + 4)
        self.assert_overlap_is(intervals, 4)
        self.assert_socket_ran_beside_make(intervals)
        self.assert_no_leftovers()

    def test_killed_socket_clients_give_their_slots_back_to_make(self):
        project = self.sandbox.copy_fixture("nested-kill")
        pids = os.path.join(self.sandbox.root, "pids")
        os.mkdir(pids)
        make = self.sandbox.start(["make", "-j4", f"JB={self.bridge}", f"PIDS={pids}",
                                   f"HOLDER={os.path.join(project, 'holder.py')}"], cwd=project)
        holders = [os.path.join(pids, name) for name in ("a", "b")]
        wait_for(lambda: all(map(os.path.exists, holders)) and self.sandbox.intervals(), 30,
                 "both holders to hold a slot and the sub-make's first job to start")
        kill_ns = time.time_ns()
        for path in holders:
            with open(path) as f:
                os.kill(int(f.readline()), signal.SIGKILL)
        stdout, stderr = make.communicate(timeout=60)
        result = subprocess.CompletedProcess(make.args, make.returncode, stdout, stderr)
        self.assert_make_counted_all_back(result)
        self.assertIn("jobbridge: borrowed 2 slot(s) from the make jobserver in MAKEFLAGS", stderr)
        self.assertIn(GIVEN_BACK, stderr)
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 12)
        # Until the kill the holders had the outer pool's tokens: one job at a time.
        self.assertEqual(max_overlap([i for i in intervals if i[1] < kill_ns]), 1)
        # After it their slots were back in make's pipe: the full width again.
        self.assert_overlap_is([i for i in intervals if i[1] > kill_ns], 4)
        self.assert_no_leftovers()


class JoinSocketRootTest(NestedTestCase):
    def test_two_levels_under_a_jobbridge_root_keep_its_budget(self):
        project = self.sandbox.copy_fixture("nested-make")
        run = "RUN=$(JB) -v -- $(JB) -v --"
        result = self.sandbox.run([self.bridge, "-v", "-j4", "--", "make", "-s",
                                   *self.make_vars(run, "PARTS=make-a make-b sock-a")],
                                  cwd=project, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("INTERNAL", result.stderr)
        self.assert_each_joined(result.stderr, JOINED_ROOT, 3 * 2)
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 6 + 6 + 1 + 4)
        self.assert_overlap_is(intervals, 4)
        self.assert_socket_ran_beside_make(intervals)
        self.assert_nothing_lost(result, 3)


class BrokenOuterTest(NestedTestCase):
    """Each way an outer jobserver can be unusable: a warning naming the fault,
    then a budget of its own (-j2) for the make below, and exit 0."""

    def run_own_budget(self, env=None, shell_redirects=""):
        project = self.sandbox.copy_fixture("nested-own-budget")
        command = f'exec "$0" -v -j2 -- make -s -f jobs.mk {shell_redirects}'
        return self.sandbox.run(["sh", "-c", command, self.bridge], cwd=project,
                                env=dict(self.sandbox.env, **(env or {})), timeout=60)

    def assert_own_budget(self, result, fault):
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(fault, result.stderr)
        self.assertIn(OWN_BUDGET, result.stderr)
        self.assertNotIn("joining", result.stderr)
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 6)
        self.assert_overlap_is(intervals, 2)

    def test_recipe_without_plus(self):
        project = self.sandbox.copy_fixture("nested-own-budget")
        result = self.sandbox.run(["make", "-j4", f"JB={self.bridge}", "no-plus"],
                                  cwd=project, timeout=60)
        self.assert_make_counted_all_back(result)
        self.assert_own_budget(result, "ignoring the jobserver in MAKEFLAGS (3,4): fd 3 (the "
                                       "jobserver's read end) is not open")
        self.assert_nothing_lost(result, 1)

    def test_fds_that_are_not_pipes(self):
        result = self.run_own_budget({"MAKEFLAGS": "-j4 --jobserver-auth=3,4"},
                                     "3</dev/null 4>/dev/null")
        self.assert_own_budget(result, "ignoring the jobserver in MAKEFLAGS (3,4): fd 3 (the "
                                       "jobserver's read end) is not a pipe")
        self.assert_nothing_lost(result, 1)

    def test_missing_fifo(self):
        result = self.run_own_budget({"MAKEFLAGS": "-j4 --jobserver-auth=fifo:/nonexistent/path"})
        self.assert_own_budget(result, "ignoring the jobserver in MAKEFLAGS "
                                       "(fifo:/nonexistent/path): the FIFO /nonexistent/path "
                                       "is missing")
        self.assert_nothing_lost(result, 1)

    def test_missing_socket(self):
        path = os.path.join(self.sandbox.root, "gone.sock")
        result = self.run_own_budget({"JOBSERVERV2": path})
        self.assert_own_budget(result, f"ignoring JOBSERVERV2: no socket at {path}")
        self.assert_nothing_lost(result, 1)

    def test_socket_nobody_listens_on(self):
        path = os.path.join(self.sandbox.root, "dead.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
            dead.bind(path)  # the file stays; no listen(), and then closed
        result = self.run_own_budget({"JOBSERVERV2": path})
        self.assert_own_budget(result, f"ignoring JOBSERVERV2: nothing listens on {path}")
        self.assert_nothing_lost(result, 1)


class OtherUserTest(NestedTestCase):
    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("setpriv"),
                         "needs root and setpriv to run a nested jobbridge as another user")
    def test_a_nested_jobbridge_of_another_user_gets_a_budget_of_its_own(self):
        # Run as nobody inside the tree, it used to exit 1 on "opening a
        # private description of /proc/self/fd/3: Permission denied".
        shared = tempfile.mkdtemp(prefix="jb-other-user-")
        try:
            os.chmod(shared, 0o1777)  # a TMPDIR and a binary nobody can use
            bridge = os.path.join(shared, "jobbridge")
            shutil.copy(self.bridge, bridge)
            inner = (f'TMPDIR={shared} setpriv --reuid=65534 --regid=65534 --clear-groups '
                     f'{bridge} -v -j2 -- sh -c \'echo "inner MAKEFLAGS=$MAKEFLAGS"\'; '
                     'echo "inner-exit $?"')
            result = self.sandbox.run([self.bridge, "-v", "-j3", "--", "sh", "-c", inner],
                                      timeout=60)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn("inner-exit 0", result.stdout, result.stderr)
            self.assertRegex(result.stdout, r"inner MAKEFLAGS=-j2 --jobserver-auth=\d+,\d+")
            self.assertRegex(result.stderr,
                             r"ignoring the jobserver in MAKEFLAGS \(\d+,\d+\): fd \d+ \(the "
                             r"jobserver's read end\) cannot be opened again through "
                             r"/proc/self/fd: Permission denied; this jobbridge runs as uid "
                             r"65534 and the pool belongs to uid 0")
            self.assertIn("ignoring JOBSERVERV2: cannot connect to", result.stderr)
            self.assertIn("(its root serves its own user only, and this jobbridge runs as uid "
                          "65534)", result.stderr)
            self.assertIn(OWN_BUDGET, result.stderr)
            self.assertIn("jobbridge: all 1 jobserver tokens came back (budget 2)", result.stderr)
            self.assertEqual([n for n in os.listdir(shared) if n != "jobbridge"], [])
            self.assert_nothing_lost(result, 2)
        finally:
            shutil.rmtree(shared, ignore_errors=True)


class UpstreamLossTest(NestedTestCase):
    def test_killed_outer_root_ends_the_nested_one_with_an_error(self):
        holder = os.path.join(self.sandbox.copy_fixture("nested-kill"), "holder.py")
        held = os.path.join(self.sandbox.root, "held")
        status = os.path.join(self.sandbox.root, "status")
        script = '"$0" -v -- "$1" "$2" "$3"; echo $? > "$4"'
        outer = self.sandbox.start([self.bridge, "-j3", "--", "sh", "-c", script, self.bridge,
                                    sys.executable, holder, held, status])
        wait_for(lambda: os.path.exists(held), 30, "the holder to hold its slot")
        outer.kill()  # SIGKILL: the outer root cannot tell anyone
        _, stderr = outer.communicate(timeout=60)  # read until the nested one's stderr closes
        wait_for(lambda: os.path.exists(status), 30, "the nested jobbridge to exit")
        with open(held) as f:
            self.assertEqual(f.read().split()[1:], ["eof", "refused"])
        with open(status) as f:
            self.assertEqual(f.read().strip(), "1")  # the holder itself exited 0
        self.assertIn("jobbridge: lost the outer budget: ", stderr)
        self.assertIn("jobbridge: exiting with an error: the outer budget was lost", stderr)
        # The killed root's caretaker removed its folder when the tree ended
        # (stderr closed only then).
        self.assertIn("was killed has ended; its runtime folder is removed", stderr)
        self.assert_no_leftovers()


    def test_a_jobbridge_started_after_its_root_died_does_not_join_the_dead_pool(self):
        # The root's pipes outlive it in its tree, but nobody refills or
        # drains them any more: a jobbridge started then must not join them.
        go = os.path.join(self.sandbox.root, "go")
        started = os.path.join(self.sandbox.root, "started")
        status = os.path.join(self.sandbox.root, "status")
        script = (': > "$5"; while [ ! -e "$1" ]; do sleep 0.02; done; '
                  '"$0" -v -j2 -- "$2" "$3" one 0.2 1; echo $? > "$4"')
        outer = self.sandbox.start([self.bridge, "-j3", "--", "sh", "-c", script, self.bridge,
                                    go, sys.executable, CLIENT, status, started])
        # The command's own mark, not the runtime folder: that exists before
        # the command is started, and a root killed then leaves no tree.
        wait_for(lambda: os.path.exists(started), 30, "the root's command to start")
        outer.kill()
        outer.wait(timeout=30)
        open(go, "w").close()
        _, stderr = outer.communicate(timeout=60)
        wait_for(lambda: os.path.exists(status), 30, "the late jobbridge to exit")
        with open(status) as f:
            self.assertEqual(f.read().strip(), "0", stderr)
        self.assertIn("ignoring JOBSERVERV2: nothing listens on", stderr)
        self.assertRegex(stderr, r"ignoring the jobserver in \w+: it is the pool of that socket "
                                 r"root, which is gone")
        self.assertIn(OWN_BUDGET, stderr)
        # The pool lives on in the root's caretaker, but a late jobbridge
        # cannot tell it from a dead one and keeps to a budget of its own.
        self.assertIn("was killed has ended; its runtime folder is removed", stderr)
        self.assertEqual(len(self.sandbox.intervals()), 1)
        self.assert_nothing_lost(subprocess.CompletedProcess([], 0, "", stderr), 1)


class RootOptionTest(NestedTestCase):
    def make_j2(self, target):
        """Runs one target of nested-own-budget under make -j2, which must end clean."""
        project = self.sandbox.copy_fixture("nested-own-budget")
        result = self.sandbox.run(["make", "-j2", f"JB={self.bridge}", target], cwd=project,
                                  timeout=60)
        self.assert_make_counted_all_back(result)
        return result

    def test_root_inside_make_j2_starts_a_budget_of_3(self):
        result = self.make_j2("root")
        self.assertIn("jobbridge: warning: --root: starting a budget of its own (-j3)",
                      result.stderr)
        self.assertNotIn("joining", result.stderr)
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 6)
        self.assert_overlap_is(intervals, 3)  # more than the outer -j2: the budgets add up
        self.assert_nothing_lost(result, 2)

    def test_root_keeps_the_outer_pipe_from_its_command(self):
        result = self.make_j2("root-fds")
        lines = [line.split(" ", 1) for line in result.stdout.splitlines()]
        outer = [target for who, target in lines if who == "outer"]
        inner = [target for who, target in lines if who == "inner"]
        self.assertEqual(len(outer), 1, result.stdout)
        self.assertTrue(outer[0].startswith("pipe:"), outer)
        self.assertIn("pipe:", " ".join(inner), "the command has a pool of its own")
        self.assertNotIn(outer[0], inner, "make's pipe leaked into the --root command")
        self.assert_no_leftovers()

    def test_jobs_given_while_joining_are_ignored_with_a_warning(self):
        result = self.make_j2("given-j")
        self.assertIn("jobbridge: warning: -j8 ignored: joining the make jobserver in MAKEFLAGS",
                      result.stderr)
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 6)
        self.assert_overlap_is(intervals, 2)  # the outer -j2, not 8
        self.assert_no_leftovers()


if __name__ == "__main__":
    unittest.main()
