"""A brute-force linearizability checker, written independently of
checkers.py, to compare verdicts on small histories.

It searches orders of the whole history (no per-key split) over one model
of craft's state machine (the key-value map and the running total), with
memoization on (ops placed, state). Exponential: a dozen ops at most."""

from __future__ import annotations

import re

_NUM = re.compile(r"[+-]?[0-9]{1,19}")


def _apply(state, op):
    """The state after op, or None if op cannot take effect with its result."""
    kv, total = state
    kv = dict(kv)
    known = op.outcome == "ok"
    v = op.value
    k = op.kind
    if k == "put":
        kv[op.key] = op.args[0]
    elif k == "get":
        cur = kv.get(op.key)
        if not (v == cur or (v == "" and cur is None)):
            return None
    elif k == "cas":
        cur = kv.get(op.key)
        match = cur == op.args[0] or (cur is None and op.args[0] == "")
        if known and v != match:
            return None
        if match:
            kv[op.key] = op.args[1]
    elif k == "incr":
        cur = kv.get(op.key)
        if cur is not None and not _NUM.fullmatch(cur):
            if known:
                return None
        else:
            new = (0 if cur is None else int(cur)) + op.args[0]
            if known and v != new:
                return None
            kv[op.key] = str(new)
    elif k == "del":
        if known and v != (op.key in kv):
            return None
        kv.pop(op.key, None)
    elif k == "add":
        total += op.args[0] + op.args[1]
        if known and v["total"] is not None and v["total"] != total:
            return None
        if known and v["sum"] is not None and v["sum"] != op.args[0] + op.args[1]:
            return None
    elif k == "total":
        if v != total:
            return None
    return (tuple(sorted(kv.items())), total)


def brute_linearizable(ops, initial_total: int = 0) -> bool:
    ops = [o for o in ops if o.effective_outcome() != "fail" and not
           (o.effective_outcome() == "unknown" and o.kind in ("get", "total"))]
    n = len(ops)
    ok = frozenset(i for i in range(n) if ops[i].outcome == "ok")
    preds = [frozenset(j for j in ok if ops[j].complete_ns < ops[i].invoke_ns)
             for i in range(n)]
    seen = set()

    def rec(placed, state):
        if ok <= placed:
            return True
        if (placed, state) in seen:
            return False
        seen.add((placed, state))
        for i in range(n):
            if i not in placed and preds[i] <= placed:
                ns = _apply(state, ops[i])
                if ns is not None and rec(placed | {i}, ns):
                    return True
        return False

    return rec(frozenset(), ((), initial_total))
