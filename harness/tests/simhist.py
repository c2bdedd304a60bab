"""Histories of a simulated linearizable store, for testing the checkers.

Every op takes effect at one instant between its call and its return, in the
order of those instants, on a sequential model of craft's state machine (a
key-value map and a running total). Such a history is linearizable by
construction, whatever the concurrency, and whichever unknown ops did or did
not take effect."""

from __future__ import annotations

import random
from dataclasses import dataclass

from pytest_craft.history import History, parse_int

ALL_KINDS = ("put", "get", "cas", "incr", "del", "add", "total")


@dataclass
class Planned:
    n: int
    client: int
    kind: str
    key: str | None
    args: tuple
    invoke: int
    point: int      # the instant it takes effect
    complete: int
    fate: str       # ok, fail, unknown-applied, unknown-lost


def simulate(rnd: random.Random, *, clients: int = 3, n_ops: int = 40,
             keys: int = 2, kinds=ALL_KINDS, unknown_pct: int = 0,
             fail_pct: int = 0, sequential: bool = False,
             powers_of_two: bool = False, report_total_pct: int = 100,
             slow_pct: int = 0, initial_total: int = 0,
             add_range: tuple[int, int] = (-5, 20)):
    """Returns (history, final_kv, final_total, applied) where applied is the
    list of Planned ops that took effect, in order.

    Time is in microseconds (times 1000 in the history's nanoseconds).
    sequential: no two ops overlap. slow_pct: ops whose effect comes late in
    a long interval (more concurrency). report_total_pct: adds whose answer
    carries the running total. add_range: the range of an add's first
    operand (the second is 0..20)."""
    ends = [0] * clients
    last_end = 0
    written: dict[str, list[str]] = {}
    plan: list[Planned] = []
    add_bit = 0
    for n in range(n_ops):
        c = rnd.randrange(clients)
        kind = kinds[rnd.randrange(len(kinds))]
        key = None if kind in ("add", "total") else f"k{rnd.randrange(keys)}"
        if kind == "put":
            args = (f"v{n}",)
            written.setdefault(key, []).append(f"v{n}")
        elif kind == "cas":
            old = [""] + written.get(key, [])
            args = (old[rnd.randrange(len(old))] if rnd.random() < 0.8
                    else old[-1], f"v{n}")
            written.setdefault(key, []).append(f"v{n}")
        elif kind == "incr":
            args = (rnd.randint(-3, 5),)
        elif kind == "add":
            if powers_of_two:
                d = 1 << add_bit
                add_bit += 1
                args = (d // 2, d - d // 2)
            else:
                args = (rnd.randint(*add_range), rnd.randint(0, 20))
        else:
            args = ()
        start = last_end if sequential else ends[c]
        invoke = start + rnd.randint(1, 30)
        span = 2000 if rnd.randrange(100) < slow_pct else 40
        point = invoke + rnd.randint(1, span)
        complete = point + rnd.randint(1, 40)
        ends[c] = complete
        last_end = max(last_end, complete)
        r = rnd.randrange(100)
        fate = ("unknown-applied" if r < unknown_pct / 2 else
                "unknown-lost" if r < unknown_pct else
                "fail" if r < unknown_pct + fail_pct else "ok")
        plan.append(Planned(n, c, kind, key, args, invoke, point, complete,
                            fate))

    kv: dict[str, str] = {}
    total = initial_total
    results = {}
    applied = []
    for p in sorted(plan, key=lambda p: (p.point, p.n)):
        if p.fate in ("fail", "unknown-lost"):
            continue
        k = p.kind
        if k == "put":
            kv[p.key] = p.args[0]
            res = "OK"
        elif k == "get":
            res = kv.get(p.key)
        elif k == "cas":
            cur = kv.get(p.key)
            res = cur == p.args[0] or (cur is None and p.args[0] == "")
            if res:
                kv[p.key] = p.args[1]
        elif k == "incr":
            cur = kv.get(p.key)
            v = 0 if cur is None else parse_int(cur)
            if v is None:
                p.fate = "fail"  # craft: INVALID "not a number", no change
                continue
            kv[p.key] = str(v + p.args[0])
            res = v + p.args[0]
        elif k == "del":
            res = p.key in kv
            kv.pop(p.key, None)
        elif k == "add":
            total += p.args[0] + p.args[1]
            res = {"sum": p.args[0] + p.args[1],
                   "total": total if rnd.randrange(100) < report_total_pct
                   else None}
        else:
            res = total
        results[p.n] = res
        applied.append(p)

    h = History(meta={"initial_total": initial_total})
    for p in sorted(plan, key=lambda p: (p.invoke, p.n)):
        out = "unknown" if p.fate.startswith("unknown") else p.fate
        h.record(p.client, p.kind, p.key, p.args, invoke_ns=p.invoke * 1000,
                 complete_ns=p.complete * 1000, outcome=out,
                 value=results.get(p.n) if out == "ok" else None,
                 process=f"client-{p.client}")
    return h, dict(kv), total, applied
