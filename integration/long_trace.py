"""A trace as `jobbridge --trace` writes it for a long build, made up: for
integration/test_report.py and scripts/bench_report.py."""

import random


def overall_utilisation(events):
    """Slot-seconds in use over slot-seconds of the budget, over the run."""
    budget = next(e["args"]["slots"] for e in events if e["name"] == "budget")
    # In trace order among equal times: the last sample of a time holds.
    samples = sorted(((e["ts"], sum(e["args"].values())) for e in events
                      if e["ph"] == "C" and e["name"] == "in use"), key=lambda s: s[0])
    end = max(e.get("ts", 0) + e.get("dur", 0) for e in events)
    used = sum(value * (nxt - ts) for (ts, value), (nxt, _) in
               zip(samples, samples[1:] + [(end, 0)]))
    return used / (budget * end)


def long_trace(grants, holders, budget, hours):
    """The events of a long build: `budget` lanes each running jobs back to
    back (60 % to 100 % of a lane's turn), each by one of `holders` tool
    invocations, and an `in use` sample at every grant and release."""
    rng = random.Random(7)
    end = int(hours * 3600e6)
    events = [{"ph": "M", "pid": 1, "name": "jobbridge_clock",
               "args": {"epoch_us_at_ts_0": 0, "version": 1}},
              {"ph": "C", "pid": 1, "ts": 0, "name": "budget", "args": {"slots": budget}}]
    events += [{"ph": "M", "pid": 1, "tid": t + 2, "name": "thread_name",
                "args": {"name": f"legacy: pid {1000 + t} make -C dir{t}"}}
               for t in range(holders)]
    turn = end // (grants // budget)
    changes = []
    for lane in range(budget):
        for k in range(grants // budget):
            start, dur = k * turn, int(turn * rng.uniform(0.6, 1.0))
            events.append({"ph": "X", "pid": 1, "tid": rng.randrange(holders) + 2, "ts": start,
                           "dur": dur, "name": "slot", "cat": "legacy"})
            changes += [(start, 1), (start + dur, -1)]
    in_use = 0
    for ts, change in sorted(changes):
        in_use += change
        events.append({"ph": "C", "pid": 1, "ts": ts, "name": "in use",
                       "args": {"legacy": in_use}})
    return events
