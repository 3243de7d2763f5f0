"""The clients of the chaos run (test_chaos.py), started by chaos_driver.py.

usage: chaos_client.py MODE SEED CYCLES [ARG]

Every client loops: take a slot, record the hold in $JOBLOG ("start NAME T" /
"end NAME T", one short O_APPEND write each, T from CLOCK_MONOTONIC, so the
stamps of all processes compare), hold it 0-2 ms, give it back. It stops after
CYCLES holds or when $CHAOS_STOP exists. The end of a hold is logged before
the slot is given back and the start after it was taken, so the holds the log
shows are never more than the slots out.

Modes (docs/PROTOCOL.md for the two protocols):
  socket    one connection per hold (JOBSERVERV2); now and then a half-close
            while holding (the slot must stay: it holds on), a flood of '+'
            closed without reading every grant, or two slots on one
            connection with one given back by '-'
  pipe      legacy, --jobserver-auth=R,W: reads a token through a private
            description of R before each hold, writes it back to W
  fifo      legacy, --jobserver-auth=fifo:PATH (run under `jobbridge adapt`,
            which names an inherited pipe as fifo:/proc/self/fd/R)
  recipe    a `+` recipe of a sub-make: holds on the slot make started it
            with, and takes one more token when one is free (never waits for
            it while holding, as make does not)
  submake   a job of the driver that is a sub-make: takes a token, runs
            `make -f $CHAOS_MAKEFILE` through PATH (jobbridge's make shim)
            on it, waits for everything below (a child subreaper, so
            recipes orphaned by a killed make are waited for too: until they
            end they still run on that token), gives the token back. With
            ARG "strike=US" it kills make (or its shim, if make is not
            exec'd yet) US microseconds after starting it.
Exits 3 when the jobserver goes away.
"""

import os
import random
import re
import select
import signal
import socket
import sys
import time

