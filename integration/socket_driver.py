"""Scenarios for test_socket.py, run as jobbridge's COMMAND (so JOBSERVERV2 is
set). Each prints key=value results on stdout; the test checks them.

usage: socket_driver.py MODE [ARGS]
"""

import os
import random
import select
import signal
import socket
import subprocess
import sys
import time

PATH = os.environ.get("JOBSERVERV2", "")
QUIET_S = 0.2  # how long "no grant arrives" is watched for


def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(PATH)
    return s


def granted_within(s, seconds):
    """True when one grant byte arrives within `seconds`; False on silence.
    Raises EOFError when the server closed the connection."""
    ready, _, _ = select.select([s], [], [], seconds)
    if not ready:
        return False
    data = s.recv(1)
    if not data:
        raise EOFError
    return True


def closed_within(s, seconds):
    ready, _, _ = select.select([s], [], [], seconds)
    try:
        return bool(ready) and s.recv(1) == b""
    except ConnectionResetError:
        return True


HOLDER = r'''
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(os.environ["JOBSERVERV2"])
print("connected", flush=True)
b = s.recv(1)
print("held" if b else "server-gone", flush=True)
s.recv(1)  # until the server goes away (or we are killed)
'''


def spawn_holder():
    p = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "connected"
    return p


def kill_handoff():
    holder = spawn_holder()
    assert holder.stdout.readline().strip() == "held"
    waiter = connect()
    assert not granted_within(waiter, QUIET_S), "the budget of 2 gave out a second slot"
    before = time.monotonic()
    holder.kill()
    assert granted_within(waiter, 5), "the killed holder's slot never came back"
    print(f"handoff_ms={(time.monotonic() - before) * 1000:.3f}")
    holder.wait()
    waiter.close()


WORKER = r'''
import os, socket, sys, time, random
log = os.environ["JOBLOG"]
rng = random.Random(os.getpid())
i = 0
while True:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(os.environ["JOBSERVERV2"])
        if not s.recv(1):
            sys.exit(3)
        name = f"w{os.getpid()}.{i}"
        with open(log, "a") as f:
            f.write(f"start {name} {time.time_ns()}\n")
        time.sleep(rng.uniform(0.005, 0.05))
        with open(log, "a") as f:
            f.write(f"end {name} {time.time_ns()}\n")
    i += 1
'''


def close_killed_jobs(pid, stamp):
    """A killed worker's unfinished job ended when it was killed."""
    log = os.environ["JOBLOG"]
    open_jobs = set()
    if not os.path.exists(log):
        return
    with open(log) as f:
        for line in f:
            kind, name, _ = line.split()
            if name.startswith(f"w{pid}."):
                (open_jobs.add if kind == "start" else open_jobs.discard)(name)
    with open(log, "a") as f:
        for name in open_jobs:
            f.write(f"end {name} {stamp}\n")


def random_kills(count):
    rng = random.Random(1234)
    workers = [subprocess.Popen([sys.executable, "-c", WORKER]) for _ in range(6)]
    kills = 0
    while kills < count:
        time.sleep(rng.uniform(0.01, 0.04))
        victim = workers.pop(rng.randrange(len(workers)))
        stamp = time.time_ns()  # its slot cannot come back before the kill
        victim.kill()
        victim.wait()
        close_killed_jobs(victim.pid, stamp)
        kills += 1
        workers.append(subprocess.Popen([sys.executable, "-c", WORKER]))
    for w in workers:
        stamp = time.time_ns()
        w.kill()
        w.wait()
        close_killed_jobs(w.pid, stamp)
    # Every slot must still be there: 3 (the budget of 4 less the command's
    # implicit slot) can be held at once, and not a 4th.
    held = [connect() for _ in range(3)]
    ok = all(granted_within(s, 5) for s in held)
    fourth = connect()
    blocked = not granted_within(fourth, QUIET_S)
    print(f"kills={kills} final_concurrent={3 if ok else 0} fourth_blocked={int(blocked)}")
    for s in held + [fourth]:
        s.close()


def garbage():
    holder = connect()
    assert granted_within(holder, 5)
    waiter = connect()
    assert not granted_within(waiter, QUIET_S)
    holder.sendall(b"x")
    assert closed_within(holder, 5), "the server kept a connection that sent garbage"
    print(f"waiter_granted={int(granted_within(waiter, 5))}")


