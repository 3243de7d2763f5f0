"""The client matrix: real jobserver clients under jobbridge, in the default
pipe style and in --legacy-style=fifo.

Clients: make 4.3 (by name, by absolute path, as a `#!/usr/bin/make -f`
script), ninja 1.13.2, each under the other, cargo with a build script using
Debian's cc 1.0.73 (`parallel`) and one running make, a client of Debian's
jobserver 0.1.24 (clients-tools/jsclient, which takes tokens as cc-rs does),
gcc 12 LTO (-flto=auto and -flto=jobserver through make, below ninja and run
directly; the LTRANS units are counted by a recording lto1 found through
COMPILER_PATH), CMake (Makefiles and Ninja: configure, build, and a build
outside jobbridge afterwards) and meson. Every case runs under a timeout and
must end with status 0, no more jobs at once than the budget (and the budget
reached, where the tool can), no warning plain make would not print, and every
token back. The jobs record their own start and end (job.sh, cc-job.sh, lto1,
jsclient). The defect tests (test_d1_... to test_d7_...) each pin one bug of
the code before the fixes. The measured peaks are printed as a table at the
end, on stdout, so that CI's log shows them.

Fixtures: clients-* (clients-tools holds the recording compiler, lto1, the
jobserver 0.1.24 client and the MAKEFLAGS checker).
"""

import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import FIXTURES, BridgeTestCase, Sandbox, max_overlap, ninja_binary, read_intervals

TOOLS = os.path.join(FIXTURES, "clients-tools")
CC_JOB = os.path.join(TOOLS, "cc-job.sh")
CHECK_JOBSERVER = os.path.join(TOOLS, "check_jobserver.py")
DEBIAN_REGISTRY = "/usr/share/cargo/registry"
STYLES = ("pipe", "fifo")
TIMEOUT = 60  # s; every case here takes a few seconds: one that runs longer hangs
BUDGET = 3

# What a case must not print: each is a client refusing or ignoring the pool,
# or jobbridge finding tokens missing or extra. Plain make prints none of them
# for these trees, except "-j2 forced" for D6's inner make -j2 (allowed there).
FORBIDDEN = (
    ("invalid --jobserver-auth", re.compile(r"invalid --jobserver-auth")),
    ("Pipe-based protocol is not supported", re.compile(r"Pipe-based protocol is not supported")),
    ("jobserver is not available", re.compile(r"jobserver is not available")),
    ("jobserver unavailable", re.compile(r"jobserver unavailable")),
    ("-jN forced", re.compile(r"-j\d* forced")),
    ("INTERNAL", re.compile(r"INTERNAL")),
    ("token(s) it never took", re.compile(r"token\(s\) it never took")),
    ("did not come back", re.compile(r"did not come back")),
    ("IO Safety violation", re.compile(r"IO Safety violation")),
)

# Rows of the table printed at the end, in order; cells are "peak/budget",
# "skip", "FAIL" or "-" (not run).
ROWS = (
    "make 4.3 by name",
    "make 4.3 by absolute path",
    "make 4.3 as #!/usr/bin/make -f script",
    "ninja 1.13.2",
    "ninja by absolute path (pipe: via adapt)",
    "ninja under make",
    "make under ninja",
    "cargo + cc-rs 1.0.73 build script",
    "cargo build script runs make",
    "jobserver-rs 0.1.24 client, direct",
    "jobserver-rs 0.1.24 client under make",
    "gcc 12 -flto=auto via make (LTRANS)",
    "gcc 12 -flto=jobserver via make (LTRANS)",
    "gcc 12 -flto=auto below ninja (LTRANS)",
    "gcc 12 -flto=jobserver below ninja (LTRANS)",
    "gcc 12 -flto=auto run directly (LTRANS)",
    "CMake Makefiles: configure, build, build outside",
    "CMake Ninja: configure, build, build outside",
    "meson setup + compile (ninja 1.13.2)",
    "jobserver-rs 0.1.24's own tests",
    "D1 shim run by its full path",
    "D2 cc-rs lends its slot, -j1",
    "D3 fifo: make's recipe gets R != W",
    "D4 make by path/script, adapt",
    "D5 LTO below ninja, -j1 / -j2",
    "D6 clients below an inner make -j2",
    "D7 direct clients, fifo",
)
RESULTS = {row: {} for row in ROWS}

