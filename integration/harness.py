"""Shared helpers for jobbridge's integration tests.

Every test runs real processes in a sandbox of its own: a private TMPDIR (so the
bridge's runtime folder lands where the test can see it), a clean MAKEFLAGS, and
a unique tag in the environment by which the test finds any process the tree
left behind. Jobs record their own start and end in a log; the overlap the test
asserts is the one the jobs saw.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")
JOB = os.path.join(HERE, "job.sh")
TAG_VARIABLE = "JOBBRIDGE_TEST_TAG"


def required_env(name, hint):
    value = os.environ.get(name)
    if not value or not os.path.exists(value):
        raise RuntimeError(f"{name} is not set to an existing file ({value!r}); {hint}")
    return os.path.abspath(value)


def jobbridge_binary():
    return required_env("JOBBRIDGE", "run the tests through ctest (scripts/test.sh)")


def ninja_binary():
    return required_env("JOBBRIDGE_NINJA", "run scripts/install-deps.sh to install ninja 1.13.2")


def wait_for(condition, timeout, what):
    """Polls `condition` until it is true; fails the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def read_stamps(log_path, kind):
    """Returns {name: ns} of the log lines of one kind: "want" (a socket client
    began to wait for its slot) or "grant" (its slot arrived)."""
    stamps = {}
    if os.path.exists(log_path):
        with open(log_path) as log:
            for line in log:
                parts = line.split()
                if len(parts) == 3 and parts[0] == kind:
                    stamps[parts[1]] = int(parts[2])
    return stamps


def read_wants(log_path):
    return read_stamps(log_path, "want")


def idle_gaps(intervals, wants, budget, window_end, grants=None):
    """Spans (start_ns, end_ns) before window_end in which a job waited for a
    slot while fewer than `budget` jobs ran. A job with a grant stamp holds its
    slot from then on, not only once its own process started."""
    grants = grants or {}
    events = []
    for name, start, end in intervals:
        start = min(start, grants.get(name, start))
        events.append((start, 0, 1))
        events.append((end, 0, -1))
        if name in wants:
            events.append((wants[name], 1, 1))
            events.append((start, 1, -1))
    events.sort()
    running = waiting = 0
    gaps, gap_start = [], None
    for stamp, kind, delta in events:
        if stamp > window_end:
            break
        if kind == 0:
            running += delta
        else:
            waiting += delta
        short = waiting > 0 and running < budget
        if short and gap_start is None:
            gap_start = stamp
        elif not short and gap_start is not None:
            gaps.append((gap_start, stamp))
            gap_start = None
    return gaps


def read_intervals(log_path):
    """Returns [(name, start_ns, end_ns)] from a job log; unfinished jobs have end None."""
    starts, intervals = {}, []
    if not os.path.exists(log_path):
        return intervals
    with open(log_path) as log:
        for line in log:
            parts = line.split()
            if len(parts) != 3:
                continue
            kind, name, stamp = parts[0], parts[1], int(parts[2])
            if kind == "start":
                starts[name] = stamp
            elif kind == "end":
                intervals.append((name, starts.pop(name), stamp))
    intervals.extend((name, start, None) for name, start in starts.items())
    return intervals


def read_text(path):
    """The file's text, or "" while it does not exist."""
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def max_overlap(intervals):
    """The largest number of jobs that ran at the same instant."""
    events = []
    for _, start, end in intervals:
        events.append((start, 1))
        events.append((end if end is not None else float("inf"), -1))
    # At equal stamps, count ends before starts: a job that ended as another
    # started did not run beside it.
    events.sort(key=lambda e: (e[0], e[1]))
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def tagged_processes(tag):
    """PIDs of live processes whose environment carries the sandbox tag."""
    needle = f"{TAG_VARIABLE}={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            pass  # gone, a zombie, or not ours to read
    return found


