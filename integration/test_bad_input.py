"""Bad command lines and environments: one clear line, non-zero exit, nothing left."""

import os
import re
import sys
import unittest

from harness import HERE, BridgeTestCase, max_overlap


# What the command got on 0-2 and in MAKEFLAGS; then a protocol error on the
# socket, which makes jobbridge write a warning to its stderr.
STANDARD_STREAMS_PROBE = """
import os, socket, sys
with open(sys.argv[1], "w") as report:
    for fd in range(3):
        report.write(os.readlink(f"/proc/self/fd/{fd}") + "\\n")
    report.write(os.environ["MAKEFLAGS"] + "\\n")
client = socket.socket(socket.AF_UNIX)
client.connect(os.environ["JOBSERVERV2"])
client.sendall(b"x")
client.recv(1)
"""


class BadInputTest(BridgeTestCase):
    def check(self, args, status, *fragments, env=None):
        marker = os.path.join(self.sandbox.root, "ran")
        result = self.sandbox.run([self.bridge, *args], env=env)
        self.assertEqual(result.returncode, status, result.stderr)
        lines = result.stderr.splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertTrue(lines[0].startswith("jobbridge: "), lines[0])
        for fragment in fragments:
            self.assertIn(fragment, lines[0])
        self.assertEqual(result.stdout, "")
        self.assertFalse(os.path.exists(marker), "the command ran despite the error")
        self.assert_no_leftovers()
        return lines[0]

    def touch(self):
        return ["touch", os.path.join(self.sandbox.root, "ran")]

    def test_zero_jobs(self):
        self.check(["-j", "0", *self.touch()], 2, "'0'", "-j8")

    def test_jobs_not_a_number(self):
        self.check(["-j", "abc", *self.touch()], 2, "'abc'", "whole number")

    def test_jobs_too_large(self):
        self.check(["-j99999", *self.touch()], 2, "'99999'", "4096")

    def test_missing_jobs_value(self):
        self.check(["-j"], 2, "-j needs a value")

    def test_no_command(self):
        self.check(["-j2"], 2, "no command", "usage")

    def test_unknown_option(self):
        self.check(["--frobnicate", *self.touch()], 2, "'--frobnicate'", "--help")

    def test_bad_legacy_style(self):
        self.check(["--legacy-style=socket", *self.touch()], 2, "'socket'", "fifo")

    def test_command_not_found(self):
        self.check(["--", "no-such-command-jb"], 127, "no-such-command-jb", "PATH")

    def test_command_not_executable(self):
        script = os.path.join(self.sandbox.root, "not-executable")
        with open(script, "w") as f:
            f.write("#!/bin/sh\n")
        self.check(["--", script], 126, "Permission denied", "permissions")

    def test_runtime_parent_is_a_file(self):
        not_a_dir = os.path.join(self.sandbox.root, "file")
        open(not_a_dir, "w").close()
        env = dict(self.sandbox.env, TMPDIR=not_a_dir)
        self.check(self.touch(), 1, not_a_dir, "set TMPDIR", env=env)

    def test_runtime_parent_missing_names_xdg_runtime_dir(self):
        missing = os.path.join(self.sandbox.root, "missing")
        env = dict(self.sandbox.env, XDG_RUNTIME_DIR=missing)
        self.check(self.touch(), 1, missing, "XDG_RUNTIME_DIR", env=env)

    def test_malformed_makeflags_is_a_warning_and_replaced(self):
        env = dict(self.sandbox.env, MAKEFLAGS="k --jobserver-auth=garbage -- V=1")
        result = self.sandbox.run([self.bridge, "-v", "-j2", "--", "sh", "-c", 'echo "$MAKEFLAGS"'],
                                  env=env)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("jobbridge: warning: ignoring the jobserver in MAKEFLAGS: "
                      "'--jobserver-auth=garbage'", result.stderr)
        self.assertIn("no usable outer budget, so this tree gets a budget of its own (-j2)",
                      result.stderr)
        self.assertRegex(result.stdout.strip(), r"^k -j2 --jobserver-auth=\d+,\d+ -- V=1$")
        self.assert_nothing_lost(result, 1)

    def test_broken_outer_jobserver_is_named_in_a_warning(self):
        env = dict(self.sandbox.env, CARGO_MAKEFLAGS="-j --jobserver-auth=fifo:/nowhere")
        result = self.sandbox.run([self.bridge, "-v", "-j2", "--", "sh", "-c",
                                   'echo "$MAKEFLAGS"; echo "${CARGO_MAKEFLAGS-unset}"'], env=env)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("ignoring the jobserver in CARGO_MAKEFLAGS (fifo:/nowhere): the FIFO "
                      "/nowhere is missing", result.stderr)
        self.assertIn("a budget of its own (-j2)", result.stderr)
        self.assertRegex(result.stdout.strip(), r"^-j2 --jobserver-auth=\d+,\d+\nunset$")
        self.assert_nothing_lost(result, 1)

    def test_closed_standard_streams_stay_out_of_the_pool(self):
        # Started with 0-2 closed, jobbridge's own pipes used to take those
        # numbers: its stderr became the pool's write end (one warning wrote
        # 141 tokens into it: 40 jobs at once under -j4), its stdin the
        # command's token source. It opens /dev/null on 0-2 first, as a
        # daemon does, and the command gets those.
        project = self.sandbox.copy_fixture("make-many")
        report = os.path.join(self.sandbox.root, "report")
        probe = self.sandbox.write_file("probe.py", STANDARD_STREAMS_PROBE)
        script = f'python3 {probe} {report} && exec make JOB_SECONDS=0.1'
        result = self.sandbox.run(["sh", "-c", 'exec "$0" -j4 -- sh -c "$1" <&- >&- 2>&-',
                                   self.bridge, script], cwd=project)
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(report) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[:3], ["/dev/null"] * 3)
        fds = [int(fd) for fd in lines[3].split("--jobserver-auth=")[1].split(",")]
        self.assertTrue(all(fd > 2 for fd in fds), lines[3])
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 40)
        self.assertLessEqual(max_overlap(intervals), 4)
        self.assert_no_leftovers()

    def test_few_free_fds_is_a_clear_error_never_a_crash(self):
        # Under a low open-file limit jobbridge died of SIGSEGV or SIGABRT (an
        # unchecked uv_loop_init, libuv aborting) and left its runtime folder.
        outcomes = {}
        for limit in (4, 8, 10, 12, 16, 17, 18, 19, 20, 21, 22, 26, 40):
            result = self.sandbox.run(["prlimit", f"--nofile={limit}:{limit}", self.bridge,
                                       "-v", "-j2", "--", "true"])
            outcomes[limit] = result.returncode
            self.assertIn(result.returncode, (0, 1), f"limit {limit}: {result.stderr}")
            if result.returncode == 1:
                self.assertIn("(ulimit -n)", result.stderr)
                self.assertIn("raise the limit", result.stderr)
                self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
            else:
                self.assertIn("jobbridge: all 1 jobserver tokens came back", result.stderr)
            self.assertEqual(self.sandbox.runtime_leftovers(), [], f"limit {limit}")
        self.assertEqual(outcomes[4], 1)
        self.assertEqual(outcomes[40], 0)
        # Inherited fds numbered above the limit take no room below it.
        script = ("import os, resource, sys\n"
                  "for fd in range(60, 65): os.dup2(os.open('/dev/null', os.O_RDONLY), fd)\n"
                  "resource.setrlimit(resource.RLIMIT_NOFILE, (21, 21))\n"
                  "os.execv(sys.argv[1], sys.argv[1:])\n")
        result = self.sandbox.run([sys.executable, "-c", script, self.bridge, "-v", "-j2", "--",
                                   "true"])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assert_no_leftovers()

    def test_the_man_page_names_every_option_of_the_help(self):
        # docs/jobbridge.1 is installed beside the binary: keep it true.
        with open(os.path.join(HERE, "..", "docs", "jobbridge.1")) as f:
            page = f.read().replace("\\-", "-").replace("\\fR", "").replace("\\fB", "")
        help_text = self.sandbox.run([self.bridge, "--help"]).stdout
        options = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])\b", help_text))
        self.assertGreaterEqual(len(options), 10, options)
        for option in sorted(options):
            self.assertTrue(option in page, f"{option} is in --help but not in docs/jobbridge.1")
        for word in ("acquire", "adapt", "EXIT STATUS", "JOBSERVERV2"):
            self.assertIn(word, page)
        version = self.sandbox.run([self.bridge, "--version"]).stdout.split()[1]
        self.assertIn(f'"jobbridge {version}"', page)

    def test_a_huge_fifo_path_makes_a_short_warning(self):
        # A 5000-byte path named twice used to make a 10 KB line.
        path = "/tmp/" + "a" * 5000
        env = dict(self.sandbox.env, MAKEFLAGS=f"-j2 --jobserver-auth=fifo:{path}")
        result = self.sandbox.run([self.bridge, "-v", "-j2", "--", "true"], env=env)
        self.assertEqual(result.returncode, 0, result.stderr[:2000])
        self.assertIn("ignoring the jobserver in MAKEFLAGS (fifo:/tmp/aaa", result.stderr)
        self.assertIn("bytes)...", result.stderr)
        for line in result.stderr.splitlines():
            self.assertLess(len(line), 700, line[:200])
        self.assert_nothing_lost(result, 1)

    def test_help_and_version_succeed(self):
        for flag, text in (("--help", "usage: jobbridge"), ("--version", "jobbridge ")):
            result = self.sandbox.run([self.bridge, flag])
            self.assertEqual(result.returncode, 0)
            self.assertIn(text, result.stdout)
            self.assertEqual(result.stderr, "")


if __name__ == "__main__":
    unittest.main()
