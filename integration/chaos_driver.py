"""The COMMAND of the chaos run (test_chaos.py): keeps CLIENTS client processes
(chaos_client.py) of every kind going under one jobbridge until CYCLES holds
have ended, kills them (and sub-makes, and shims) with SIGKILL at random,
then waits for every process below it, probes the width that is left on both
sides, and prints its counts as key=value words on stdout.

usage: chaos_driver.py SEED BUDGET CLIENTS CYCLES

A legacy token held by a killed direct client of COMMAND's pool is lost for
the rest of the run (README, "When a lost token comes back"), and a pool that
lost every token would starve the legacy side for good. So each kill that
may lose tokens is charged the most it can lose (a pipe client 1, a
sub-make's driver 1), and such kills stop when the charges would reach
BUDGET - 1, leaving the pool at least one token. What a make started through
the shim held, its recipes' included, and what a client started through
`jobbridge adapt` held come back when that invocation ends (per-invocation
pools, docs/LEAKS.md), and killed socket clients lose nothing: those kills
are never limited.

The driver is a child subreaper, so processes orphaned by a kill come back to
it and it can wait for all of them before it ends.
"""

import collections
import ctypes
import fcntl
import os
import random
import select
import signal
import socket
import struct
import sys
import termios
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "chaos_client.py")
PR_SET_CHILD_SUBREAPER = 36
KILL_EVERY_CYCLES = 40  # about one kill per this many holds
# What a kill of each kind of process may lose (the module doc).
WORST_LOSS = {"socket": 0, "pipe": 1, "fifo": 0, "recipe": 0, "submake": 1, "make": 0,
              "shim": 0}


def now():
    return time.monotonic_ns()


def log(*fields):
    with open(os.environ["JOBLOG"], "a") as f:
        f.write(" ".join(str(x) for x in fields) + "\n")


class LogReader:
    """Follows $JOBLOG: the holds that ended, the holds open per pid, and the
    kill and flood lines the clients write."""

    def __init__(self, path):
        self.path, self.offset, self.partial = path, 0, b""
        self.ended = 0
        self.open = collections.defaultdict(dict)  # pid -> {name: start}
        self.floods = self.half_closes = 0
        self.client_kills = []  # (kind, pid, stamp) from sub-make drivers' strikes

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            self.take(line.decode().split())

    def take(self, parts):
        kind = parts[0]
        if kind in ("start", "end"):
            name = parts[1]
            pid = int(name[1:].split(".")[0])
            if kind == "start":
                self.open[pid][name] = int(parts[2])
            else:
                self.ended += 1
                self.open[pid].pop(name, None)
        elif kind == "flood":
            self.floods += 1
        elif kind == "halfclose":
            self.half_closes += 1
        elif kind == "kill":
            self.client_kills.append((parts[1], int(parts[2]), int(parts[3])))


def children_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def descendants(pid):
    found, todo = [], children_of(pid)
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children_of(p))
    return found


def classify(pid, bridge):
    """The kind of a process of the tree: a client mode, "make", "shim"
    (jobbridge's binary before it exec'd the tool) or None."""
    try:
        exe = os.path.realpath(f"/proc/{pid}/exe")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return None
    if exe == bridge:
        return "shim"
    if os.path.basename(exe) == "make":
        return "make"
    for i, arg in enumerate(argv[:-1]):
        if arg.endswith(b"chaos_client.py"):
            return argv[i + 1].decode()
    return None