class Sandbox:
    """A temporary folder, environment and job log for one test."""

    def __init__(self, test_name):
        self.root = tempfile.mkdtemp(prefix=f"jb-{test_name[:24]}-")
        self.tmp = os.path.join(self.root, "tmp")
        os.mkdir(self.tmp)
        self.log = os.path.join(self.root, "jobs.log")
        self.tag = uuid.uuid4().hex
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("MAKEFLAGS", "MFLAGS", "CARGO_MAKEFLAGS", "MAKELEVEL",
                                 "XDG_RUNTIME_DIR", "JOBSERVERV2", "ROBUST_JOBSERVER")}
        self.env.update({"TMPDIR": self.tmp, "JOBLOG": self.log, "JOB": JOB,
                         TAG_VARIABLE: self.tag, "LC_ALL": "C"})

    def write_file(self, name, text):
        """Writes `text` to `name` in the sandbox (a probe script, a
        Makefile) and returns its path."""
        path = os.path.join(self.root, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def copy_fixture(self, name):
        target = os.path.join(self.root, name)
        shutil.copytree(os.path.join(FIXTURES, name), target)
        return target

    def run(self, args, cwd=None, timeout=240, env=None):
        return subprocess.run(args, cwd=cwd or self.root, env=env or self.env,
                              capture_output=True, text=True, timeout=timeout)

    def start(self, args, cwd=None, env=None):
        return subprocess.Popen(args, cwd=cwd or self.root, env=env or self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def intervals(self):
        return read_intervals(self.log)

    def ended_jobs(self):
        """How many jobs of the log have ended."""
        return sum(1 for _, _, end in self.intervals() if end is not None)

    def runtime_leftovers(self):
        return [name for name in os.listdir(self.tmp) if name.startswith("jobbridge-")]

    def read_log(self):
        try:
            with open(self.log) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def cleanup(self):
        # A failed test may leave a tree behind that forks on: kill until none is left.
        deadline = time.monotonic() + 10
        while (pids := tagged_processes(self.tag)) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.01)
        self.remove_noted_semaphores()
        shutil.rmtree(self.root, ignore_errors=True)

    def remove_noted_semaphores(self):
        """Removes the semaphore sets that roots named in runtime folders
        still here (a failed test killed them, and their caretakers, above)
        if each is still the set noted (same id and creation time)."""
        try:
            with open("/proc/sysvipc/sem") as f:
                made = {line.split()[1]: line.split()[9] for line in f.readlines()[1:]}
        except OSError:
            return
        for folder in self.runtime_leftovers():
            try:
                with open(os.path.join(self.tmp, folder, "semaphore")) as f:
                    semid, stamp = f.read().split()
            except (OSError, ValueError):
                continue
            if made.get(semid) == stamp:
                subprocess.run(["ipcrm", "-s", semid], capture_output=True)


class BridgeTestCase(unittest.TestCase):
    """Gives each test a sandbox and proves at the end that nothing was lost."""

    def setUp(self):
        self.sandbox = Sandbox(self.id().split(".")[-1])
        self.bridge = jobbridge_binary()

    def tearDown(self):
        self.sandbox.cleanup()

    def assert_nothing_lost(self, result, tokens):
        """All tokens back (the bridge's -v accounting), no runtime folder, no process."""
        self.assertIn(f"jobbridge: all {tokens} jobserver tokens came back", result.stderr)
        self.assertNotIn("did not come back", result.stderr)
        self.assertNotIn("token(s) more than the", result.stderr)
        self.assert_no_leftovers()

    def resize(self, bridge_pid, jobs):
        """`jobbridge resize JOBS --pid BRIDGE_PID`, which must succeed.
        Returns ((asked, answered), stdout): when the request was sent and
        when the reply came (time.time_ns(); it took effect in between)."""
        asked = time.time_ns()
        result = self.sandbox.run([self.bridge, "resize", str(jobs), "--pid", str(bridge_pid)],
                                  timeout=30)
        self.assertEqual(result.returncode, 0, result.stderr)
        return (asked, time.time_ns()), result.stdout

    def assert_no_leftovers(self):
        self.assertEqual(self.sandbox.runtime_leftovers(), [], "runtime folder left behind")
        wait_for(lambda: not tagged_processes(self.sandbox.tag), 10,
                 "the processes of the tree to exit")
