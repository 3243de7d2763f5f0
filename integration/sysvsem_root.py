"""A tiny Robust Jobserver root for the tests, from docs/PROTOCOL.md alone:
creates a set of one semaphore (mode 0600) with value N, runs COMMAND with
ROBUST_JOBSERVER=sysvsem:ID, then checks that the value came back to N and
removes the set.

usage: sysvsem_root.py N COMMAND...
  Writes the set's id to $SYSVSEM_ROOT_ID (a path) when that is set. Says
  "sysvsem_root: all N units came back" or "sysvsem_root: value V, expected N"
  on stderr. Exits with COMMAND's status, or 5 when units are missing or extra.
"""

import os
import subprocess
import sys

from sysvsem_support import IPC_CREAT, IPC_PRIVATE, IPC_RMID, GETVAL, LIBC, SETVAL, semctl


def main():
    units, command = int(sys.argv[1]), sys.argv[2:]
    semid = LIBC.semget(IPC_PRIVATE, 1, IPC_CREAT | 0o600)
    if semid < 0 or semctl(semid, SETVAL, units) < 0:
        print("sysvsem_root: cannot create the set", file=sys.stderr)
        return 1
    try:
        if os.environ.get("SYSVSEM_ROOT_ID"):
            with open(os.environ["SYSVSEM_ROOT_ID"] + ".tmp", "w") as f:
                f.write(f"{semid}\n")
            os.rename(os.environ["SYSVSEM_ROOT_ID"] + ".tmp", os.environ["SYSVSEM_ROOT_ID"])
        env = dict(os.environ, ROBUST_JOBSERVER=f"sysvsem:{semid}")
        status = subprocess.run(command, env=env).returncode
        status = 128 - status if status < 0 else status  # killed: as a shell says
        value = semctl(semid, GETVAL)
        if value != units:
            print(f"sysvsem_root: value {value}, expected {units}", file=sys.stderr)
            return 5
        print(f"sysvsem_root: all {units} units came back", file=sys.stderr)
        return status
    finally:
        semctl(semid, IPC_RMID)


if __name__ == "__main__":
    sys.exit(main())
