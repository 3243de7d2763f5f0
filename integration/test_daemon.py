"""`jobbridge daemon` and `jobbridge stop`: one budget for the separate steps
of a CI job, and for builds that run side by side.

Each step is a `bash -c` of its own that reads the daemon's environment from
the file `jobbridge daemon` printed, as a CI job's steps do. The jobs record
their own start and end; the overlap asserted is theirs, across all steps.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import unittest

from harness import BridgeTestCase, HERE, max_overlap, ninja_binary, wait_for
from sysvsem_support import build_sysvsem_client

MAKEFILE = """\
JOBS := $(shell seq 1 $(COUNT))
all: $(addprefix job-,$(JOBS))
job-%:
\t@"$(JOB)" $(NAME)-$* $(SECONDS)
.PHONY: all
"""


def semaphore_exists(semid):
    with open("/proc/sysvipc/sem") as f:
        return any(line.split()[1] == str(semid) for line in f.readlines()[1:])


class DaemonTestCase(BridgeTestCase):
    @classmethod
    def setUpClass(cls):
        cls.bin_dir = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"jb-daemon-bin-{os.getpid()}")
        os.makedirs(cls.bin_dir, exist_ok=True)
        cls.sysvsem_client = build_sysvsem_client(cls.bin_dir)

    def setUp(self):
        super().setUp()
        env = self.sandbox.env
        # The steps find ninja and jobbridge by name, as a CI job's steps do.
        env["PATH"] = os.pathsep.join([os.path.dirname(ninja_binary()),
                                       os.path.dirname(self.bridge), env["PATH"]])
        self.daemon_sh = None

    def tearDown(self):
        if self.daemon_sh and os.path.isdir(self.daemon_dir):
            self.finish(self.step("jobbridge stop --timeout 1"), timeout=30)
        super().tearDown()

    def start_daemon(self, *options, prefix=""):
        """`jobbridge daemon OPTIONS` as a step of its own (`prefix`: shell
        words run before it, in the same bash); its output is kept as the
        file the later steps source."""
        result = self.sandbox.run(["bash", "-c", f'{prefix}exec "$0" daemon "$@"', self.bridge,
                                   *options], timeout=30)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.daemon_sh = self.sandbox.write_file("daemon.sh", result.stdout)
        self.daemon_dir = re.search(r"export JOBBRIDGE_DAEMON='([^']+)'", result.stdout)[1]
        self.semid = int(re.search(r"export ROBUST_JOBSERVER='sysvsem:(\d+)'", result.stdout)[1])
        with open(os.path.join(self.daemon_dir, "owner")) as f:
            words = f.read().split()  # pid and start time of the daemon, then its caretaker
        self.daemon_pid, self.caretaker_pid = int(words[0]), int(words[2])
        return result

    def step(self, script, cwd=None, env=None):
        """Starts one CI step: a bash of its own (a session of its own, as a
        runner's step is) that sources the daemon's environment first."""
        return subprocess.Popen(["bash", "-e", "-c", f". {self.daemon_sh}\n{script}"],
                                cwd=cwd or self.sandbox.root, env=env or self.sandbox.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

    def finish(self, step, timeout=120):
        out, err = step.communicate(timeout=timeout)
        return step.returncode, out, err

    def project(self, name, count, seconds):
        folder = os.path.join(self.sandbox.root, name)
        os.mkdir(folder)
        with open(os.path.join(folder, "Makefile"), "w") as f:
            f.write(f"COUNT := {count}\nNAME := {name}\nSECONDS := {seconds}\n" + MAKEFILE)
        return folder

    def stop(self, *options):
        code, out, err = self.finish(self.step("jobbridge stop " + " ".join(options)), timeout=90)
        return code, out + err

    def stop_cleanly(self):
        """`jobbridge stop`, which must exit 0, report nothing lost and leave
        nothing behind."""
        code, said = self.stop()
        self.assertEqual(code, 0, said)
        self.assert_stopped_clean(said)

    def assert_gone_by_itself(self, what):
        """The daemon (or its caretaker) removed its folder and set without
        `jobbridge stop`, and nothing of the test is left."""
        wait_for(lambda: not os.path.exists(self.daemon_dir), 10, what)
        self.assertFalse(semaphore_exists(self.semid), "semaphore set left behind")
        self.daemon_sh = None  # nothing for tearDown to stop
        self.assert_no_leftovers()

    def assert_stopped_clean(self, said):
        self.assertIn("nothing lost", said)
        self.assertFalse(os.path.exists(self.daemon_dir), "runtime folder left behind")
        self.assertEqual(self.sandbox.runtime_leftovers(), [])
        self.assertFalse(semaphore_exists(self.semid), "semaphore set left behind")
        wait_for(lambda: not os.path.exists(f"/proc/{self.daemon_pid}"), 10, "the daemon to exit")
        self.assert_no_leftovers()


class StepsShareOneBudgetTest(DaemonTestCase):
    def test_make_ninja_cargo_and_clients_in_separate_steps_share_a_daemon_of_3(self):
        self.start_daemon("-j3")
        make_dir = self.project("make", 8, 0.4)
        ninja_dir = self.sandbox.copy_fixture("ninja-sleepers")
        cargo_dir = self.sandbox.copy_fixture("cargo-runs-make")
        cargo_env = dict(self.sandbox.env, CARGO_TARGET_DIR=os.path.join(self.sandbox.root, "target"),
                         CARGO_NET_OFFLINE="true")
        client = os.path.join(HERE, "socket_client.py")
        steps = [self.step("make", cwd=make_dir),
                 self.step("ninja", cwd=ninja_dir),
                 self.step("cargo build", cwd=cargo_dir, env=cargo_env),
                 self.step(f"{sys.executable} {client} sock 0.4 4 & "
                           f"{self.sysvsem_client} sem 0.4 4 & wait")]
        for step in steps:
            code, out, err = self.finish(step, timeout=180)
            self.assertEqual(code, 0, err)
            self.assertNotIn("jobbridge: warning", err)
        intervals = self.sandbox.intervals()
        names = {re.split(r"[-.]", name)[0] for name, _, _ in intervals}
        self.assertTrue({"make", "ninja", "cargo", "sock", "sem"} <= names, names)
        self.assertEqual(max_overlap(intervals), 3, self.sandbox.read_log())
        self.stop_cleanly()

    def test_two_builds_side_by_side_take_turns(self):
        self.start_daemon("-j2")
        first, second = self.project("one", 8, 0.4), self.project("two", 8, 0.4)
        builds = [self.step("make", cwd=first), self.step("make", cwd=second)]
        # Both are seen holding or waiting: `jobbridge status` shows each.
        def both_seen():
            code, out, _ = self.finish(self.step("jobbridge status"), timeout=30)
            return code == 0 and out.startswith("budget 2 (daemon)") and out.count("make") >= 2
        wait_for(both_seen, 20, "jobbridge status to list both makes")
        for build in builds:
            code, _, err = self.finish(build)
            self.assertEqual(code, 0, err)
        intervals = self.sandbox.intervals()
        self.assertEqual(max_overlap(intervals), 2)
        start = min(start for _, start, _ in intervals)
        ends = sorted(max(end for n, _, end in intervals if n.startswith(name)) - start
                      for name in ("one", "two"))
        # Fair turns: the two finish together (each alone needs 8 x 0.4 s on
        # 2 slots, 1.6 s; taking turns, both about 3.2 s). One served
        # after the other would finish at half the time of the other.
        self.assertLess(ends[1] / ends[0], 1.35, ends)
        self.stop_cleanly()


class CrashesTest(DaemonTestCase):
    def test_a_step_killed_with_sigkill_leaves_the_next_steps_the_full_width(self):
        self.start_daemon("-j3")
        doomed = self.project("doomed", 6, 30)
        step = self.step("make", cwd=doomed)
        wait_for(lambda: len(self.sandbox.intervals()) >= 3, 20, "the doomed step's 3 jobs")
        os.killpg(step.pid, signal.SIGKILL)
        self.finish(step, timeout=10)
        after = self.project("after", 6, 0.4)
        code, _, err = self.finish(self.step("make", cwd=after))
        self.assertEqual(code, 0, err)
        later = [i for i in self.sandbox.intervals() if i[0].startswith("after")]
        self.assertEqual(max_overlap(later), 3, self.sandbox.read_log())
        self.stop_cleanly()

    def test_a_killed_daemon_fails_every_waiting_step_within_a_second(self):
        self.start_daemon("-j1")
        holder = self.project("holder", 1, 3)
        running = self.step("make", cwd=holder)
        wait_for(lambda: len(self.sandbox.intervals()) == 1, 20, "the holder's job")
        waiter = self.project("waiter", 1, 0.1)
        client = os.path.join(HERE, "socket_client.py")
        waiting = {"make": self.step("make", cwd=waiter),
                   "socket": self.step(f"exec {sys.executable} {client} sock 0.1"),
                   "sysvsem": self.step(f"exec {self.sysvsem_client} sem 0.1"),
                   "acquire": self.step("exec jobbridge acquire -n 1 -- true")}

        def all_wait():
            code, out, _ = self.finish(self.step("jobbridge status --json"), timeout=30)
            waiting = json.loads(out)["status"]["waiting"] if code == 0 else {}
            # make's slot, the socket client's and acquire's; the semaphore's.
            return waiting.get("socket", 0) >= 3 and waiting.get("sysvsem", 0) >= 1
        wait_for(all_wait, 20, "four steps waiting")
        os.kill(self.daemon_pid, signal.SIGKILL)
        killed = time.monotonic()
        ended = {}  # when each step was seen to exit

        def all_ended():
            for name, step in waiting.items():
                if name not in ended and step.poll() is not None:
                    ended[name] = time.monotonic() - killed
            return len(ended) == len(waiting)
        wait_for(all_ended, 10, "the waiting steps to fail")
        said = {}
        for name, step in waiting.items():
            code, _, said[name] = self.finish(step, timeout=10)
            self.assertNotEqual(code, 0, name)
            self.assertLess(ended[name], 1.0, f"{name} failed {ended[name]:.2f} s after the kill")
            self.assertRegex(said[name], r"gone|went away|ended|jobserver", name)
        self.assertIn("the jobbridge daemon of this CI job ended while make waited for its slot",
                      said["make"])
        # The step that held the slot finishes on it; then the caretaker
        # removes what the daemon left.
        code, _, err = self.finish(running, timeout=30)
        self.assertEqual(code, 0, err)
        self.assert_gone_by_itself("the caretaker's clean-up")

    def test_a_killed_daemons_caretaker_writes_nothing_into_a_running_pool(self):
        # Started with two more fds open (a CI runner's), the daemon's first
        # numbers differ; its caretaker receives pools' fds on them later.
        self.start_daemon("-j2", prefix="exec 3</dev/null 4</dev/null; ")
        step = self.step("make", cwd=self.project("long", 40, 0.2))
        wait_for(lambda: len(self.sandbox.intervals()) >= 2, 20, "the build's first jobs")
        os.kill(self.daemon_pid, signal.SIGKILL)
        code, _, err = self.finish(step)
        self.assertEqual(code, 0, err)
        self.assertEqual(max_overlap(self.sandbox.intervals()), 2, self.sandbox.read_log())
        self.assert_gone_by_itself("the caretaker's clean-up")

    def test_the_next_daemon_sweeps_what_a_killed_one_and_its_caretaker_left(self):
        self.start_daemon("-j2")
        old_dir, old_semid = self.daemon_dir, self.semid
        for pid in (self.daemon_pid, self.caretaker_pid):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not any(os.path.exists(f"/proc/{pid}")
                                 for pid in (self.daemon_pid, self.caretaker_pid)), 10,
                 "the daemon and its caretaker to be gone")
        result = self.start_daemon("-j2")
        self.assertIn(f"removed {old_dir} and its ROBUST_JOBSERVER semaphore set "
                      f"(sysvsem:{old_semid})", result.stderr)
        self.assertFalse(os.path.exists(old_dir))
        self.assertFalse(semaphore_exists(old_semid))
        self.stop_cleanly()


class LifecycleTest(DaemonTestCase):
    def test_a_second_daemon_in_the_same_environment_reuses_the_first(self):
        self.start_daemon("-j2")
        code, out, err = self.finish(self.step("jobbridge daemon -j5"))
        self.assertEqual(code, 0, err)
        self.assertIn(f"reusing the daemon running in {self.daemon_dir} (budget 2); -j5 ignored",
                      err)
        self.assertIn(f"export JOBBRIDGE_DAEMON='{self.daemon_dir}'", out)
        self.assertEqual(self.sandbox.runtime_leftovers(), [os.path.basename(self.daemon_dir)])
        self.stop_cleanly()

    def test_idle_timeout_stops_a_forgotten_daemon(self):
        self.start_daemon("-j2", "--idle-timeout", "1s")
        code, _, err = self.finish(self.step("make", cwd=self.project("m", 2, 0.2)))
        self.assertEqual(code, 0, err)
        self.assert_gone_by_itself("the idle daemon to stop")

    def test_sigterm_stops_the_daemon_and_removes_everything(self):
        self.start_daemon("-j2")
        code, _, err = self.finish(self.step("make", cwd=self.project("m", 2, 0.2)))
        self.assertEqual(code, 0, err)
        os.kill(self.daemon_pid, signal.SIGTERM)
        wait_for(lambda: not os.path.exists(self.daemon_dir), 10, "the daemon to stop")
        self.assertFalse(semaphore_exists(self.semid))
        code, _, err = self.finish(self.step("make", cwd=self.project("late", 1, 0.1)))
        self.assertEqual(code, 1)
        self.assertIn("the jobbridge daemon of this CI job is stopping or gone", err)
        self.daemon_sh = None
        self.assert_no_leftovers()

    def test_stop_cuts_off_a_holder_at_its_timeout_and_says_it_was_lost(self):
        self.start_daemon("-j2")
        holder = self.step(f"exec {sys.executable} {os.path.join(HERE, 'socket_client.py')} "
                           "held 60")
        wait_for(lambda: len(self.sandbox.intervals()) == 1, 20, "the holder's job")
        started = time.monotonic()
        code, said = self.stop("--timeout", "0.5s")
        self.assertEqual(code, 1, said)
        self.assertLess(time.monotonic() - started, 10)
        self.assertRegex(said, r"1 slot\(s\) lost")
        os.killpg(holder.pid, signal.SIGKILL)  # its job would run on for a minute
        self.finish(holder, timeout=30)
        self.assertFalse(os.path.exists(self.daemon_dir))
        self.assertFalse(semaphore_exists(self.semid))
        self.daemon_sh = None
        self.assert_no_leftovers()

    def test_acquire_pays_for_the_implicit_slot_of_the_tool_it_runs(self):
        # What acquire holds is the slot make runs its first job on: make
        # takes none more (a budget of 2 held by acquire -n 2 hung before).
        self.start_daemon("-j2")
        project = self.project("acq", 4, 0.3)
        code, _, err = self.finish(self.step("jobbridge acquire -n 2 -- make", cwd=project), 60)
        self.assertEqual(code, 0, err)
        code, _, err = self.finish(self.step("jobbridge acquire -n 1 -- make", cwd=project), 60)
        self.assertEqual(code, 0, err)
        second = [i for i in self.sandbox.intervals()][4:]
        self.assertEqual(max_overlap(second), 2, self.sandbox.read_log())
        self.stop_cleanly()

    def test_bad_input_is_refused_before_anything_starts(self):
        cases = [(["daemon", "-j0"], 2, "-j needs a whole number of jobs from 1"),
                 (["daemon", "--format", "xml"], 2, "unknown --format 'xml'"),
                 (["daemon", "--format", "github"], 2, "$GITHUB_ENV, which is not set"),
                 (["daemon", "--", "make"], 2, "it runs no command"),
                 (["stop"], 1, "JOBBRIDGE_CONTROL is not set"),
                 (["stop", "--timeout", "x"], 2, "'x' is not a duration"),
                 (["stop", "--timeout", "25h"], 2, "longer than a day (24h)")]
        for args, code, said in cases:
            result = self.sandbox.run([self.bridge, *args], timeout=30)
            self.assertEqual(result.returncode, code, (args, result.stderr))
            self.assertIn(said, result.stderr, args)
        self.assertEqual(self.sandbox.runtime_leftovers(), [])
        self.assert_no_leftovers()

    def test_a_daemon_whose_environment_cannot_be_printed_stops_again(self):
        with open("/dev/full", "w") as full:
            result = subprocess.run([self.bridge, "daemon", "-j2"], stdout=full,
                                    stderr=subprocess.PIPE, text=True, env=self.sandbox.env,
                                    timeout=30)
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn("its environment could not be passed on, so it was stopped again",
                      result.stderr)
        wait_for(lambda: not self.sandbox.runtime_leftovers(), 10, "the daemon to stop")
        self.assert_no_leftovers()


class ReadmeExamplesTest(DaemonTestCase):
    """The CI examples in README.md, run as the runners would run them."""

    def readme_block(self, first_line):
        with open(os.path.join(HERE, "..", "README.md")) as f:
            text = f.read()
        for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
            if block.startswith(first_line):
                return block
        self.fail(f"README.md has no yaml block starting with {first_line!r}")

    def workspace(self):
        """A checkout with a Makefile, out/build.ninja and a cargo package
        whose build script runs make: what the examples' steps build."""
        ws = self.sandbox.copy_fixture("cargo-runs-make")
        with open(os.path.join(ws, "Makefile"), "w") as f:
            f.write("COUNT := 8\nNAME := make\nSECONDS := 0.3\n" + MAKEFILE)
        os.mkdir(os.path.join(ws, "out"))
        with open(os.path.join(HERE, "fixtures", "ninja-sleepers", "build.ninja")) as src:
            with open(os.path.join(ws, "out", "build.ninja"), "w") as dst:
                dst.write(src.read())
        env = dict(self.sandbox.env, CARGO_TARGET_DIR=os.path.join(self.sandbox.root, "target"),
                   CARGO_NET_OFFLINE="true")
        return ws, env

    def assert_steps_shared_the_budget(self, said):
        budget = len(os.sched_getaffinity(0))  # what nproc prints
        intervals = self.sandbox.intervals()
        names = {re.split(r"[-.]", name)[0] for name, _, _ in intervals}
        self.assertTrue({"make", "ninja", "cargo"} <= names, names)
        self.assertEqual(max_overlap(intervals), min(budget, 12), self.sandbox.read_log())
        self.assertIn("nothing lost", said)
        self.assertEqual(self.sandbox.runtime_leftovers(), [])
        self.assert_no_leftovers()

    def test_the_github_actions_example(self):
        block = self.readme_block("# .github/workflows/build.yml")
        steps = re.findall(r"^\s*(?:- )?run: (.*)$", block, re.M)
        self.assertEqual(len(steps), 5, block)
        ws, env = self.workspace()
        github_env = self.sandbox.write_file("github_env", "")
        github_path = self.sandbox.write_file("github_path", "")
        said = ""
        for step in steps:
            # What the runner does between steps: the files' variables, and
            # the paths added first in PATH (the latest first).
            step_env = dict(env, GITHUB_ENV=github_env, GITHUB_PATH=github_path)
            with open(github_env) as f:
                step_env.update(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
            with open(github_path) as f:
                added = [line.strip() for line in f if line.strip()]
            step_env["PATH"] = os.pathsep.join(list(reversed(added)) + [env["PATH"]])
            result = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step],
                                    cwd=ws, env=step_env, capture_output=True, text=True,
                                    timeout=180)
            self.assertEqual(result.returncode, 0, (step, result.stderr))
            self.assertNotIn("warning", result.stderr, step)
            said += result.stdout + result.stderr
        self.assert_steps_shared_the_budget(said)

    def test_the_gitlab_ci_example(self):
        block = self.readme_block("# .gitlab-ci.yml")
        script = re.findall(r"^    - (.*)$", block, re.M)
        self.assertEqual(len(script), 5, block)
        ws, env = self.workspace()
        # The runner runs the script lines in one shell, stopping at the
        # first that fails.
        result = subprocess.run(["bash", "-e", "-c", "\n".join(script)], cwd=ws, env=env,
                                capture_output=True, text=True, timeout=240)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("warning", result.stderr)
        self.assert_steps_shared_the_budget(result.stdout + result.stderr)


if __name__ == "__main__":
    unittest.main()
