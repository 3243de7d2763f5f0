"""jobbridge acquire: CI steps and scripts take slots of the budget they run in."""

import os
import signal
import subprocess
import sys
import unittest

from harness import BridgeTestCase, max_overlap, wait_for, HERE

CLIENT = os.path.join(HERE, "socket_client.py")


class AcquireTest(BridgeTestCase):
    def test_mixed_tree_of_make_socket_clients_and_acquire_steps(self):
        self.sandbox.copy_fixture("make-recursive")
        acquire = f'"{self.bridge}" acquire -- "$JOB"'
        script = ("make -s -C make-recursive JOB_SECONDS=0.3 & "
                  + " ".join(f"{sys.executable} {CLIENT} sock{i} 0.3 3 &" for i in range(3))
                  + " ".join(f" {acquire} acq{i} 0.3 &" for i in range(6))
                  + " wait")
        result = self.sandbox.run([self.bridge, "-v", "-j4", "--", "sh", "-c", script])
        self.assertEqual(result.returncode, 0, result.stderr)
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 12 + 9 + 6)
        self.assertEqual(max_overlap(intervals), 4)
        self.assert_nothing_lost(result, 3)

    def test_acquire_under_plain_make_uses_the_legacy_jobserver(self):
        project = self.sandbox.copy_fixture("make-acquire")
        result = self.sandbox.run(["make", "-j3", f"JOBBRIDGE={self.bridge}"], cwd=project)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("INTERNAL", result.stderr)  # make counts its tokens back itself
        self.assertEqual(result.stderr, "")
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 6)
        self.assertEqual(max_overlap(intervals), 3)
        self.assert_no_leftovers()

    def test_acquire_recipes_under_jobbridge_run_on_make_s_slots(self):
        # make runs each recipe on a slot; acquire inside it must use that
        # slot (MAKELEVEL), not wait for a second one: with every slot held by
        # such recipes that wait would never end.
        project = self.sandbox.copy_fixture("make-acquire")
        result = self.sandbox.run([self.bridge, "-v", "-j2", "--", "make",
                                   f"JOBBRIDGE={self.bridge}"], cwd=project, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 6)
        self.assertEqual(max_overlap(intervals), 2)
        self.assert_nothing_lost(result, 1)

    def test_several_slots_and_the_count_in_the_environment(self):
        result = self.sandbox.run([self.bridge, "-v", "-j4", "--", self.bridge, "acquire", "-n",
                                   "3", "--", "sh", "-c", 'echo "slots=$JOBBRIDGE_SLOTS"'])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "slots=3\n")
        self.assert_nothing_lost(result, 3)

    def test_more_slots_than_the_budget_is_an_error(self):
        result = self.sandbox.run([self.bridge, "-v", "-j3", "--", self.bridge, "acquire", "-n",
                                   "3", "true"])
        self.assertEqual(result.returncode, 2)
        self.assertIn("-n 3 is more than the 2 slot(s) this budget can give at once",
                      result.stderr)
        self.assert_nothing_lost(result, 2)

    def test_status_of_the_command_comes_back(self):
        result = self.sandbox.run([self.bridge, "-v", "-j2", "--", self.bridge, "acquire", "--",
                                   "sh", "-c", "exit 9"])
        self.assertEqual(result.returncode, 9)
        self.assert_nothing_lost(result, 1)

    def test_unusable_jobserver_is_a_clear_error(self):
        env = dict(self.sandbox.env, MAKEFLAGS="-j2 --jobserver-auth=97,98")
        result = self.sandbox.run([self.bridge, "acquire", "true"], env=env)
        self.assertEqual(result.returncode, 1)
        self.assertIn("fd 97", result.stderr)
        self.assertIn("not open", result.stderr)

    def test_a_stale_jobserverv2_is_named_not_called_gone(self):
        # A JOBSERVERV2 left over from an ended jobbridge, or mistyped: the
        # jobserver did not "go away", there was none; say what is there.
        marker = os.path.join(self.sandbox.root, "ran")
        missing = os.path.join(self.sandbox.root, "no.sock")
        env = dict(self.sandbox.env, JOBSERVERV2=missing)
        result = self.sandbox.run([self.bridge, "acquire", "--", "touch", marker], env=env)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"JOBSERVERV2 names no live jobserver: no socket at {missing}",
                      result.stderr)
        self.assertNotIn("went away", result.stderr)
        self.assertFalse(os.path.exists(marker))
        self.assert_no_leftovers()

    def test_no_jobserver_runs_the_command_with_a_warning(self):
        result = self.sandbox.run([self.bridge, "acquire", "--", "sh", "-c", "echo ran"])
        self.assertEqual(result.returncode, 0)
        self.assertEqual(result.stdout, "ran\n")
        self.assertIn("no jobserver found", result.stderr)

    def test_interrupted_while_waiting_gives_up_cleanly(self):
        # Budget 2: the holder takes the one shared slot; the second acquire
        # waits until SIGTERM, then exits 143 without running its command.
        # (SIGTERM: sh starts background jobs with SIGINT ignored, and
        # acquire keeps an ignored signal ignored.)
        marker = os.path.join(self.sandbox.root, "ran")
        script = (f'"{self.bridge}" acquire -- sh -c "echo held >> $JOBLOG; exec sleep 60" & '
                  f'holder=$!; '
                  f'while ! grep -q held "$JOBLOG" 2>/dev/null; do sleep 0.01; done; '
                  f'"{self.bridge}" acquire -- touch "{marker}" & waiter=$!; '
                  f'echo "waiter $waiter" >> "$JOBLOG"; wait $waiter; echo "waiter_status $?"; '
                  f'kill $holder; wait $holder')
        bridge = self.sandbox.start([self.bridge, "-v", "-j2", "--", "sh", "-c", script])
        try:
            wait_for(lambda: "waiter " in self.sandbox.read_log(), 30, "the waiter")
            pid = int(self.sandbox.read_log().split("waiter ")[1].split()[0])
            wait_for(lambda: os.path.exists(f"/proc/{pid}/fd") and any(
                os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
                for fd in os.listdir(f"/proc/{pid}/fd")), 30, "the waiter to connect")
            os.kill(pid, signal.SIGTERM)
            stdout, stderr = bridge.communicate(timeout=60)
        finally:
            if bridge.poll() is None:
                bridge.kill()
                bridge.communicate()
        self.assertIn("waiter_status 143", stdout)
        self.assertFalse(os.path.exists(marker))
        result = subprocess.CompletedProcess([], bridge.returncode, stdout, stderr)
        self.assert_nothing_lost(result, 1)


if __name__ == "__main__":
    unittest.main()
