"""The Robust Jobserver's semaphore (ROBUST_JOBSERVER=sysvsem:ID) under the real
binary, with a C client making exactly zig's std.job calls (sysvsem_client.c):
one budget with make, crash safety, a killed jobbridge, another uid, bad
values. Every test ends by proving that nothing was lost and that its set is
gone."""

import ctypes
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
import unittest

from harness import (BridgeTestCase, HERE, max_overlap, ninja_binary, read_stamps, read_text,
                     wait_for)
from sysvsem_support import build_sysvsem_client

LIBC = ctypes.CDLL(None, use_errno=True)
SOCKET_CLIENT = os.path.join(HERE, "socket_client.py")
IPC_RMID, GETVAL, GETNCNT, IPC_PRIVATE = 0, 12, 14, 0


def semctl(semid, command):
    """semctl(semid, 0, command): its result, or -errno."""
    result = LIBC.semctl(ctypes.c_int(semid), ctypes.c_int(0), ctypes.c_int(command))
    return result if result >= 0 else -ctypes.get_errno()


def cpu_ns(pid):
    """The CPU time `pid` used so far (ns), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class SysvsemTestCase(BridgeTestCase):
    @classmethod
    def setUpClass(cls):
        # Readable by every uid: one test runs the client as nobody.
        cls.bin_dir = tempfile.mkdtemp(prefix="jb-sysvsem-bin-")
        os.chmod(cls.bin_dir, 0o755)
        cls.client = build_sysvsem_client(cls.bin_dir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.bin_dir, ignore_errors=True)

    def c(self, *args):
        return " ".join([self.client, *args])

    def semaphore_id(self):
        """The set the command was given (it writes $ROBUST_JOBSERVER to robust.txt)."""
        path = os.path.join(self.sandbox.root, "robust.txt")
        wait_for(lambda: read_text(path).endswith("\n"), 30,
                 "the command to say its ROBUST_JOBSERVER")
        value = read_text(path).strip()
        self.assertRegex(value, r"^sysvsem:\d+$")
        return int(value.split(":")[1])

    def assert_set_gone(self, semid):
        self.assertIn(semctl(semid, GETVAL), (-22, -43), f"set {semid} is left")  # EINVAL, EIDRM
        listed = subprocess.run(["ipcs", "-s"], capture_output=True, text=True).stdout
        ids = [line.split()[1] for line in listed.splitlines() if line.startswith("0x")]
        self.assertNotIn(str(semid), ids, listed)

    def assert_no_client_failed(self, stderr):
        self.assertNotIn("sysvsem_client:", stderr)


SAY_ID = 'echo "$ROBUST_JOBSERVER" > robust.txt; '


class SharedBudgetTest(SysvsemTestCase):
    def test_make_recipes_and_sysvsem_clients_share_a_budget_of_4(self):
        self.sandbox.copy_fixture("sysvsem-make")
        script = (SAY_ID + f"make -s -C sysvsem-make SYSVSEM_CLIENT={self.client} & "
                  + self.c("bg1", "0.4", "3") + " & " + self.c("bg2", "0.4", "3") + " & wait")
        result = self.sandbox.run([self.bridge, "-v", "-j4", "--", "sh", "-c", script])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assert_no_client_failed(result.stderr)
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 8 + 3 * 2 + 2 * 3, self.sandbox.read_log())
        self.assertTrue(all(end is not None for _, _, end in intervals))
        peak = max_overlap(intervals)
        self.assertLessEqual(peak, 4)
        self.assertEqual(peak, 4)
        names = [name for name, _, _ in intervals]
        self.assertEqual(sum(name.startswith("make") for name in names), 8)
        self.assertEqual(sum(name.startswith(("recipe", "bg")) for name in names), 12)
        print(f"\nmake + sysvsem at -j4: {len(intervals)} jobs, peak {peak}", file=sys.stderr)
        self.assert_nothing_lost(result, 3)
        self.assert_set_gone(self.semaphore_id())


def side(job):
    """Which protocol a job's slot came through, by the names the tests give."""
    if job.startswith(("make", "ninja")):
        return "legacy"
    return "socket" if job.startswith("sock") else "sysvsem"


