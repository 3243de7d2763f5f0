"""A socket-protocol client written from docs/PROTOCOL.md alone (connect, read
one byte, run the job, close), for the integration tests.

usage: socket_client.py NAME SECONDS [COUNT]
  Logs "pid NAME PID" first. Runs COUNT jobs (default 1) one after another,
  each on a slot of its own:
  logs "want NAME-i T" to $JOBLOG before connecting and "grant NAME-i T" when
  the slot arrives, then runs job.sh (which logs its own start and end) while
  it holds the slot. Exits 3 if the
  jobserver goes away.
"""

import os
import socket
import subprocess
import sys
import time


def log(kind, name):
    with open(os.environ["JOBLOG"], "a") as f:
        f.write(f"{kind} {name} {time.time_ns()}\n")


def run_job(name, seconds):
    log("want", name)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(os.environ["JOBSERVERV2"])
        if len(s.recv(1)) != 1:
            print(f"{name}: the jobserver went away", file=sys.stderr)
            sys.exit(3)
        log("grant", name)  # the slot is in use from here, before job.sh starts
        subprocess.run([os.environ["JOB"], name, seconds], check=True)


def main():
    name, seconds = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    with open(os.environ["JOBLOG"], "a") as f:
        f.write(f"pid {name} {os.getpid()}\n")
    for i in range(count):
        run_job(f"{name}.{i}", seconds)


if __name__ == "__main__":
    main()
