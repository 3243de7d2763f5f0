"""On a terminal, the command gets the foreground: reads, Ctrl-C and Ctrl-Z reach it."""

import os
import pty
import select
import signal
import sys
import subprocess
import time
import unittest

from harness import BridgeTestCase, tagged_processes, wait_for

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


class TmuxPane:
    """A real terminal emulator: a tmux pane of a set size, on a tmux server of
    the test's own (its socket in the sandbox), read back as the screen a
    user sees (capture-pane) and with its scroll region (DECSTBM)."""

    def __init__(self, sandbox, command, rows, cols=80):
        self.socket = os.path.join(sandbox.root, "tmux.sock")
        self.env = {k: v for k, v in sandbox.env.items() if k != "TMUX"}
        self.tmux("-f", "/dev/null", "new-session", "-d", "-x", str(cols), "-y", str(rows),
                  command)

    def tmux(self, *args):
        return subprocess.run(["tmux", "-S", self.socket, *args], env=self.env, check=True,
                              capture_output=True, text=True, timeout=DEADLINE).stdout

    def screen(self):
        return self.tmux("capture-pane", "-p").rstrip("\n").split("\n")

    def history(self):
        return self.tmux("capture-pane", "-p", "-S", "-").rstrip("\n").split("\n")

    def type_line(self, text):
        self.tmux("send-keys", "-l", text)
        self.tmux("send-keys", "Enter")

    def rows(self):
        return int(self.tmux("display-message", "-p", "#{pane_height}"))

    def region(self):
        """The scroll region's first and last row, from 0."""
        upper, lower = self.tmux("display-message", "-p",
                                 "#{scroll_region_upper} #{scroll_region_lower}").split()
        return int(upper), int(lower)

    def wait_for_screen(self, check, what):
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            screen = self.screen()
            if check(screen):
                return screen
            time.sleep(0.02)  # each look starts tmux processes: leave the CPUs to the build
        raise AssertionError(f"no {what} on the screen; saw {self.screen()}")

    def status_on_last_row(self, screen):
        rows = self.rows()
        return len(screen) >= rows and screen[rows - 1].startswith("[jobbridge] ")

    def close(self):
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], env=self.env,
                       capture_output=True, timeout=DEADLINE)