class MixedTreeTest(SysvsemTestCase):
    def test_make_ninja_socket_and_sysvsem_clients_share_a_budget_of_4(self):
        # More work on every side than 4 slots run at once, all started
        # together: make (with a recipe that runs ninja, both through the
        # shims), two socket clients and two semaphore clients, 8 jobs of
        # 0.3 s each. (ninja runs as a recipe: two tools started side by side
        # by one command would each take the command's implicit slot.)
        self.sandbox.write_file("Makefile", "all: ninja " + " ".join(f"make{i}" for i in range(8))
                                + "\n" + "".join(f'make{i}:\n\t@"$(JOB)" make{i} 0.3\n'
                                                 for i in range(8))
                                + "ninja:\n\t+@ninja -C nj >/dev/null\n.PHONY: all ninja\n")
        os.mkdir(os.path.join(self.sandbox.root, "nj"))
        self.sandbox.write_file("nj/build.ninja", 'rule job\n  command = "$$JOB" $name 0.3\n'
                                + "".join(f"build n{i}: job\n  name = ninja{i}\n"
                                          for i in range(8)))
        env = dict(self.sandbox.env)
        env["PATH"] = os.path.dirname(ninja_binary()) + os.pathsep + env["PATH"]
        sock = f"{sys.executable} {SOCKET_CLIENT}"
        script = (SAY_ID + "make -s & "
                  + f"{sock} sockA 0.3 4 & {sock} sockB 0.3 4 & "
                  + self.c("semA", "0.3", "4") + " & " + self.c("semB", "0.3", "4") + " & wait")
        result = self.sandbox.run([self.bridge, "-v", "-j4", "--", "sh", "-c", script], env=env)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assert_no_client_failed(result.stderr)
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 32, self.sandbox.read_log())
        self.assertTrue(all(end is not None for _, _, end in intervals))
        peak = max_overlap(intervals)
        self.assertLessEqual(peak, 4)
        self.assertEqual(peak, 4)
        sides = ("legacy", "socket", "sysvsem")
        jobs = {s: [(start, end) for name, start, end in intervals if side(name) == s]
                for s in sides}
        self.assertEqual({s: len(jobs[s]) for s in sides},
                         {"legacy": 16, "socket": 8, "sysvsem": 8})
        # While every side still had work, each got slots: none waited for
        # another to finish.
        saturated_until = min(max(end for _, end in jobs[s]) for s in sides)
        split = {s: sum(min(end, saturated_until) - start for start, end in jobs[s]
                        if start < saturated_until) / 1e9 for s in sides}
        for s in sides:
            self.assertGreater(split[s], 0, f"the {s} side starved: {split}")
        began = min(start for _, start, _ in intervals)
        print(f"\nmake + ninja + socket + sysvsem at -j4: {len(intervals)} jobs, peak {peak}; "
              f"slot-seconds while all sides had work ({(saturated_until - began) / 1e9:.1f} s): "
              + ", ".join(f"{s} {split[s]:.1f}" for s in sides), file=sys.stderr)
        self.assert_nothing_lost(result, 3)
        self.assert_set_gone(self.semaphore_id())


