"""What the Robust Jobserver tests share: building the C client
(sysvsem_client.c, zig's std.job calls), and reading a set through ctypes."""

import ctypes
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
LIBC = ctypes.CDLL(None, use_errno=True)
IPC_RMID, GETVAL, GETNCNT, SETVAL, IPC_PRIVATE, IPC_CREAT = 0, 12, 14, 16, 0, 0o1000


def semctl(semid, command, value=None):
    """semctl(semid, 0, command[, value]): its result, or -errno."""
    args = [ctypes.c_int(semid), ctypes.c_int(0), ctypes.c_int(command)]
    if value is not None:
        args.append(ctypes.c_int(value))
    result = LIBC.semctl(*args)
    return result if result >= 0 else -ctypes.get_errno()


def build_sysvsem_client(bin_dir):
    """Compiles sysvsem_client.c into `bin_dir`; returns its path."""
    client = os.path.join(bin_dir, "sysvsem_client")
    sanitize = os.environ.get("JOBBRIDGE_CC_FLAGS", "").split()
    cc = subprocess.run(["cc", "-std=c99", "-Wall", "-Werror", *sanitize, "-o", client,
                         os.path.join(HERE, "sysvsem_client.c")],
                        capture_output=True, text=True)
    if cc.returncode != 0:
        raise RuntimeError("cannot build sysvsem_client.c: " + cc.stderr)
    return client