def bogus_release():
    holder = connect()
    assert granted_within(holder, 5)
    liar = connect()  # waiting, holds nothing
    liar.sendall(b"-")
    assert closed_within(liar, 5), "the server accepted '-' from a client without a slot"
    third = connect()
    kept = not granted_within(third, QUIET_S)  # the holder's slot was not taken from it
    holder.close()
    assert granted_within(third, 5)
    print(f"holder_kept={int(kept)}")


def multi():
    one = connect()
    assert granted_within(one, 5)
    one.sendall(b"+")
    assert granted_within(one, 5), "a second slot on one connection was not granted"
    one.sendall(b"+")
    assert not granted_within(one, QUIET_S), "a third slot from a budget of 3 (2 shared)"
    other = connect()
    assert not granted_within(other, QUIET_S)
    one.sendall(b"-")
    assert granted_within(one, 5), "the older request on the same connection was skipped"
    assert not granted_within(other, QUIET_S)
    one.close()
    assert granted_within(other, 5)
    print("multi=ok")


OTHER_UID = r'''
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
try:
    print("granted" if s.recv(1) else "refused")
except ConnectionResetError:
    print("refused")
'''


def other_uid():
    # Let uid 65534 reach the socket, so that the server's own uid check is
    # what refuses it: open the (throwaway) test folders on the way for search.
    folder = os.path.dirname(PATH)
    while folder != "/":
        if not os.stat(folder).st_mode & 0o001:
            os.chmod(folder, os.stat(folder).st_mode | 0o011)
        folder = os.path.dirname(folder)
    os.chmod(PATH, 0o666)
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          "/usr/bin/python3", "-c", OTHER_UID, PATH],
                         capture_output=True, text=True, timeout=30)
    theirs = out.stdout.strip() or out.stderr.strip()
    mine = connect()
    ours = "granted" if granted_within(mine, 5) else "silence"
    print(f"other_uid={theirs} own_uid={ours}")


def orphan():
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "connected"
    assert holder.stdout.readline().strip() == "held"
    waiter_code = HOLDER.replace('print("held" if b else "server-gone", flush=True)',
                                 'open(os.environ["JOBLOG"], "a").write(('
                                 '"granted" if b else "server-gone") + "\\n")')
    waiter = subprocess.Popen([sys.executable, "-c", waiter_code], stdout=subprocess.PIPE,
                              text=True)
    assert waiter.stdout.readline().strip() == "connected"
    print("orphaned")  # exit with both still waiting on the server


BURST = r'''
import os, socket, sys, time
conns = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.environ["JOBSERVERV2"])
    conns.append(s)
print("connected", flush=True)
for s in conns:  # one after another: take the slot, work a moment, give it back
    if not s.recv(1):
        sys.exit(3)
    time.sleep(0.005)
    s.close()
'''


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def emfile():
    """More connections than jobbridge has fds: it must pause accepting, not
    spin, and still serve every client."""
    import resource
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    bridge = os.getppid()
    start_cpu, start = cpu_seconds(bridge), time.monotonic()
    bursts = [subprocess.Popen([sys.executable, "-c", BURST, "20"], stdout=subprocess.PIPE,
                               text=True) for _ in range(3)]
    statuses = [b.wait(timeout=120) for b in bursts]
    wall, cpu = time.monotonic() - start, cpu_seconds(bridge) - start_cpu
    print(f"nofile={soft} served={sum(s == 0 for s in statuses) * 20} "
          f"bridge_cpu_share={cpu / wall:.3f}")


def many_grants():
    """999 '+' on one connection whose receive buffer is tiny: the server's
    sends fill it at once, and every grant must still arrive."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    s.connect(PATH)
    s.sendall(b"+" * 999)
    got = 0
    s.settimeout(30)
    while got < 1000:
        data = s.recv(4096)
        if not data:
            break
        got += len(data)
    print(f"grants={got}")


MODES = {"emfile": emfile, "many-grants": many_grants, "kill-handoff": kill_handoff, "garbage": garbage, "bogus-release": bogus_release,
         "multi": multi, "other-uid": other_uid, "orphan": orphan}

if __name__ == "__main__":
    if sys.argv[1] == "random-kills":
        random_kills(int(sys.argv[2]))
    else:
        MODES[sys.argv[1]]()