class CrashSafetyTest(SysvsemTestCase):
    def test_a_killed_holders_unit_goes_to_the_waiter(self):
        script = (SAY_ID + self.c("holder", "60") + ' & until grep -q "^grant holder" "$JOBLOG"; '
                  + "do sleep 0.01; done; " + self.c("waiter", "0.2") + "; wait")
        bridge = self.sandbox.start([self.bridge, "-v", "-j2", "--", "sh", "-c", script])
        semid = self.semaphore_id()
        # The holder blocks too before its grant: the waiter asks only after.
        wait_for(lambda: "waiter" in read_stamps(self.sandbox.log, "want")
                 and semctl(semid, GETNCNT) == 1, 30, "the waiter to block")
        killed_ns = time.time_ns()
        os.kill(read_stamps(self.sandbox.log, "pid")["holder"], signal.SIGKILL)
        out, err = bridge.communicate(timeout=60)
        self.assertEqual(bridge.returncode, 0, err)
        delay_ms = (read_stamps(self.sandbox.log, "grant")["waiter"] - killed_ns) / 1e6
        print(f"\nkill -9 of a sysvsem holder to the waiter's grant: {delay_ms:.2f} ms",
              file=sys.stderr)
        self.assertLess(delay_ms, 1000)
        self.assertEqual([name for name, _, end in self.sandbox.intervals() if end], ["waiter"])
        self.assert_nothing_lost(types.SimpleNamespace(stderr=err), 1)
        self.assert_set_gone(semid)

    def test_killed_holders_units_go_to_the_next_waiter_of_either_side(self):
        # One shared slot (-j2). Each round a semaphore client holds it and
        # a waiter of the other side or of its own waits; the holder is
        # SIGKILLed. A semaphore waiter is woken by the kernel's undo; a
        # socket waiter gets the unit once jobbridge's poll sees it back.
        bridge = subprocess.Popen(
            [self.bridge, "-v", "-j2", "--", "sh", "-c",
             SAY_ID + 'echo "$JOBSERVERV2" > v2.txt; read line'],
            cwd=self.sandbox.root, env=self.sandbox.env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        semid = self.semaphore_id()
        v2 = os.path.join(self.sandbox.root, "v2.txt")
        wait_for(lambda: read_text(v2).endswith("\n"), 30, "the command to say its JOBSERVERV2")
        env = dict(self.sandbox.env, ROBUST_JOBSERVER=f"sysvsem:{semid}",
                   JOBSERVERV2=read_text(v2).strip())
        delays = {"socket": [], "sysvsem": []}
        for i in range(20):
            holder = subprocess.Popen([self.client, f"hold{i}", "60"], env=env)
            wait_for(lambda: f"hold{i}" in read_stamps(self.sandbox.log, "grant"), 30,
                     f"hold{i} to get the slot")
            kind = "socket" if i % 2 else "sysvsem"
            args = ([sys.executable, SOCKET_CLIENT, f"sock{i}", "0"] if kind == "socket"
                    else [self.client, f"sem{i}", "0"])
            waiter = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
            name = f"sock{i}.0" if kind == "socket" else f"sem{i}"
            wait_for(lambda: name in read_stamps(self.sandbox.log, "want"), 30,
                     f"{name} to ask")
            if kind == "sysvsem":
                wait_for(lambda: semctl(semid, GETNCNT) == 1, 30, f"{name} to block")
            killed_ns = time.time_ns()
            holder.kill()
            holder.wait()
            _, err = waiter.communicate(timeout=30)
            self.assertEqual(waiter.returncode, 0, err)
            granted = read_stamps(self.sandbox.log, "grant")[name]
            delays[kind].append((granted - max(killed_ns, read_stamps(self.sandbox.log,
                                                                       "want")[name])) / 1e6)
        out, err = bridge.communicate("\n", timeout=60)
        self.assertEqual(bridge.returncode, 0, err)
        for kind, values in delays.items():
            values.sort()
            print(f"\nkill -9 of a sysvsem holder to a {kind} waiter's grant ({len(values)} "
                  f"kills): p50 {statistics.median(values):.2f} ms, p99 {values[-1]:.2f} ms",
                  file=sys.stderr, end="")
            self.assertEqual(len(values), 10)
            self.assertLess(values[-1], 1000)
        print(file=sys.stderr)
        self.assert_nothing_lost(types.SimpleNamespace(stderr=err), 1)
        self.assert_set_gone(semid)

    def test_blocked_clients_get_eidrm_when_jobbridge_is_killed(self):
        script = SAY_ID + " ".join(self.c(f"c{i}", "60") + " &" for i in range(3)) + " wait"
        bridge = self.sandbox.start([self.bridge, "-j2", "--", "sh", "-c", script])
        semid = self.semaphore_id()
        # Two blocked while one holds (not two blocked before the third started).
        wait_for(lambda: len(read_stamps(self.sandbox.log, "grant")) == 1
                 and semctl(semid, GETNCNT) == 2, 30, "two clients to block")
        holder = list(read_stamps(self.sandbox.log, "grant"))
        self.assertEqual(len(holder), 1)
        killed_ns = time.time_ns()
        bridge.kill()  # SIGKILL: its caretaker removes the set
        wait_for(lambda: len(read_stamps(self.sandbox.log, "gone")) == 2, 5,
                 "the blocked clients to see the set gone")
        gone = read_stamps(self.sandbox.log, "gone")
        self.assertNotIn(holder[0], gone)
        delays = [(stamp - killed_ns) / 1e6 for stamp in gone.values()]
        print(f"\nkill -9 of jobbridge to EIDRM in blocked clients: "
              f"{', '.join(f'{d:.1f}' for d in delays)} ms", file=sys.stderr)
        self.assertLess(max(delays), 1000)
        self.assert_set_gone(semid)
        os.kill(read_stamps(self.sandbox.log, "pid")[holder[0]], signal.SIGKILL)
        out, err = bridge.communicate(timeout=30)
        self.assertIn("ROBUST_JOBSERVER clients get EIDRM", err)
        self.assertEqual(err.count("the jobserver is gone"), 2, err)
        wait_for(lambda: not self.sandbox.runtime_leftovers(), 10,
                 "the caretaker to remove the runtime folder")
        self.assert_no_leftovers()


class AccessTest(SysvsemTestCase):
    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("setpriv"),
                         "needs root and setpriv to run a client as another user")
    def test_another_uid_cannot_take_a_unit(self):
        script = (SAY_ID + "JOBLOG=/dev/null setpriv --reuid=65534 --regid=65534 --clear-groups "
                  + self.c("other", "0.1") + '; echo "other_status=$?"; '
                  + self.c("mine", "0.1"))
        result = self.sandbox.run([self.bridge, "-v", "-j2", "--", "sh", "-c", script])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("other_status=4", result.stdout)
        self.assertIn("is not ours to use (Permission denied)", result.stderr)
        self.assertEqual([name for name, _, _ in self.sandbox.intervals()], ["mine"])
        self.assert_nothing_lost(result, 1)
        self.assert_set_gone(self.semaphore_id())