_seed = {}  # what setUpModule built once: "dir", "jsclient", "cargo-target"


def clean_env():
    return {k: v for k, v in os.environ.items()
            if k not in ("MAKEFLAGS", "MFLAGS", "CARGO_MAKEFLAGS", "MAKELEVEL", "JOBSERVERV2",
                         "XDG_RUNTIME_DIR", "COMPILER_PATH", "CMAKE_BUILD_PARALLEL_LEVEL")}


def setUpModule():
    """Builds, once and outside jobbridge, the jobserver 0.1.24 client and the
    dependencies of the cc-rs project (cc, jobserver, libc from Debian's
    registry); each cargo case copies that target folder into its sandbox and
    builds only its own package there. Both builds run at once."""
    seed = tempfile.mkdtemp(prefix="jb-clients-seed-")
    _seed["dir"] = seed
    env = dict(clean_env(), CARGO_TERM_COLOR="never", CC=CC_JOB)
    builds = []
    for name, source in (("jsclient", os.path.join(TOOLS, "jsclient")),
                         ("cargo-cc", os.path.join(FIXTURES, "clients-cargo-cc"))):
        project = os.path.join(seed, name)
        shutil.copytree(source, project)
        build_env = dict(env, CARGO_TARGET_DIR=os.path.join(seed, name + "-target"))
        builds.append((name, subprocess.Popen(
            ["cargo", "build", "--offline"], cwd=project, env=build_env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    for name, build in builds:
        output, _ = build.communicate(timeout=600)
        if build.returncode != 0:
            raise RuntimeError(f"cannot build the {name} seed offline (scripts/install-deps.sh "
                               f"installs Debian's librust-cc-dev and librust-jobserver-dev):\n"
                               f"{output}")
    _seed["jsclient"] = os.path.join(seed, "jsclient-target", "debug", "jsclient")
    _seed["cargo-target"] = os.path.join(seed, "cargo-cc-target")


def tearDownModule():
    shutil.rmtree(_seed.get("dir", ""), ignore_errors=True)
    width = max(len(row) for row in ROWS)
    cell = max([4] + [len(text) for cells in RESULTS.values() for text in cells.values()])
    lines = ["", "client matrix: most jobs at once / budget (pipe: the default style; "
                 "fifo: --legacy-style=fifo)",
             f"| {'client':<{width}} | {'pipe':<{cell}} | {'fifo':<{cell}} |",
             f"|{'-' * (width + 2)}|{'-' * (cell + 2)}|{'-' * (cell + 2)}|"]
    for row in ROWS:
        cells = RESULTS[row]
        lines.append(f"| {row:<{width}} | {cells.get('pipe', '-'):<{cell}} | "
                     f"{cells.get('fifo', '-'):<{cell}} |")
    table = "\n".join(lines)
    print(table, flush=True)
    # ctest shows a passing test's output only with -V: the build folder
    # keeps the table for a script to print (scripts/test.sh).
    build_dir = os.environ.get("JOBBRIDGE_BUILD_DIR")
    if build_dir and os.path.isdir(build_dir):
        with open(os.path.join(build_dir, "client-matrix.txt"), "w") as out:
            out.write(table.lstrip("\n") + "\n")


@functools.cache
def real_lto1():
    env = clean_env()
    return subprocess.run(["gcc", "-print-prog-name=lto1"], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


class ClientTestCase(BridgeTestCase):
    def setUp(self):
        super().setUp()
        self.prepare(self.sandbox)

    def prepare(self, sandbox):
        """The environment every case shares: ninja 1.13.2 in PATH behind the
        shims, the recording compiler as CC, cargo's target in the sandbox."""
        ninja_dir = os.path.dirname(ninja_binary())
        for name in ("COMPILER_PATH", "CMAKE_BUILD_PARALLEL_LEVEL"):
            sandbox.env.pop(name, None)
        sandbox.env.update({
            "PATH": ninja_dir + ":" + sandbox.env["PATH"], "CC": CC_JOB, "JOB_SECONDS": "0.3",
            "CARGO_TERM_COLOR": "never", "CARGO_TARGET_DIR": os.path.join(sandbox.root, "target"),
            "JSCLIENT": _seed["jsclient"], "CHECK_JOBSERVER": CHECK_JOBSERVER})
        return sandbox

    def another_sandbox(self):
        """A second sandbox for a test that runs more than one tree."""
        sandbox = self.prepare(Sandbox(self.id().split(".")[-1]))
        self.addCleanup(sandbox.cleanup)
        return sandbox

    def seed_cargo_target(self, sandbox):
        shutil.copytree(_seed["cargo-target"], sandbox.env["CARGO_TARGET_DIR"], symlinks=True)

    def lto_env(self, sandbox):
        return dict(sandbox.env, COMPILER_PATH=os.path.join(TOOLS, "lto"), REAL_LTO1=real_lto1())

    def record(self, row, style, cell):
        RESULTS[row][style] = cell

    def run_tree(self, args, cwd, sandbox=None, env=None, timeout=TIMEOUT):
        """Runs a tree to its end; one that is still running after `timeout`
        gets SIGTERM (jobbridge passes it on) and fails the test as a hang."""
        sandbox = sandbox or self.sandbox
        process = sandbox.start(args, cwd=cwd, env=env or sandbox.env)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                stdout, stderr = process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            self.fail(f"`{' '.join(args)}` did not finish within {timeout} s (a hang); it "
                      f"printed:\n{(stdout + stderr)[-3000:]}")
        return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)

    def bridge_args(self, style, jobs=BUDGET, *extra):
        return [self.bridge, "-v", f"-j{jobs}", f"--legacy-style={style}", *extra, "--"]

    def assert_clean_output(self, result, allowed=()):
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output[-3000:])
        for name, pattern in FORBIDDEN:
            if name not in allowed:
                self.assertIsNone(pattern.search(output), f"printed {name!r}:\n{output[-3000:]}")

    def assert_within(self, log, jobs, count=None, at_least=None, reach=True):
        """The jobs in `log` all ended, never more than `jobs` at once, and
        (with `reach`) `jobs` at once at some point. Returns the peak."""
        intervals = read_intervals(log)
        if count is not None:
            self.assertEqual(len(intervals), count, intervals)
        if at_least is not None:
            self.assertGreaterEqual(len(intervals), at_least, intervals)
        self.assertTrue(all(end is not None for _, _, end in intervals), intervals)
        peak = max_overlap(intervals)
        self.assertLessEqual(peak, jobs, f"{peak} jobs at once under a budget of {jobs}")
        if reach:
            self.assertEqual(peak, jobs, f"at most {peak} jobs at once under a budget of {jobs}")
        return peak

    def assert_nothing_lost_in(self, sandbox, result, tokens):
        own, self.sandbox = self.sandbox, sandbox
        try:
            self.assert_nothing_lost(result, tokens)
        finally:
            self.sandbox = own

    def run_case(self, args, cwd, jobs, sandbox=None, env=None, count=None, at_least=None,
                 reach=True, allowed=()):
        """One tree under jobbridge, checked in full. Returns the peak."""
        sandbox = sandbox or self.sandbox
        result = self.run_tree(args, cwd, sandbox=sandbox, env=env)
        self.assert_clean_output(result, allowed)
        peak = self.assert_within(sandbox.log, jobs, count, at_least, reach)
        self.assert_nothing_lost_in(sandbox, result, jobs - 1)
        return peak

    def lto_direct(self, style, jobs=BUDGET, sandbox=None):
        """gcc as jobbridge's COMMAND (its lto-wrapper runs `make`, the shim).
        Returns the peak of LTRANS units at once."""
        sandbox = sandbox or self.sandbox
        project = sandbox.copy_fixture("clients-lto")
        for source in ("lto_a.c", "lto_b.c"):
            subprocess.run(["gcc", "-O1", "-flto", "-c", source], cwd=project, check=True,
                           env=sandbox.env)
        command = ["gcc", "-O1", "-flto=auto", "-flto-partition=balanced", "--param",
                   "lto-partitions=6", "--param", "lto-min-partition=1", "lto_a.o", "lto_b.o",
                   "-o", "prog"]
        return self.run_case(self.bridge_args(style, jobs) + command, project, jobs,
                             sandbox=sandbox, env=self.lto_env(sandbox), at_least=3)


class MatrixTest(ClientTestCase):
    """One test per client and style; each fills its cell of the table."""

    def matrix(self, row, style, command, fixture, count=None, at_least=None, env=None,
               jobs=BUDGET):
        self.record(row, style, "FAIL")
        project = self.sandbox.copy_fixture(fixture)
        peak = self.run_case(self.bridge_args(style, jobs) + command, project, jobs, env=env,
                             count=count, at_least=at_least)
        self.record(row, style, f"{peak}/{jobs}")

    # make 4.3

    def make_by_name(self, style):
        self.matrix("make 4.3 by name", style, ["make", "-s"], "clients-make", count=6)

    def test_make_by_name_pipe(self):
        self.make_by_name("pipe")

    def test_make_by_name_fifo(self):
        self.make_by_name("fifo")

    def make_by_path(self, style):
        make = os.path.realpath(shutil.which("make", path=self.sandbox.env["PATH"]))
        self.matrix("make 4.3 by absolute path", style, [make, "-s"], "clients-make", count=6)

    def test_make_by_absolute_path_pipe(self):
        self.make_by_path("pipe")

    def test_make_by_absolute_path_fifo(self):
        self.make_by_path("fifo")

    def make_script(self, style):
        self.matrix("make 4.3 as #!/usr/bin/make -f script", style, ["./rules", "-s"],
                    "clients-make", count=6)

    def test_make_script_pipe(self):
        self.make_script("pipe")

    def test_make_script_fifo(self):
        self.make_script("fifo")

    # ninja 1.13.2, alone and with make

    def test_ninja_pipe(self):
        self.matrix("ninja 1.13.2", "pipe", ["ninja"], "clients-ninja", count=6)

    def test_ninja_fifo(self):
        self.matrix("ninja 1.13.2", "fifo", ["ninja"], "clients-ninja", count=6)

    def test_ninja_by_absolute_path_through_adapt_pipe(self):
        # Past the shims ninja would get R,W alone, which it cannot use:
        # `jobbridge adapt` gives it its form (README: a tool by absolute path).
        self.matrix("ninja by absolute path (pipe: via adapt)", "pipe",
                    [self.bridge, "adapt", "--", ninja_binary()], "clients-ninja", count=6)

    def test_ninja_by_absolute_path_fifo(self):
        # fifo style names the FIFO last, where ninja looks: no shim needed.
        self.matrix("ninja by absolute path (pipe: via adapt)", "fifo", [ninja_binary()],
                    "clients-ninja", count=6)

    def test_ninja_under_make_pipe(self):
        self.matrix("ninja under make", "pipe", ["make", "-s"], "clients-make-ninja", count=6)

    def test_ninja_under_make_fifo(self):
        self.matrix("ninja under make", "fifo", ["make", "-s"], "clients-make-ninja", count=6)

    def test_make_under_ninja_pipe(self):
        self.matrix("make under ninja", "pipe", ["ninja"], "clients-ninja-make", count=6)

    def test_make_under_ninja_fifo(self):
        self.matrix("make under ninja", "fifo", ["ninja"], "clients-ninja-make", count=6)

    # cargo and jobserver-rs

    def cargo_cc(self, style):
        # cc-rs writes back its implicit slot's token before its compiles and
        # reads one back after them (cc-1.0.73/src/lib.rs:1133-1134, 1202-1203):
        # with it, the build script runs `budget` compiles at once.
        self.seed_cargo_target(self.sandbox)
        self.matrix("cargo + cc-rs 1.0.73 build script", style, ["cargo", "build", "--offline"],
                    "clients-cargo-cc", count=6)

    def test_cargo_cc_rs_pipe(self):
        self.cargo_cc("pipe")

    def test_cargo_cc_rs_fifo(self):
        self.cargo_cc("fifo")

    def test_cargo_build_script_runs_make_pipe(self):
        self.matrix("cargo build script runs make", "pipe", ["cargo", "build", "--offline"],
                    "cargo-runs-make", count=4)

    def test_cargo_build_script_runs_make_fifo(self):
        self.matrix("cargo build script runs make", "fifo", ["cargo", "build", "--offline"],
                    "cargo-runs-make", count=4)

    def jsclient_direct(self, style):
        # NUM_JOBS=5: the pool it would make of its own without a usable jobserver.
        env = dict(self.sandbox.env, NUM_JOBS="5")
        self.matrix("jobserver-rs 0.1.24 client, direct", style, [_seed["jsclient"], "direct", "6"],
                    "clients-under-make", count=6, env=env)

    def test_jobserver_rs_client_direct_pipe(self):
        self.jsclient_direct("pipe")

    def test_jobserver_rs_client_direct_fifo(self):
        self.jsclient_direct("fifo")

    def test_jobserver_rs_client_under_make_pipe(self):
        self.matrix("jobserver-rs 0.1.24 client under make", "pipe", ["make", "-s", "jsclient"],
                    "clients-under-make", count=6)

    def test_jobserver_rs_client_under_make_fifo(self):
        self.matrix("jobserver-rs 0.1.24 client under make", "fifo", ["make", "-s", "jsclient"],
                    "clients-under-make", count=6)

    def test_jobserver_rs_own_tests(self):
        # jobserver 0.1.24's own test suite, if Debian's registry can build it offline.
        row = "jobserver-rs 0.1.24's own tests"
        source = os.path.join(DEBIAN_REGISTRY, "jobserver-0.1.24")
        if not os.path.isdir(source):
            self.record(row, "pipe", "skip")
            self.skipTest(f"{source} is missing: install librust-jobserver-dev")
        project = os.path.join(self.sandbox.root, "jobserver-0.1.24")
        shutil.copytree(source, project)
        shutil.copytree(os.path.join(TOOLS, "jsclient", ".cargo"), os.path.join(project, ".cargo"))
        build = self.run_tree(["cargo", "test", "--offline", "--no-run"], project)
        if build.returncode != 0:
            self.record(row, "pipe", "skip")
            self.record(row, "fifo", "skip")
            missing = re.search(r"no matching package named `([^`]+)`", build.stderr)
            self.skipTest("jobserver 0.1.24's tests do not build offline: their "
                          "dev-dependencies (futures 0.1, tokio-core 0.1, tokio-process 0.2, "
                          "tempdir 0.3) are not in Debian 12's registry (cargo: no "
                          f"`{missing.group(1) if missing else '?'}`); the jsclient rows stand in")
        for style in STYLES:
            self.record(row, style, "FAIL")
            sandbox = self.another_sandbox()
            result = self.run_tree(self.bridge_args(style) + ["cargo", "test", "--offline"],
                                   project, sandbox=sandbox)
            self.assert_clean_output(result)
            self.assert_nothing_lost_in(sandbox, result, BUDGET - 1)
            self.record(row, style, "pass")

    # gcc 12 LTO: the LTRANS units, each a recorded lto1 -fltrans run

    def lto(self, row, style, command, jobs=BUDGET, sandbox=None):
        sandbox = sandbox or self.sandbox
        self.record(row, style, "FAIL")
        project = sandbox.copy_fixture("clients-lto")
        peak = self.run_case(self.bridge_args(style, jobs) + command, project, jobs,
                             sandbox=sandbox, env=self.lto_env(sandbox), at_least=3)
        self.record(row, style, f"{peak}/{jobs}")

    def test_lto_auto_via_make_pipe(self):
        self.lto("gcc 12 -flto=auto via make (LTRANS)", "pipe", ["make", "-s", "LTO=auto"])

    def test_lto_auto_via_make_fifo(self):
        self.lto("gcc 12 -flto=auto via make (LTRANS)", "fifo", ["make", "-s", "LTO=auto"])

    def test_lto_jobserver_via_make_pipe(self):
        self.lto("gcc 12 -flto=jobserver via make (LTRANS)", "pipe",
                 ["make", "-s", "LTO=jobserver"])

    def test_lto_jobserver_via_make_fifo(self):
        self.lto("gcc 12 -flto=jobserver via make (LTRANS)", "fifo",
                 ["make", "-s", "LTO=jobserver"])

    def test_lto_auto_below_ninja_pipe(self):
        self.lto("gcc 12 -flto=auto below ninja (LTRANS)", "pipe", ["ninja", "prog-auto"])

    def test_lto_auto_below_ninja_fifo(self):
        self.lto("gcc 12 -flto=auto below ninja (LTRANS)", "fifo", ["ninja", "prog-auto"])

    def test_lto_jobserver_below_ninja_pipe(self):
        self.lto("gcc 12 -flto=jobserver below ninja (LTRANS)", "pipe",
                 ["ninja", "prog-jobserver"])

    def test_lto_jobserver_below_ninja_fifo(self):
        self.lto("gcc 12 -flto=jobserver below ninja (LTRANS)", "fifo",
                 ["ninja", "prog-jobserver"])

    def lto_run_directly(self, style):
        row = "gcc 12 -flto=auto run directly (LTRANS)"
        self.record(row, style, "FAIL")
        self.record(row, style, f"{self.lto_direct(style)}/{BUDGET}")

    def test_lto_run_directly_pipe(self):
        self.lto_run_directly("pipe")

    def test_lto_run_directly_fifo(self):
        self.lto_run_directly("fifo")

    # CMake and meson: a configure step and a build step, each under its own jobbridge

    def cmake(self, row, style, generator):
        """Configure under one jobbridge, build under another (CMake runs the
        make program it cached at configure, a shim's full path), then build
        again outside jobbridge, where that cached path must still work."""
        self.record(row, style, "FAIL")
        project = self.sandbox.copy_fixture("clients-cmake")
        build = os.path.join(self.sandbox.root, "build")
        configure = self.run_tree(self.bridge_args(style) + ["cmake", "-S", project, "-B", build,
                                                             "-G", generator], self.sandbox.root)
        self.assert_clean_output(configure)
        self.assertNotIn("start ", self.sandbox.read_log())  # configure compiles no slow_*.c
        self.assert_nothing_lost(configure, BUDGET - 1)
        peak = self.run_case(self.bridge_args(style) + ["cmake", "--build", build],
                             self.sandbox.root, BUDGET, count=6)
        outside_log = os.path.join(self.sandbox.root, "outside.log")
        env = dict(self.sandbox.env, JOBLOG=outside_log)
        outside = self.run_tree(["cmake", "--build", build, "--clean-first"], self.sandbox.root,
                                env=env)
        self.assert_clean_output(outside)
        self.assertEqual(len(read_intervals(outside_log)), 6, outside.stdout + outside.stderr)
        self.assert_no_leftovers()
        self.record(row, style, f"{peak}/{BUDGET}")

    def test_cmake_makefiles_pipe(self):
        self.cmake("CMake Makefiles: configure, build, build outside", "pipe", "Unix Makefiles")

    def test_cmake_makefiles_fifo(self):
        self.cmake("CMake Makefiles: configure, build, build outside", "fifo", "Unix Makefiles")

    def test_cmake_ninja_pipe(self):
        self.cmake("CMake Ninja: configure, build, build outside", "pipe", "Ninja")

    def test_cmake_ninja_fifo(self):
        self.cmake("CMake Ninja: configure, build, build outside", "fifo", "Ninja")

    def meson(self, style):
        """meson setup and meson compile, each under its own jobbridge: meson
        looks ninja up in PATH (the shim) and runs it by that full path."""
        row = "meson setup + compile (ninja 1.13.2)"
        self.record(row, style, "FAIL")
        project = self.sandbox.copy_fixture("clients-meson")
        setup = self.run_tree(self.bridge_args(style) + ["meson", "setup", "build"], project)
        self.assert_clean_output(setup)
        self.assertIn("ninja-1.13.2", setup.stdout)
        self.assert_nothing_lost(setup, BUDGET - 1)
        peak = self.run_case(self.bridge_args(style) + ["meson", "compile", "-C", "build"],
                             project, BUDGET, count=6)
        self.record(row, style, f"{peak}/{BUDGET}")

    def test_meson_pipe(self):
        self.meson("pipe")

    def test_meson_fifo(self):
        self.meson("fifo")


class DefectTest(ClientTestCase):
    """Each test pins one defect of the code before the fixes (5ae607f)."""

    def test_d1_a_shim_run_by_its_full_path_runs_the_real_tool(self):
        # Before: the shim found by `command -v` exec'd itself forever.
        row = "D1 shim run by its full path"
        for style in STYLES:
            self.record(row, style, "FAIL")
            peaks = []
            for tool, fixture in (("make", "clients-make"), ("ninja", "clients-ninja")):
                sandbox = self.another_sandbox()
                project = sandbox.copy_fixture(fixture)
                command = ["sh", "-c", f'exec "$(command -v {tool})"']
                peaks.append(self.run_case(self.bridge_args(style) + command, project, BUDGET,
                                           sandbox=sandbox, count=6))
            self.record(row, style, " ".join(f"{peak}/{BUDGET}" for peak in peaks))

    def test_d2_cc_rs_lending_its_implicit_slot_at_j1_does_not_deadlock(self):
        # cc-rs writes a token it never read before its compiles and reads one
        # after them. Before: jobbridge dropped that token as surplus ("never
        # took"), and at -j1 cc-rs then waited forever for a token.
        row = "D2 cc-rs lends its slot, -j1"
        for style in STYLES:
            self.record(row, style, "FAIL")
            sandbox = self.another_sandbox()
            self.seed_cargo_target(sandbox)
            project = sandbox.copy_fixture("clients-cargo-cc")
            peak = self.run_case(self.bridge_args(style, 1) + ["cargo", "build", "--offline"],
                                 project, 1, sandbox=sandbox, count=6)
            self.record(row, style, f"{peak}/1")

    def test_d3_fifo_style_gives_make_4_3_two_descriptors(self):
        # Before: the make shim passed one O_RDWR fd as both ends ("3,3"); a
        # jobserver 0.1.24 client below make then closed it twice and aborted
        # with "IO Safety violation".
        row = "D3 fifo: make's recipe gets R != W"
        self.record(row, "fifo", "FAIL")
        project = self.sandbox.copy_fixture("clients-make")
        result = self.run_tree(self.bridge_args("fifo") + ["make", "-s", "show-jobserver"],
                               project)
        self.assert_clean_output(result)
        seen = json.loads(result.stdout.strip().splitlines()[-1])
        self.assertIn("read_fd", seen, seen)
        self.assertNotEqual(seen["read_fd"], seen["write_fd"], seen)
        for end, access in (("read", "readable"), ("write", "writable")):
            self.assertTrue(seen[end]["open"], seen)
            self.assertTrue(seen[end]["fifo"], seen)
            self.assertTrue(seen[end][access], seen)
        self.assert_nothing_lost(result, BUDGET - 1)
        peaks = []
        for target in ("jsclient", "cargo"):
            sandbox = self.another_sandbox()
            project = sandbox.copy_fixture("clients-under-make")
            cargo_project = sandbox.copy_fixture("clients-cargo-cc")
            self.seed_cargo_target(sandbox)
            command = ["make", "-s", target, f"CARGO_PROJECT={cargo_project}"]
            peaks.append(self.run_case(self.bridge_args("fifo") + command, project, BUDGET,
                                       sandbox=sandbox, count=6))
        self.record(row, "fifo", " ".join(f"{peak}/{BUDGET}" for peak in peaks))

    def test_d4_make_by_path_or_script_in_fifo_style_and_adapt(self):
        # Before: make 4.3 run past the shims got fifo:PATH and aborted with
        # "invalid --jobserver-auth string"; `jobbridge adapt` refused a make
        # script by another name than make.
        row = "D4 make by path/script, adapt"
        self.record(row, "fifo", "FAIL")
        make = os.path.realpath(shutil.which("make", path=self.sandbox.env["PATH"]))
        peaks = []
        for command in ([make, "-s"], ["./rules", "-s"]):
            sandbox = self.another_sandbox()
            project = sandbox.copy_fixture("clients-make")
            peaks.append(self.run_case(self.bridge_args("fifo") + command, project, BUDGET,
                                       sandbox=sandbox, count=6))
        for command in ([make, "-s"], ["./rules", "-s"]):
            sandbox = self.another_sandbox()
            project = sandbox.copy_fixture("clients-make")
            args = self.bridge_args("fifo", BUDGET, "--no-adapters") + [self.bridge, "adapt",
                                                                        "--", *command]
            peaks.append(self.run_case(args, project, BUDGET, sandbox=sandbox, count=6))
        self.record(row, "fifo", " ".join(f"{peak}/{BUDGET}" for peak in peaks))

    def test_d5_lto_below_the_ninja_shim_keeps_the_budget(self):
        # Before: ninja got only fifo:, which gcc 12 cannot read: -flto=auto
        # ran as many LTRANS units as CPUs, -flto=jobserver warned.
        row = "D5 LTO below ninja, -j1 / -j2"
        self.record(row, "pipe", "FAIL")
        cells = []
        for target in ("prog-auto", "prog-jobserver"):
            for jobs in (1, 2):
                sandbox = self.another_sandbox()
                project = sandbox.copy_fixture("clients-lto")
                peak = self.run_case(self.bridge_args("pipe", jobs) + ["ninja", target], project,
                                     jobs, sandbox=sandbox, env=self.lto_env(sandbox), at_least=3)
                cells.append(f"{peak}/{jobs}")
        self.record(row, "pipe", " ".join(cells))

    def nested(self, client, sandbox, command_prefix, make_flags=()):
        project = sandbox.copy_fixture("clients-nested")
        cargo_project = sandbox.copy_fixture("clients-cargo-cc")
        if client == "cargo":
            self.seed_cargo_target(sandbox)
        args = command_prefix + ["make", *make_flags, "-s", "-C", "outer", f"CLIENT={client}",
                                 f"CARGO_PROJECT={cargo_project}"]
        return self.run_tree(args, project, sandbox=sandbox)

    def test_d6_clients_below_an_inner_make_use_its_pool(self):
        # jobbridge -j1 -- make -C outer, whose recipe runs make -j2 (a pool of
        # its own): the jobserver-rs clients below use the inner pool, 2 at
        # once, as under plain make. Before: CARGO_MAKEFLAGS still named the
        # root's pool, which jobserver-rs reads first (a deadlock at -j1).
        row = "D6 clients below an inner make -j2"
        self.record(row, "pipe", "FAIL")
        # Under plain make -j3 the inner make's pool wins too (2 at once, not
        # 3), and make prints "-j2 forced in submake" there as well.
        plain = self.nested("jsclient", self.sandbox, [], ["-j3"])
        plain_output = plain.stdout + plain.stderr
        self.assertEqual(plain.returncode, 0, plain_output)
        allowed = [name for name, pattern in FORBIDDEN if pattern.search(plain_output)]
        self.assertEqual(self.assert_within(self.sandbox.log, 2, count=6), 2)
        self.assert_no_leftovers()
        peaks = []
        for client in ("jsclient", "cargo"):
            sandbox = self.another_sandbox()
            result = self.nested(client, sandbox, self.bridge_args("pipe", 1))
            self.assert_clean_output(result, allowed)
            peaks.append(self.assert_within(sandbox.log, 2, count=6))
            self.assert_nothing_lost_in(sandbox, result, 0)
        self.record(row, "pipe", " ".join(f"{peak}/2" for peak in peaks))

    def test_d7_direct_clients_in_fifo_style_keep_the_budget(self):
        # Before: fifo style gave jobserver 0.1.24 and gcc 12 only fifo:PATH,
        # which neither reads: they ran their own -j (NUM_JOBS=5, or the CPUs).
        row = "D7 direct clients, fifo"
        self.record(row, "fifo", "FAIL")
        env = dict(self.sandbox.env, NUM_JOBS="5")
        project = self.sandbox.copy_fixture("clients-under-make")
        peaks = [self.run_case(self.bridge_args("fifo") + [_seed["jsclient"], "direct", "8"],
                               project, BUDGET, env=env, count=8)]
        for jobs in (1, 2):
            peaks.append(self.lto_direct("fifo", jobs, self.another_sandbox()))
        self.record(row, "fifo", f"{peaks[0]}/{BUDGET} {peaks[1]}/1 {peaks[2]}/2")

if __name__ == "__main__":
    unittest.main()
