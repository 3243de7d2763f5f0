"""On a terminal, the command gets the foreground: reads, Ctrl-C and Ctrl-Z reach it."""

import os
import pty
import select
import signal
import subprocess
import time
import unittest

from harness import BridgeTestCase

DEADLINE = 30


class PtyBridge:
    """jobbridge as the session leader of a new pseudo-terminal, as a login shell would be."""

    def __init__(self, argv, env, cwd):
        self.output = b""
        self.pid, self.master = pty.fork()
        if self.pid == 0:
            os.chdir(cwd)
            os.execve(argv[0], argv, env)

    def read_until(self, text):
        deadline = time.monotonic() + DEADLINE
        while text.encode() not in self.output:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {text!r} on the terminal; saw {self.output!r}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready and not self._read_once():
                raise AssertionError(f"terminal closed before {text!r}; saw {self.output!r}")

    def _read_once(self):
        try:
            chunk = os.read(self.master, 4096)
        except OSError:  # EIO: every slave end is closed
            return False
        self.output += chunk
        return bool(chunk)

    def type(self, data):
        os.write(self.master, data)

    def wait(self, options=0):
        """Waits for jobbridge to exit (or stop, with WUNTRACED), reading the terminal."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG | options)
            if pid:
                return status
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                self._read_once()
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"jobbridge did not exit or stop; saw {self.output!r}")

    def finish(self):
        status = self.wait()
        while self._read_once():
            pass
        os.close(self.master)
        return os.waitstatus_to_exitcode(status)


class TerminalTest(BridgeTestCase):
    def start(self, script):
        return PtyBridge([self.bridge, "-v", "-j2", "--", "sh", "-c", script],
                         self.sandbox.env, self.sandbox.root)

    def check_end(self, term, expected_status):
        status = term.finish()
        self.assertEqual(status, expected_status, term.output)
        result = subprocess.CompletedProcess([], status, "", term.output.decode())
        self.assert_nothing_lost(result, 1)

    def test_command_reads_the_terminal(self):
        term = self.start('echo ready; read line; echo "got:$line"')
        term.read_until("ready")
        term.type(b"hello\n")
        term.read_until("got:hello")
        self.check_end(term, 0)

    def test_ctrl_c_reaches_the_command(self):
        # exec: dash catches SIGINT while it waits for a child, and a Ctrl-C
        # that lands between its fork and the child's exec is lost inside dash
        # (with or without jobbridge); with exec there is no such window.
        term = self.start("echo ready; exec sleep 60")
        term.read_until("ready")
        term.type(b"\x03")
        self.check_end(term, 128 + signal.SIGINT)

    def test_ctrl_z_stops_jobbridge_with_the_command_and_resumes(self):
        term = self.start('echo ready; read line; echo "got:$line"')
        term.read_until("ready")
        term.type(b"\x1a")
        status = term.wait(os.WUNTRACED)
        self.assertTrue(os.WIFSTOPPED(status), "jobbridge should stop with its command")
        os.kill(term.pid, signal.SIGCONT)  # what "fg" does, after giving back the terminal
        term.type(b"again\n")
        term.read_until("got:again")
        self.check_end(term, 0)


if __name__ == "__main__":
    unittest.main()