class BadValueTest(SysvsemTestCase):
    def run_client(self, value):
        env = dict(self.sandbox.env)
        env.pop("ROBUST_JOBSERVER", None)
        if value is not None:
            env["ROBUST_JOBSERVER"] = value
        return self.sandbox.run([self.client, "bad", "0"], env=env, timeout=10)

    def test_bad_values_are_named_never_a_hang(self):
        removed = LIBC.semget(IPC_PRIVATE, 1, 0o600)
        self.assertGreaterEqual(removed, 0)
        self.assertEqual(semctl(removed, IPC_RMID), 0)
        cases = {None: (3, "ROBUST_JOBSERVER is not set"),
                 f"sysvsem:{removed}": (4, "the jobserver is gone")}
        for value in ["", "sysvsem", "sysvsem:", "sysvsem:abc", "sysvsem:-1", "sysvsem:12x",
                      "sysvsem: 1", " sysvsem:1", "sysvsem:99999999999", "fifo:/tmp/x",
                      "win32pipe:foo"]:
            cases[value] = (3, f'ROBUST_JOBSERVER="{value}" is not sysvsem:<decimal semaphore id>')
        for value, (status, message) in cases.items():
            with self.subTest(value=value):
                result = self.run_client(value)
                self.assertEqual(result.returncode, status, result.stderr)
                self.assertIn(message, result.stderr)
                self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertEqual(self.sandbox.intervals(), [], "a job ran without a unit")
        self.assert_no_leftovers()
        self.assert_set_gone(removed)


class CostTest(SysvsemTestCase):
    """Figures for docs/ARCHITECTURE.md: jobbridge's CPU while idle and while
    sysvsem clients cycle, and the delay from a client blocking to its grant
    (the poll's). Loose bounds: the figures are printed."""

    def cpu_share(self, bridge, seconds):
        start = cpu_ns(bridge.pid)
        time.sleep(seconds)
        end = cpu_ns(bridge.pid)
        self.assertIsNotNone(end, "jobbridge ended early")
        return (end - start) / (seconds * 1e9)

    def test_cpu_idle_and_busy_and_the_delay_to_a_grant(self):
        idle = self.sandbox.start([self.bridge, "-v", "-j4", "--", "sh", "-c",
                                   SAY_ID + "sleep 6"])
        semid = self.semaphore_id()
        time.sleep(0.5)
        idle_share = self.cpu_share(idle, 5)
        out, err = idle.communicate(timeout=30)
        self.assertEqual(idle.returncode, 0, err)
        self.assert_set_gone(semid)
        os.unlink(os.path.join(self.sandbox.root, "robust.txt"))

        # Busy: 3 clients (2 at a time on the 3 shared slots beside a
        # fourth) cycling 10 ms jobs; then one client at a time after idling.
        busy_script = (SAY_ID + " ".join(self.c(f"busy{i}", "0.01", "150") + " &"
                                         for i in range(4))
                       + " wait; for i in 1 2 3 4 5 6 7 8 9 10; do sleep 0.3; "
                       + self.c("late$i", "0") + "; done")
        busy = self.sandbox.start([self.bridge, "-v", "-j4", "--", "sh", "-c", busy_script])
        semid = self.semaphore_id()
        time.sleep(0.3)
        busy_share = self.cpu_share(busy, 1.5)
        out, err = busy.communicate(timeout=120)
        self.assertEqual(busy.returncode, 0, err)
        self.assert_no_client_failed(err)
        wants = read_stamps(self.sandbox.log, "want")
        grants = read_stamps(self.sandbox.log, "grant")
        late = sorted((grants[n] - wants[n]) / 1e6 for n in grants if n.startswith("late"))
        self.assertEqual(len(late), 10)
        cycles = sum(1 for n in grants if n.startswith("busy"))
        self.assertEqual(cycles, 600)
        self.assertLessEqual(max_overlap(self.sandbox.intervals()), 3)
        print(f"\njobbridge CPU: idle {idle_share * 100:.3f} %, 4 sysvsem clients cycling "
              f"10 ms jobs {busy_share * 100:.2f} %; a client blocking after idle waits "
              f"p50 {statistics.median(late):.1f} ms, max {late[-1]:.1f} ms for its grant",
              file=sys.stderr)
        self.assertLess(idle_share, 0.01)
        self.assertLess(late[-1], 500)
        self.assert_nothing_lost(types.SimpleNamespace(stderr=err), 3)
        self.assert_set_gone(semid)


if __name__ == "__main__":
    unittest.main()