LOG_FD = os.open(os.environ["JOBLOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                 0o644)
STOP = os.environ["CHAOS_STOP"]
PR_SET_CHILD_SUBREAPER = 36
# Waits longer than this are logged as they happen, so a starved client that
# is then killed still shows in the log.
LONG_WAIT_NS = 1_000_000_000


def log(*fields):
    os.write(LOG_FD, (" ".join(str(f) for f in fields) + "\n").encode())


def now():
    return time.monotonic_ns()


class Client:
    def __init__(self, mode, seed, cycles):
        self.mode, self.cycles = mode, cycles
        self.rng = random.Random(f"{seed}/{os.getpid()}")
        self.prefix = f"{mode[0]}{os.getpid()}"
        self.held = 0
        self.max_wait = 0

    def name(self, suffix=""):
        return f"{self.prefix}.{self.held}{suffix}"

    def waited(self, since):
        wait = now() - since
        self.max_wait = max(self.max_wait, wait)
        if wait > LONG_WAIT_NS:
            log("longwait", self.mode, self.name(), wait)

    def hold(self, seconds, name=None):
        """Logs a hold of `seconds` on a slot the caller has taken."""
        name = name or self.name()
        log("start", name, now())
        time.sleep(seconds)
        log("end", name, now())

    def short(self):
        return self.rng.random() * 0.002

    def run(self, one_cycle):
        while self.held < self.cycles and not os.path.exists(STOP):
            one_cycle()
            self.held += 1
        log("maxwait", self.mode, os.getpid(), self.max_wait)


# --- the socket protocol ----------------------------------------------------

def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.connect(os.environ["JOBSERVERV2"])
    return s


def read_grant(s, timeout=None):
    """True for a grant; False when none came within `timeout`; exits 3 when
    the server closed the connection."""
    if timeout is not None and not select.select([s], [], [], timeout)[0]:
        return False
    try:
        data = s.recv(1)
    except ConnectionResetError:
        data = b""
    if not data:
        print(f"chaos_client {os.getpid()}: the jobserver went away", file=sys.stderr)
        sys.exit(3)
    return True


def socket_cycle(c):
    roll = c.rng.random()
    since = now()
    s = connect()
    try:
        if roll < 0.04:  # a flood: many requests, a grant or two read, then a close
            count = c.rng.randint(100, 1000)
            s.sendall(b"+" * count)
            log("flood", c.name(), count)
            read_grant(s)
            c.waited(since)
            c.hold(c.short())
        elif roll < 0.10:  # a half-close while holding: the slot must stay
            read_grant(s)
            c.waited(since)
            s.shutdown(socket.SHUT_WR)
            log("halfclose", c.name(), now())
            c.hold(0.002 + c.rng.random() * 0.008)
        elif roll < 0.16:  # two slots on one connection, one given back by '-'
            read_grant(s)
            c.waited(since)
            s.sendall(b"+")
            log("start", c.name(), now())
            # Never wait for a second slot while holding one without a limit:
            # two such clients would each hold one and wait for the other's.
            if read_grant(s, timeout=0.02):
                c.hold(c.short(), c.name("b"))
                s.sendall(b"-")
            time.sleep(c.short())
            log("end", c.name(), now())
        else:
            read_grant(s)
            c.waited(since)
            c.hold(c.short())
    finally:
        s.close()


# --- the legacy protocol -----------------------------------------------------

def jobserver_word(prefix, form=r".*"):
    """The value of the last MAKEFLAGS word starting with `prefix` whose
    value matches `form` (a fifo-style root names its pool both ways)."""
    words = [w[len(prefix):] for w in os.environ.get("MAKEFLAGS", "").split()
             if w.startswith(prefix) and re.fullmatch(form, w[len(prefix):])]
    if not words:
        sys.exit(f"chaos_client {os.getpid()}: no {prefix} in MAKEFLAGS "
                 f"{os.environ.get('MAKEFLAGS')!r}")
    return words[-1]


def pipe_fds():
    r, w = (int(fd) for fd in jobserver_word("--jobserver-auth=", r"\d+,\d+").split(","))
    return r, w


def private_reader(r, flags=0):
    # A description of our own: make sets O_NONBLOCK on the shared one.
    return os.open(f"/proc/self/fd/{r}", os.O_RDONLY | os.O_CLOEXEC | flags)


def take_token(fd):
    try:
        data = os.read(fd, 1)
    except BlockingIOError:
        return None
    if not data:
        print(f"chaos_client {os.getpid()}: the jobserver pool went away", file=sys.stderr)
        sys.exit(3)
    return data


def give_token(fd, token):
    os.write(fd, token)


def legacy_cycle(c, reader, writer):
    since = now()
    token = take_token(reader)
    c.waited(since)
    c.hold(c.short())
    give_token(writer, token)


def recipe_cycle(c, spare, writer):
    # The recipe's own slot is make's; one more token only when one is free.
    token = take_token(spare)
    log("start", c.name(), now())
    if token is not None:
        c.hold(c.short(), c.name("b"))
        give_token(writer, token)
    time.sleep(c.short())
    log("end", c.name(), now())


def set_subreaper():
    import ctypes  # only here: it is slow to import
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")


def wait_for_all_children():
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def submake(c, strike_us):
    set_subreaper()
    r, w = pipe_fds()
    reader = private_reader(r)
    since = now()
    token = take_token(reader)
    c.waited(since)
    makefile = os.environ["CHAOS_MAKEFILE"]
    pid = os.posix_spawnp("make", ["make", "-s", "-f", makefile, f"SEED={c.rng.random()}"],
                          os.environ)
    if strike_us is not None:
        time.sleep(strike_us / 1e6)
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            exe = ""
        stamp = now()
        os.kill(pid, signal.SIGKILL)
        kind = "shim" if os.path.basename(exe).startswith("jobbridge") else "submake"
        log("kill", kind, pid, stamp)
    wait_for_all_children()
    give_token(w, token)


def main():
    mode, seed, cycles = sys.argv[1], sys.argv[2], int(sys.argv[3])
    arg = sys.argv[4] if len(sys.argv) > 4 else ""
    c = Client(mode, seed, cycles)
    if mode == "socket":
        c.run(lambda: socket_cycle(c))
    elif mode == "pipe":
        r, w = pipe_fds()
        reader = private_reader(r)
        c.run(lambda: legacy_cycle(c, reader, w))
    elif mode == "fifo":
        fd = os.open(jobserver_word("--jobserver-auth=fifo:"), os.O_RDWR | os.O_CLOEXEC)
        c.run(lambda: legacy_cycle(c, fd, fd))
    elif mode == "recipe":
        r, w = pipe_fds()
        spare = private_reader(r, os.O_NONBLOCK)
        c.run(lambda: recipe_cycle(c, spare, w))
    elif mode == "submake":
        submake(c, int(arg.split("=")[1]) if arg.startswith("strike=") else None)
    else:
        sys.exit(f"chaos_client: unknown mode {mode!r}")


if __name__ == "__main__":
    main()