class TerminalTest(BridgeTestCase):
    def start(self, script):
        return PtyBridge([self.bridge, "-v", "-j2", "--", "sh", "-c", script],
                         self.sandbox.env, self.sandbox.root)

    def check_end(self, term, expected_status, tokens=1):
        status = term.finish()
        self.assertEqual(status, expected_status, term.output)
        result = subprocess.CompletedProcess([], status, "", term.output.decode())
        self.assert_nothing_lost(result, tokens)

    def test_progress_on_a_terminal_of_unknown_size_is_one_line_redrawn_in_place(self):
        # pty.fork's terminal is 0 x 0: no row can be kept apart.
        client = os.path.join(os.path.dirname(os.path.abspath(__file__)), "socket_client.py")
        script = (" ".join(f"{sys.executable} {client} s{i} 0.4 2 &" for i in range(3))
                  + " wait; echo finished")
        term = PtyBridge([self.bridge, "-v", "-j3", "--progress", "--", "sh", "-c", script],
                         self.sandbox.env, self.sandbox.root)
        term.read_until("finished")
        self.check_end(term, 0, 2)
        text = term.output.decode()
        lines = [part for part in text.split("\r\x1b[K") if part.startswith("[jobbridge] ")]
        self.assertGreater(len(lines), 2, text)
        # Redrawn in place: no line of it ends in a newline.
        self.assertTrue(all(not line.rstrip("\r\n").endswith("\n") for line in lines))
        self.assertTrue(any(line.startswith("[jobbridge] 3/3 in use (socket 2), 1 waiting, ")
                            for line in lines), lines)
        # Cleared at the end, before the summary.
        self.assertIn("\r\x1b[Kjobbridge: utilisation ", text)
        piped = self.sandbox.run([self.bridge, "-j3", "--progress", "--", "sh", "-c", script])
        self.assertEqual(piped.returncode, 0, piped.stderr)
        self.assertNotIn("[jobbridge]", piped.stderr)
        self.assert_no_leftovers()

    def test_progress_keeps_the_last_row_and_the_output_scrolls_above_it(self):
        """On a terminal of known size the line has the last row to itself:
        the build's output scrolls in the rows above, never through the line,
        also after the terminal shrinks and grows, and at the end the row and
        the whole scroll region are given back."""
        client = os.path.join(os.path.dirname(os.path.abspath(__file__)), "socket_client.py")
        marks = os.path.join(self.sandbox.root, "resized")
        # 60 lines; after lines 20 and 40 the build waits until the test has
        # resized the terminal and seen the line redrawn (a marker file), so
        # no output lands while the terminal moves its rows.
        script = (f"{sys.executable} {client} a 0.3 4 & {sys.executable} {client} b 0.3 4 & "
                  "i=1; while [ $i -le 60 ]; do echo build line $i; "
                  f"if [ $i = 20 ] || [ $i = 40 ]; then while [ ! -e {marks}$i ]; do "
                  "sleep 0.02; done; fi; i=$((i+1)); sleep 0.02; done; wait")
        pane = TmuxPane(self.sandbox, f"{self.bridge} -v -j3 --progress -- sh -c '{script}'; "
                        "echo EXIT=$?; read x", rows=12)
        self.addCleanup(pane.close)
        for line, rows in ((20, 8), (40, 16)):
            screen = pane.wait_for_screen(
                lambda screen: f"build line {line}" in screen and pane.status_on_last_row(screen),
                f"line {line} and the status on the last row")
            self.assertEqual(pane.region(), (0, pane.rows() - 2), screen)
            pane.tmux("resize-window", "-y", str(rows))
            screen = pane.wait_for_screen(
                lambda screen: len(screen) == rows and pane.status_on_last_row(screen)
                and pane.region() == (0, rows - 2), f"the line redrawn on row {rows}")
            # The old line went with the resize: one line, on the last row.
            self.assertEqual([r for r in screen if "[jobbridge]" in r], [screen[rows - 1]],
                             screen)
            with open(f"{marks}{line}", "w"):
                pass
        pane.wait_for_screen(lambda screen: "EXIT=0" in screen, "EXIT=0")
        self.assertEqual(pane.region(), (0, pane.rows() - 1), "the scroll region given back")
        history = pane.history()
        # Every line of the build, whole and alone on its row, in order; no
        # trace of the status line.
        built = [row for row in history if "build line" in row]
        self.assertEqual(built, [f"build line {i}" for i in range(1, 61)], history)
        self.assertFalse([row for row in history if "[jobbridge]" in row], history)
        self.assertTrue(any(row.startswith("jobbridge: utilisation ") for row in history))
        pane.close()
        self.assert_no_leftovers()

    SHELL_ROWS = 10

    def shell_pane(self, command_line):
        """An interactive bash in a tmux pane, at its prompt, given `command_line`."""
        pane = TmuxPane(self.sandbox, "PS1='PROMPT> ' bash --norc --noprofile -i",
                        rows=self.SHELL_ROWS)
        self.addCleanup(pane.close)
        pane.wait_for_screen(lambda screen: any(r.startswith("PROMPT>") for r in screen),
                             "the prompt")
        pane.type_line(command_line)
        return pane

    def assert_screen_is_the_shells(self, pane, screen):
        """The whole scroll region and no status line."""
        self.assertEqual(pane.region(), (0, self.SHELL_ROWS - 1), screen)
        self.assertFalse([r for r in screen if "[jobbridge]" in r], screen)

    def fg_shows_the_line_then_ctrl_c_gives_the_screen_back(self, pane):
        pane.type_line("fg")
        pane.wait_for_screen(lambda screen: pane.status_on_last_row(screen)
                             and pane.region() == (0, self.SHELL_ROWS - 2),
                             "the status on the last row after fg")
        pane.tmux("send-keys", "C-c")
        pane.type_line("echo AFTER$((1+1))")
        screen = pane.wait_for_screen(lambda screen: "AFTER2" in screen, "the shell's prompt")
        self.assert_screen_is_the_shells(pane, screen)
        pane.close()
        self.assert_no_leftovers()

    def test_ctrl_z_gives_the_whole_screen_back_until_fg(self):
        pane = self.shell_pane(
            f"{self.bridge} -j2 --progress -- sh -c 'echo ready; exec sleep 60'")
        pane.wait_for_screen(pane.status_on_last_row, "the status on the last row")
        self.assertEqual(pane.region(), (0, self.SHELL_ROWS - 2))
        pane.tmux("send-keys", "C-z")
        screen = pane.wait_for_screen(lambda screen: any("Stopped" in r for r in screen),
                                      "the job stopped")
        self.assert_screen_is_the_shells(pane, screen)
        self.fg_shows_the_line_then_ctrl_c_gives_the_screen_back(pane)

    def test_progress_in_the_background_draws_nothing_until_fg(self):
        pane = self.shell_pane(
            f"{self.bridge} -j2 --progress -- sh -c 'echo rea''dy; exec sleep 60' &")
        pane.wait_for_screen(lambda screen: any(r.endswith("ready") for r in screen), "ready")
        # Drawing, it would redraw at least once a second: watch 1.5 s of it.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            self.assert_screen_is_the_shells(pane, pane.screen())
            time.sleep(0.05)
        self.fg_shows_the_line_then_ctrl_c_gives_the_screen_back(pane)

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
        self.check_end(term, -signal.SIGINT)  # died of it, as the command did

    def interactive_bash(self):
        return PtyBridge(["/bin/bash", "--norc", "--noprofile", "-i"],
                         dict(self.sandbox.env, PS1="PROMPT> "), self.sandbox.root)

    def test_bg_leaves_the_terminal_to_the_shell(self):
        # Ctrl-Z, then bg: when jobbridge ends, the shell must still own the
        # terminal (taking it back then would make the shell read EIO and exit).
        term = self.interactive_bash()
        # exec: dash forks with vfork, and a Ctrl-Z that stops the vfork child
        # before its exec leaves dash itself running (with or without jobbridge).
        job = os.path.join(self.sandbox.root, "job.py")
        with open(job, "w") as f:
            f.write("import os, time\ntime.sleep(1)\n"
                    "open(os.environ['JOBLOG'], 'a').write('finished')\n")
        term.type(f"{self.bridge} -j2 -- sh -c 'echo ready; exec {sys.executable} {job}'\n"
                  .encode())
        term.read_until("ready\r\n")
        term.type(b"\x1a")
        term.read_until("Stopped")
        term.type(b"bg\n")
        # The job ends while the shell sits at its prompt; then the shell must
        # still be able to read its terminal.
        wait_for(lambda: "finished" in self.sandbox.read_log(), DEADLINE, "the job to finish")
        wait_for(lambda: len(tagged_processes(self.sandbox.tag)) == 1, DEADLINE,
                 "jobbridge to exit (the shell alone left)")
        term.type(b"echo STILL''HERE\n")  # the quotes keep the echo of the line from matching
        term.read_until("STILLHERE\r\n")
        term.type(b"exit\n")
        self.assertEqual(term.finish(), 0)
        self.assert_no_leftovers()

    def test_started_in_the_background_then_fg(self):
        term = self.interactive_bash()
        term.type(f"{self.bridge} -j2 -- sh -c 'read x; echo got:$x' &\n".encode())
        # Reading the terminal from the background stops it (SIGTTIN), and
        # jobbridge stops with it, so that the shell lists the job as stopped.
        deadline = time.monotonic() + DEADLINE
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            # The marker is computed, so the echo of the typed line does not match.
            term.type(f"jobs; echo MARK$(({attempt} + 1000))\n".encode())
            term.read_until(f"MARK{attempt + 1000}\r\n")
            if b"Stopped" in term.output:
                break
        self.assertIn(b"Stopped", term.output)
        term.type(b"fg\n")
        term.type(b"hello\n")
        term.read_until("got:hello")
        term.type(b"exit\n")
        self.assertEqual(term.finish(), 0)
        self.assert_no_leftovers()

    def test_ctrl_c_stops_an_interactive_shell_loop(self):
        # bash breaks a loop on Ctrl-C only if the job died of SIGINT (not if
        # it exited 130), so jobbridge must die of it like its command.
        term = self.interactive_bash()
        term.type(f"for i in 1 2; do {self.bridge} -j2 -- sh -c \"echo ready$i; exec sleep 60\";"
                  f" echo NEXT$i; done; echo LOOP-DONE\n".encode())
        term.read_until("ready1")
        term.type(b"\x03")
        term.type(b"echo AFTER\n")
        term.read_until("AFTER\r\n")
        term.type(b"exit\n")
        self.assertEqual(term.finish(), 0)
        output = term.output.decode(errors="replace")
        self.assertNotIn("NEXT1", output)
        self.assertNotIn("ready2", output)
        self.assert_no_leftovers()

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

    def ctrl_c_under_make(self, flags):
        """A jobbridge in each of two make recipes, under a root jobbridge on a
        terminal. Inside a build a jobbridge must leave the terminal to it: if
        each took the foreground for its own command, a Ctrl-C would reach
        only the last one's tree, and make would wait for the others' jobs
        forever."""
        with open(os.path.join(self.sandbox.root, "Makefile"), "w") as f:
            f.write("all: a b\n"
                    "a b:\n"
                    f"\t+{self.bridge} {flags} -- sh -c 'echo ready-$@; exec sleep 60'\n")
        term = PtyBridge([self.bridge, "-v", "-j4", "--", "make", "-s"],
                         self.sandbox.env, self.sandbox.root)
        term.read_until("ready-a")
        term.read_until("ready-b")
        term.type(b"\x03")
        self.check_end(term, -signal.SIGINT, tokens=3)

    def ctrl_c_count(self, flags):
        """How many SIGINTs a jobbridge's command in a make recipe gets from
        one Ctrl-C. Inside a build it shares the build's process group, so the
        terminal's signal reaches it directly; jobbridge must not add one."""
        counter = os.path.join(self.sandbox.root, "counter.py")
        count = os.path.join(self.sandbox.root, "count")
        with open(counter, "w") as f:
            f.write("import signal, sys, time\n"
                    "got = []\n"
                    "signal.signal(signal.SIGINT, lambda *_: got.append(1))\n"
                    "print('ready', flush=True)\n"
                    "while not got:\n"
                    "    signal.pause()\n"
                    "# A forwarded second signal comes within milliseconds; allow 1 s.\n"
                    "end = time.monotonic() + 1\n"
                    "while time.monotonic() < end:\n"
                    "    time.sleep(0.02)\n"
                    "open(sys.argv[1], 'w').write(str(len(got)))\n"
                    "sys.exit(130)\n")
        with open(os.path.join(self.sandbox.root, "Makefile"), "w") as f:
            f.write(f"all:\n\t+{self.bridge} {flags} -- {sys.executable} {counter} {count}\n")
        term = PtyBridge([self.bridge, "-v", "-j4", "--", "make", "-s"],
                         self.sandbox.env, self.sandbox.root)
        term.read_until("ready")
        term.type(b"\x03")
        self.check_end(term, -signal.SIGINT, tokens=3)
        with open(count) as f:
            return int(f.read())

    def test_one_ctrl_c_is_one_sigint_for_a_nested_jobbridge_s_command(self):
        self.assertEqual(self.ctrl_c_count(""), 1)

    def test_one_ctrl_c_is_one_sigint_for_a_root_s_command_inside_make(self):
        self.assertEqual(self.ctrl_c_count("--root -j2"), 1)

    def test_ctrl_c_reaches_every_nested_jobbridge_under_make(self):
        self.ctrl_c_under_make("")  # they join the root's budget

    def test_ctrl_c_reaches_every_root_started_under_make(self):
        self.ctrl_c_under_make("--root -j2")  # budgets of their own, still jobs of make


if __name__ == "__main__":
    unittest.main()