def is_dead(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


class Driver:
    def __init__(self, seed, budget, clients, cycles):
        self.rng = random.Random(seed)
        self.seed, self.budget, self.clients, self.cycles = seed, budget, clients, cycles
        self.bridge = os.path.realpath(os.environ["JOBBRIDGE"])
        self.env = dict(os.environ)
        self.reader = LogReader(os.environ["JOBLOG"])
        self.running = {}  # pid -> mode, the driver's own children
        self.kills = collections.Counter()
        self.charged = 0  # worst-case tokens the legacy kills may have lost
        self.sure_lost = 0  # tokens certainly lost: a legacy hold open at its kill
        self.closed_kills = 0
        self.seen_client_kills = 0
        self.strikes = 0  # sub-make drivers told to kill their make

    # --- starting ---------------------------------------------------------

    def spawn(self, mode, extra=()):
        cycles = str(self.rng.randint(10, 60))
        argv = [sys.executable, "-S", CLIENT, mode, str(self.seed), cycles, *extra]
        if mode == "fifo":  # the adapter names the pool as fifo:/proc/self/fd/R
            argv = [self.bridge, "adapt", "--", *argv]
        pid = os.posix_spawn(argv[0], argv, self.env)
        self.running[pid] = mode
        return pid

    def spawn_random(self):
        roll = self.rng.random()
        if roll < 0.55:
            return self.spawn("socket")
        if roll < 0.80:
            return self.spawn("pipe")
        if roll < 0.92:
            return self.spawn("fifo")
        # A sub-make; now and then one whose make (or its shim) is killed at
        # once, when it is the sub-makes' turn to be killed.
        if self.rng.random() < 0.3 and self.legacy_turn() == "submake":
            self.charged += WORST_LOSS["make"]
            self.strikes += 1
            return self.spawn("submake", [f"strike={self.rng.randint(0, 3000)}"])
        return self.spawn("submake")

    # --- killing ----------------------------------------------------------

    def may_lose(self, tokens):
        return self.charged + tokens <= self.budget - 2

    def legacy_turn(self):
        """Which kind of legacy process the next kill that may lose tokens
        is for: sub-makes and clients take turns, while the charges allow."""
        submakes = self.kills["make"] + self.kills["submake"] + self.strikes
        clients = self.kills["pipe"] + self.kills["fifo"] + self.kills["recipe"]
        for turn in (["submake", "client"] if submakes <= clients else ["client", "submake"]):
            if self.may_lose(1):  # a pipe client, or a sub-make's driver
                return turn
        return None

    def kill_random(self):
        roll = self.rng.random()
        if roll < 0.15:
            return self.strike_shim()
        turn = self.legacy_turn() if roll >= 0.75 else None
        kinds = {None: ("socket",), "client": ("pipe", "fifo", "recipe"),
                 "submake": ("make", "submake")}[turn]
        victims = [(pid, kind) for pid in descendants(os.getpid())
                   if (kind := classify(pid, self.bridge)) in kinds]
        if turn == "client" and self.rng.random() < 0.5:
            # Half the time one caught holding, so that tokens are lost and
            # the exit report has to name them.
            self.reader.poll()
            victims = [v for v in victims if self.reader.open.get(v[0])] or victims
        if victims:
            self.kill(*self.rng.choice(victims))

    def strike_shim(self):
        # `jobbridge adapt` execs the client within a millisecond or so:
        # start one and kill it if it is still the shim a moment later (a
        # client just exec'd, which holds nothing yet, is left alone).
        pid = self.spawn("fifo")
        time.sleep(self.rng.random() * 0.001)
        if classify(pid, self.bridge) == "shim":
            self.kill(pid, "shim")

    def kill(self, pid, kind):
        self.reader.poll()
        held = dict(self.reader.open.get(pid, {}))
        stamp = now()
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        log("killed", kind, pid, stamp)
        self.kills[kind] += 1
        self.charged += WORST_LOSS[kind]
        if kind == "pipe" and held:
            self.sure_lost += 1
        if kind == "submake" and children_of(pid):
            self.sure_lost += 1  # it took its token before it started make
        self.close_holds(pid, stamp)

    def close_holds(self, pid, stamp):
        """Ends the holds a killed process left open at its kill (its slot
        cannot have gone to anyone before). Waits for it to die, so that no
        line of its own comes after."""
        deadline = time.monotonic() + 10
        while not is_dead(pid) and time.monotonic() < deadline:
            time.sleep(0.0005)
        self.reader.poll()
        for name, start in self.reader.open.pop(pid, {}).items():
            log("end", name, max(stamp, start))
            self.closed_kills += 1

    # --- the run ----------------------------------------------------------

    def reap(self):
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.running.pop(pid, None)

    def account_client_kills(self):
        # Strikes by sub-make drivers: a make that was still its shim held
        # nothing, so its charge is given back.
        for kind, pid, stamp in self.reader.client_kills[self.seen_client_kills:]:
            self.kills[kind] += 1
            self.strikes -= 1
            if kind == "shim":
                self.charged -= WORST_LOSS["make"]
            self.close_holds(pid, stamp)
        self.seen_client_kills = len(self.reader.client_kills)

    def run(self):
        next_kill = self.rng.expovariate(1 / KILL_EVERY_CYCLES)
        while self.reader.ended < self.cycles:
            self.reap()
            while len(self.running) < self.clients:
                self.spawn_random()
            self.reader.poll()
            self.account_client_kills()
            if self.reader.ended >= next_kill:
                self.kill_random()
                next_kill = self.reader.ended + self.rng.expovariate(1 / KILL_EVERY_CYCLES)
            time.sleep(0.002)
        open(os.environ["CHAOS_STOP"], "w").close()
        wait_all()
        self.reader.poll()
        self.account_client_kills()

    def probe(self):
        """The width left: how many slots sockets get at once, then how many
        tokens sit in the legacy pool once they are given back."""
        conns = [connect() for _ in range(self.budget)]
        granted, last = set(), time.monotonic()
        while len(granted) < self.budget - 1 and time.monotonic() - last < 1.0:
            ready, _, _ = select.select([c for c in conns if c not in granted], [], [], 0.1)
            for c in ready:
                if c.recv(1):
                    granted.add(c)
                    last = time.monotonic()
        # One more must not come: the command holds the budget's last slot.
        extra = select.select([c for c in conns if c not in granted], [], [], 0.2)[0]
        for c in conns:
            c.close()
        r = int(os.environ["MAKEFLAGS"].split("--jobserver-auth=")[1].split()[0].split(",")[0])
        deadline, in_pool = time.monotonic() + 5, -1
        while time.monotonic() < deadline:
            in_pool = struct.unpack("i", fcntl.ioctl(r, termios.FIONREAD, b"\0" * 4))[0]
            if in_pool >= len(granted):
                break
            time.sleep(0.01)
        return len(granted), len(extra), in_pool


def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.connect(os.environ["JOBSERVERV2"])
    return s


def wait_all():
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def main():
    seed, budget, clients, cycles = (int(a) for a in sys.argv[1:5])
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")
    driver = Driver(seed, budget, clients, cycles)
    driver.run()
    probe_socket, probe_extra, probe_legacy = driver.probe()
    k = driver.kills
    legacy_kills = k["pipe"] + k["fifo"] + k["recipe"]
    print(f"cycles={driver.reader.ended} kills={sum(k.values())} socket_kills={k['socket']} "
          f"legacy_kills={legacy_kills} submake_kills={k['make'] + k['submake']} "
          f"shim_kills={k['shim']} half_closes={driver.reader.half_closes} "
          f"floods={driver.reader.floods} charged={driver.charged} sure_lost={driver.sure_lost} "
          f"closed_by_kill={driver.closed_kills} probe_socket={probe_socket} "
          f"probe_extra={probe_extra} probe_legacy={probe_legacy}", flush=True)


if __name__ == "__main__":
    main()
