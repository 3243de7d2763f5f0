"""The client library as a user installs and links it: cmake --install, then
pkg-config, then a C program under jobbridge and under a plain make."""

import os
import subprocess
import sys
import unittest

from harness import BridgeTestCase, max_overlap, HERE

CLIENT = os.path.join(HERE, "socket_client.py")


class ClientLibraryTest(BridgeTestCase):
    def setUp(self):
        super().setUp()
        build = os.environ.get("JOBBRIDGE_BUILD_DIR")
        self.assertTrue(build and os.path.isdir(build), "JOBBRIDGE_BUILD_DIR names the build")
        prefix = os.path.join(self.sandbox.root, "prefix")
        install = subprocess.run(["cmake", "--install", build, "--prefix", prefix],
                                 capture_output=True, text=True)
        self.assertEqual(install.returncode, 0, install.stderr)
        pc_dirs = [os.path.join(prefix, d, "pkgconfig") for d in ("lib", "lib64",
                                                                  "lib/x86_64-linux-gnu")]
        env = dict(os.environ, PKG_CONFIG_PATH=":".join(pc_dirs))
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "jobbridge-client"],
                               capture_output=True, text=True, env=env)
        self.assertEqual(flags.returncode, 0, flags.stderr)
        self.c_client = os.path.join(self.sandbox.root, "c_client")
        sanitize = os.environ.get("JOBBRIDGE_CC_FLAGS", "").split()
        cc = subprocess.run(["cc", "-std=c99", "-Wall", "-Werror", *sanitize, "-o", self.c_client,
                             os.path.join(HERE, "c_client.c"), *flags.stdout.split()],
                            capture_output=True, text=True)
        self.assertEqual(cc.returncode, 0, cc.stderr)

    def test_c_clients_share_the_budget_with_make_and_python_clients(self):
        self.sandbox.copy_fixture("make-recursive")
        script = ("make -s -C make-recursive JOB_SECONDS=0.3 & "
                  + " ".join(f"{self.c_client} c{i} 0.3 3 &" for i in range(3))
                  + " ".join(f" {sys.executable} {CLIENT} py{i} 0.3 2 &" for i in range(2))
                  + " wait")
        result = self.sandbox.run([self.bridge, "-v", "-j4", "--", "sh", "-c", script])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("c_client: using socket", result.stderr)
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 12 + 9 + 4)
        self.assertEqual(max_overlap(intervals), 4)
        self.assert_nothing_lost(result, 3)

    def test_c_clients_fall_back_to_make_s_jobserver(self):
        project = self.sandbox.copy_fixture("make-c-client")
        result = self.sandbox.run(["make", "-j3", f"C_CLIENT={self.c_client}"], cwd=project)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("c_client: using legacy pipe", result.stderr)
        self.assertNotIn("INTERNAL", result.stderr)
        intervals = self.sandbox.intervals()
        self.assertEqual(len(intervals), 8)
        self.assertEqual(max_overlap(intervals), 3)
        self.assert_no_leftovers()


if __name__ == "__main__":
    unittest.main()
