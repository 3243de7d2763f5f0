"""Nesting with the Robust Jobserver, both ways, under the real binary.

- Under a semaphore root (sysvsem_root.py: a set of one with value N, from
  docs/PROTOCOL.md alone), a jobbridge joins ROBUST_JOBSERVER: its socket
  clients borrow units of that set, its semaphore clients use the set itself,
  and every unit comes back to N, also when the jobbridge or its clients are
  killed.
- Under a jobbridge root (its socket, or its legacy pool in MAKEFLAGS), a
  joined jobbridge offers a semaphore of its own and serves it from the outer
  budget; killed clients hand their slots on, and a killed jobbridge's set is
  removed (its blocked clients get EIDRM).
- An unusable ROBUST_JOBSERVER is one warning naming the fault, never a hang.

Every test ends proving nothing was lost and that no set it made is left."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from harness import (BridgeTestCase, HERE, max_overlap, read_stamps, read_text, tagged_processes,
                     wait_for)
from sysvsem_support import (GETNCNT, GETVAL, IPC_CREAT, IPC_PRIVATE, IPC_RMID, LIBC,
                             build_sysvsem_client, semctl)

ROOT = os.path.join(HERE, "sysvsem_root.py")
SOCKET_CLIENT = os.path.join(HERE, "socket_client.py")
JOINED_SEMAPHORE = "jobbridge: joining the Robust Jobserver's semaphore sysvsem:"
OWN_BUDGET = "jobbridge: warning: no usable outer budget, so this tree gets a budget of its own"


class NestedSemaphoreTestCase(BridgeTestCase):
    @classmethod
    def setUpClass(cls):
        cls.bin_dir = tempfile.mkdtemp(prefix="jb-sysvsem-nested-bin-")
        os.chmod(cls.bin_dir, 0o755)
        cls.client = build_sysvsem_client(cls.bin_dir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.bin_dir, ignore_errors=True)

    def setUp(self):
        super().setUp()
        self.sets = []  # sets this test saw made, checked gone at the end

    def tearDown(self):
        # A failed test must not leave its sets behind: its cleanup kills
        # the caretakers that would remove them.
        for name in ("root.id", "outer.txt", "robust.txt"):
            value = read_text(os.path.join(self.sandbox.root, name)).strip().split(":")[-1]
            if value.isdigit() and int(value) not in self.sets:
                self.sets.append(int(value))
        for semid in self.sets:
            semctl(semid, IPC_RMID)
        super().tearDown()

    def c(self, *args):
        return " ".join([self.client, *args])

    def sock(self, *args):
        return " ".join([sys.executable, SOCKET_CLIENT, *args])

    def read_set(self, name, what):
        """The set id written to `name` in the sandbox (sysvsem:ID or ID)."""
        path = os.path.join(self.sandbox.root, name)
        wait_for(lambda: read_text(path).endswith("\n"), 30, what)
        value = read_text(path).strip()
        self.assertRegex(value, r"^(sysvsem:)?\d+$")
        semid = int(value.split(":")[-1])
        if semid not in self.sets:
            self.sets.append(semid)
        return semid

    def assert_sets_gone(self):
        listed = subprocess.run(["ipcs", "-s"], capture_output=True, text=True).stdout
        ids = [line.split()[1] for line in listed.splitlines() if line.startswith("0x")]
        for semid in self.sets:
            self.assertIn(semctl(semid, GETVAL), (-22, -43), f"set {semid} is left")
            self.assertNotIn(str(semid), ids, listed)

    def assert_overlap_is(self, intervals, budget):
        self.assertTrue(all(end is not None for _, _, end in intervals), intervals)
        self.assertLessEqual(max_overlap(intervals), budget)
        self.assertEqual(max_overlap(intervals), budget)

    def pid_of(self, name):
        return read_stamps(self.sandbox.log, "pid")[name]

    def wait_granted(self, *names):
        try:
            wait_for(lambda: all(n in read_stamps(self.sandbox.log, "grant") for n in names), 30,
                     "grants to " + ", ".join(names))
        except AssertionError as error:
            raise AssertionError(f"{error}; the log:\n{self.sandbox.read_log()}") from None


SAY_ROBUST = 'echo "$ROBUST_JOBSERVER" > robust.txt; '


class UnderASemaphoreRootTest(NestedSemaphoreTestCase):
    def under_root(self, units, args):
        env = dict(self.sandbox.env, SYSVSEM_ROOT_ID=os.path.join(self.sandbox.root, "root.id"))
        return [sys.executable, ROOT, str(units), *args], env

    def test_socket_and_sysvsem_clients_share_the_outer_sets_units(self):
        script = (SAY_ROBUST + " ".join(
            f"{self.sock(f's{i}', '0.3', '2')} & {self.c(f'c{i}', '0.3', '2')} &"
            for i in range(3)) + " wait")
        args, env = self.under_root(3, [self.bridge, "-v", "--", "sh", "-c", script])
        result = self.sandbox.run(args, env=env, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)
        root_set = self.read_set("root.id", "the root's set")
        # The tree's semaphore clients use the outer set itself.
        self.assertEqual(self.read_set("robust.txt", "the tree's ROBUST_JOBSERVER"), root_set)
        self.assertIn(JOINED_SEMAPHORE + str(root_set), result.stderr)
        self.assertIn("sysvsem_root: all 3 units came back", result.stderr)
        self.assertIn("make, cargo and ninja below run one job at a time", result.stderr)
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 12, self.sandbox.read_log())
        self.assert_overlap_is(intervals, 3)
        print(f"\nunder a sysvsem root of 3: {len(intervals)} jobs, peak "
              f"{max_overlap(intervals)}", file=sys.stderr)
        self.assert_no_leftovers()
        self.assert_sets_gone()

    def test_killed_clients_and_a_killed_jobbridge_give_every_unit_back(self):
        # Two units: a socket holder and a sysvsem holder take them, a second
        # socket client waits. Each kill hands a unit on or back.
        script = (SAY_ROBUST + 'echo $PPID > bridge.pid; '
                  + self.sock("sa", "60") + " & " + self.c("cb", "60") + " & "
                  + 'until [ $(grep -c "^grant" "$JOBLOG") = 2 ]; do sleep 0.01; done; '
                  + self.sock("sc", "60") + " & wait")
        args, env = self.under_root(2, [self.bridge, "--", "sh", "-c", script])
        root = self.sandbox.start(args, env=env)
        semid = self.read_set("root.id", "the root's set")
        self.wait_granted("sa.0", "cb")
        wait_for(lambda: semctl(semid, GETNCNT) >= 1, 30, "the third client to wait upstream")
        self.assertEqual(semctl(semid, GETVAL), 0)
        killed_ns = time.time_ns()
        os.kill(self.pid_of("cb"), signal.SIGKILL)  # its unit: the kernel's undo
        self.wait_granted("sc.0")
        delay_ms = (read_stamps(self.sandbox.log, "grant")["sc.0"] - killed_ns) / 1e6
        self.assertLess(delay_ms, 1000)
        bridge = int(read_text(os.path.join(self.sandbox.root, "bridge.pid")))
        self.kill_socket_client("sa")  # its unit: given back by the relay
        wait_for(lambda: semctl(semid, GETVAL) == 1, 10, "sa's unit back in the outer set")
        # It holds sc's unit: the kernel's undo gives it back as it dies, before
        # the root sees its command end and counts (then removes the set).
        os.kill(bridge, signal.SIGKILL)
        wait_for(lambda: root.poll() is not None, 30, "the root to see its command end")
        self.kill_socket_client("sc")
        out, err = root.communicate(timeout=60)
        self.assertEqual(root.returncode, 128 + signal.SIGKILL, err)
        self.assertIn("sysvsem_root: all 2 units came back", err)
        print(f"\nkill -9 of a sysvsem holder to a socket waiter's grant: {delay_ms:.2f} ms",
              file=sys.stderr)
        self.assert_no_leftovers()
        self.assert_sets_gone()

    def kill_socket_client(self, name):
        """SIGKILLs socket_client.py NAME and the job it runs (job.sh, sleep)."""
        parents, victims = {}, []
        for pid in tagged_processes(self.sandbox.tag):
            try:
                stat = read_text(f"/proc/{pid}/stat")
                parents[pid] = int(stat.rsplit(") ", 1)[1].split()[1])
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue
            if cmdline[1:3] == [SOCKET_CLIENT.encode(), name.encode()]:
                victims = [pid]
        self.assertTrue(victims, f"no socket client {name}")
        for pid in victims:
            victims += [child for child, parent in parents.items() if parent == pid]
        for pid in victims:
            os.kill(pid, signal.SIGKILL)

    def test_a_bad_outer_variable_is_one_warning_never_a_hang(self):
        removed = LIBC.semget(IPC_PRIVATE, 1, IPC_CREAT | 0o600)
        semctl(removed, IPC_RMID)
        pair = LIBC.semget(IPC_PRIVATE, 2, IPC_CREAT | 0o600)
        self.sets.append(pair)
        cases = [("sysvsem", "ignoring ROBUST_JOBSERVER: it is 'sysvsem'; it must be "
                             "METHOD:VALUE, such as sysvsem:ID"),
                 ("win32pipe:jobserver", "ignoring ROBUST_JOBSERVER: it names the method "
                                         "'win32pipe'"),
                 ("sysvsem:12x", "ignoring ROBUST_JOBSERVER: it names the semaphore set '12x'; "
                                 "it must be a decimal id"),
                 (f"sysvsem:{removed}", f"ignoring ROBUST_JOBSERVER: it names semaphore set "
                                        f"{removed}, which does not exist (its server is gone)"),
                 (f"sysvsem:{pair}", f"ignoring ROBUST_JOBSERVER: it names semaphore set {pair} "
                                     f"of 2 semaphores; the Robust Jobserver's set has exactly "
                                     f"one")]
        for value, fault in cases:
            with self.subTest(value=value):
                result = self.run_bad(value)
                self.assertEqual(result.stderr.count(fault), 1, result.stderr)
        semctl(pair, IPC_RMID)
        self.assert_no_leftovers()
        self.assert_sets_gone()

    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("setpriv"),
                         "needs root and setpriv to run jobbridge as another user")
    def test_another_users_set_is_one_warning(self):
        theirs = LIBC.semget(IPC_PRIVATE, 1, IPC_CREAT | 0o600)
        self.sets.append(theirs)
        os.chmod(self.sandbox.root, 0o777)  # for its runtime folder and robust.txt
        os.chmod(self.sandbox.tmp, 0o1777)
        result = self.run_bad(f"sysvsem:{theirs}", ["setpriv", "--reuid=65534", "--regid=65534",
                                                   "--clear-groups"])
        fault = (f"ignoring ROBUST_JOBSERVER: it names semaphore set {theirs}: Permission denied "
                 "(it belongs to another user)")
        self.assertEqual(result.stderr.count(fault), 1, result.stderr)
        semctl(theirs, IPC_RMID)
        self.assert_sets_gone()

    def run_bad(self, value, prefix=()):
        result = self.sandbox.run([*prefix, self.bridge, "-v", "--", "sh", "-c", SAY_ROBUST],
                                  env=dict(self.sandbox.env, ROBUST_JOBSERVER=value), timeout=30)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(OWN_BUDGET, result.stderr)
        self.assertNotIn("joining", result.stderr)
        # A root of its own offers a set of its own, removed at its end.
        self.assertNotEqual(read_text(os.path.join(self.sandbox.root, "robust.txt")).strip(), value)
        self.read_set("robust.txt", "the tree's ROBUST_JOBSERVER")
        os.unlink(os.path.join(self.sandbox.root, "robust.txt"))
        return result


class UnderAJobbridgeRootTest(NestedSemaphoreTestCase):
    """The nested jobbridge joins its root's socket (JOBSERVERV2), or its
    legacy pool when JOBSERVERV2 is taken away (MAKEFLAGS)."""

    WAYS = {"socket": "", "make pool": "env -u JOBSERVERV2 -u ROBUST_JOBSERVER "}

    def nested(self, way, inner):
        """The root's command: says its ROBUST_JOBSERVER, runs a nested
        jobbridge (joined `way`) with `inner` as its command."""
        return ('echo "$ROBUST_JOBSERVER" > outer.txt; '
                f"{self.WAYS[way]}{self.bridge} -v -- sh -c '{SAY_ROBUST}{inner}'")

    def test_sysvsem_clients_in_a_nested_tree_keep_the_roots_budget(self):
        for way in self.WAYS:
            with self.subTest(way=way):
                inner = " ".join(f"{self.c(f'c{i}', '0.3', '2')} &" for i in range(4)) + " wait"
                # The root's command runs a job on its own implicit slot meanwhile.
                script = self.nested(way, inner) + " & $JOB implicit 0.6; wait"
                result = self.sandbox.run([self.bridge, "-v", "-j3", "--", "sh", "-c", script],
                                          timeout=120)
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertNotIn("sysvsem_client:", result.stderr)
                outer = self.read_set("outer.txt", "the root's ROBUST_JOBSERVER")
                inner_set = self.read_set("robust.txt", "the nested tree's ROBUST_JOBSERVER")
                self.assertNotEqual(inner_set, outer)
                joined = ("joining the socket root" if way == "socket"
                          else "joining the make jobserver in MAKEFLAGS")
                self.assertIn(joined, result.stderr)
                intervals = self.sandbox.intervals()
                self.assertEqual(len(intervals), 9, self.sandbox.read_log())
                self.assert_overlap_is(intervals, 3)
                print(f"\nnested ({way}) sysvsem clients under a root -j3: {len(intervals)} "
                      f"jobs, peak {max_overlap(intervals)}", file=sys.stderr)
                self.assert_nothing_lost(result, 2)
                self.assert_sets_gone()
                for name in ("outer.txt", "robust.txt", "jobs.log"):
                    os.unlink(os.path.join(self.sandbox.root, name))

    def test_a_killed_clients_slot_goes_to_a_waiter(self):
        inner = (self.c("h1", "60") + " & " + self.c("h2", "60") + " & "
                 + 'until [ $(grep -c "^grant" "$JOBLOG") = 2 ]; do sleep 0.01; done; '
                 + self.c("w", "0.2") + "; wait")
        result_proc = self.sandbox.start([self.bridge, "-v", "-j3", "--", "sh", "-c",
                                          self.nested("socket", inner)])
        inner_set = self.read_set("robust.txt", "the nested tree's ROBUST_JOBSERVER")
        self.wait_granted("h1", "h2")
        wait_for(lambda: semctl(inner_set, GETNCNT) == 1, 30, "the waiter to block")
        killed_ns = time.time_ns()
        os.kill(self.pid_of("h1"), signal.SIGKILL)
        self.wait_granted("w")
        delay_ms = (read_stamps(self.sandbox.log, "grant")["w"] - killed_ns) / 1e6
        os.kill(self.pid_of("h2"), signal.SIGKILL)
        out, err = result_proc.communicate(timeout=60)
        self.assertEqual(result_proc.returncode, 0, err)
        print(f"\nnested: kill -9 of a sysvsem holder to the waiter's grant: {delay_ms:.2f} ms",
              file=sys.stderr)
        self.assertLess(delay_ms, 1000)
        self.assertEqual([n for n, _, end in self.sandbox.intervals() if end], ["w"])
        self.assert_nothing_lost(subprocess.CompletedProcess([], 0, out, err), 2)
        self.assert_sets_gone()

    def test_a_killed_nested_jobbridge_removes_its_set(self):
        inner = ('echo $PPID > nested.pid; ' + self.c("h1", "60") + " & " + self.c("h2", "60")
                 + ' & until [ $(grep -c "^grant" "$JOBLOG") = 2 ]; do sleep 0.01; done; '
                 + self.c("w", "0.2") + "; wait")
        root = self.sandbox.start([self.bridge, "-v", "-j3", "--", "sh", "-c",
                                   self.nested("socket", inner)])
        inner_set = self.read_set("robust.txt", "the nested tree's ROBUST_JOBSERVER")
        self.wait_granted("h1", "h2")
        wait_for(lambda: semctl(inner_set, GETNCNT) == 1, 30, "the waiter to block")
        nested = int(read_text(os.path.join(self.sandbox.root, "nested.pid")))
        killed_ns = time.time_ns()
        os.kill(nested, signal.SIGKILL)
        wait_for(lambda: "w" in read_stamps(self.sandbox.log, "gone"), 10,
                 "the blocked client to see the set gone")
        delay_ms = (read_stamps(self.sandbox.log, "gone")["w"] - killed_ns) / 1e6
        self.assertLess(delay_ms, 1000)
        for holder in ("h1", "h2"):
            os.kill(self.pid_of(holder), signal.SIGKILL)
        out, err = root.communicate(timeout=60)
        print(f"\nkill -9 of a nested jobbridge to its blocked client's EIDRM: {delay_ms:.2f} ms",
              file=sys.stderr)
        self.assertIn("ROBUST_JOBSERVER clients get EIDRM", err)
        self.assert_nothing_lost(subprocess.CompletedProcess([], root.returncode, out, err), 2)
        self.assert_sets_gone()


if __name__ == "__main__":
    unittest.main()
