"""Checkers that judge a recorded history (see history.py) and cluster state.

Each returns a `CheckResult` whose verdict is "ok", "violation" (the history
proves the system wrong) or "unknown" (the checker could not decide, and says
why: a time limit, missing input). A checker never turns "could not decide"
into "ok".

  check_linearizable      put/get/cas/incr/del per key and the running total
  check_election_safety   at most one leader per term
  check_no_lost_writes    every acknowledged write is in the final state
  check_no_duplicates     no add applied twice (subset-sum over unknown adds)
  check_convergence       all nodes at the same applied index and digest
  check_all               whichever of these the inputs allow

Linearizability (Herlihy & Wing) is checked with the Wing-Gong search as
improved by Lowe and used by Porcupine and Knossos: the history's call and
return events in time order form a doubly linked list; the search repeatedly
tries to linearize an op whose call comes before the first pending return,
applying it to a sequential model, and backtracks when it reaches the return
of an op it has not linearized. A cache of (set of linearized ops, model
state) prunes every configuration seen before, which turns the exponential
search into one proportional to the states actually reachable. The history
is first split per key (P-compositionality: a history is linearizable iff
each object's sub-history is), so each search is small.

  * fail ops never took effect: they are dropped;
  * unknown ops may take effect at any time after their call, or never: their
    return is at +infinity. Trying each of them at every step would multiply
    the search by every subset of them, so they are only tried in a chain
    just before an ok op that needs them (see _search for why that loses
    nothing). The search ends as soon as every ok op is linearized;
  * reads whose outcome is unknown observed nothing: dropped.

Measured on 2 cores (harness/tests/test_checkers.py has the 10,000-op case):
10,000 ops of 5 clients on 20 keys and the running total, with 3-20% unknown
outcomes, check in 0.1-0.7 s; a stale read planted in them is found in
0.1-0.3 s. Positive addends keep the total's search small (the total only
grows); with negative ones and hundreds of unknown adds it can time out.
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

try:  # as part of the package, and as `python3 checkers.py FILE` too
    from .history import History, Observation, Op, parse_int
except ImportError:  # pragma: no cover - run as a script
    from history import History, Observation, Op, parse_int  # type: ignore

OK = "ok"
VIOLATION = "violation"
UNKNOWN = "unknown"

# The partition of the running total (adds and total reads) in messages.
TOTAL_KEY = "<total>"

# How many ops an explanation lists at most, so that a message stays readable.
EXPLAIN_OPS = 8


@dataclass
class CheckResult:
    checker: str
    verdict: str           # ok / violation / unknown
    message: str           # first line a summary; more lines explain
    elapsed_s: float = 0.0
    figures: dict = field(default_factory=dict)   # numbers for the report
    details: dict = field(default_factory=dict)   # structured explanation

    @property
    def passed(self) -> bool:
        return self.verdict == OK

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"{self.checker}: {self.verdict} ({self.elapsed_s:.3f} s): "
                f"{self.message}")


# ---------------------------------------------------------------------------
# Inputs


def _ops_of(history: History | Iterable[Op]) -> list[Op]:
    return history.ops if isinstance(history, History) else list(history)


def _base_ns(ops: list[Op]) -> int:
    return min((o.invoke_ns for o in ops), default=0)


def _session(op: Op) -> tuple | None:
    # client_id 0 means "no session" in craft (src/app/app.c).
    if op.client_id and op.sequence is not None:
        return (op.client_id, op.sequence)
    return None


def logical_ops(ops: Iterable[Op]) -> tuple[list[Op], int]:
    """Merges records that are retries of one request (same client_id and
    sequence) into one op, returns (ops, number of records merged away).

    The merged op is called at the first attempt's call. It is ok if any
    attempt was (completing at the earliest ok answer, whose value it keeps),
    else unknown if any attempt may have gone through, else fail."""
    out: list[Op] = []
    by_session: dict[tuple, list[Op]] = {}
    for op in ops:
        s = _session(op)
        if s is None:
            out.append(op)
        else:
            by_session.setdefault(s, []).append(op)
    merged = 0
    for s, group in by_session.items():
        first = min(group, key=lambda o: o.invoke_ns)
        for o in group:
            if (o.kind, o.key, o.args) != (first.kind, first.key, first.args):
                raise ValueError(
                    f"history error: client_id {s[0]} sequence {s[1]} is used "
                    f"by different requests: op#{first.id} {first.call_text()} "
                    f"and op#{o.id} {o.call_text()}")
        if len(group) == 1:
            out.append(first)
            continue
        merged += len(group) - 1
        oks = [o for o in group if o.outcome == "ok"]
        if oks:
            best = min(oks, key=lambda o: o.complete_ns)
            outcome, value, done, why = "ok", best.value, best.complete_ns, None
        elif any(o.effective_outcome() == "unknown" for o in group):
            outcome, value, why = "unknown", None, "a retry's outcome is unknown"
            done = max(o.complete_ns or o.invoke_ns for o in group)
        else:
            outcome, value, why = "fail", None, group[-1].why
            done = max(o.complete_ns or o.invoke_ns for o in group)
        out.append(Op(id=first.id, client=first.client, kind=first.kind,
                      key=first.key, args=first.args,
                      invoke_ns=first.invoke_ns, process=first.process,
                      complete_ns=done, outcome=outcome, value=value, why=why,
                      client_id=first.client_id, sequence=first.sequence,
                      node=first.node))
    out.sort(key=lambda o: o.id)
    return out, merged


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _explain(ops: Iterable[Op], base_ns: int, limit: int = EXPLAIN_OPS) -> list[str]:
    ops = list(ops)
    lines = ["  " + o.describe(base_ns) for o in ops[:limit]]
    if len(ops) > limit:
        lines.append(f"  ... and {len(ops) - limit} more")
    return lines


# ---------------------------------------------------------------------------
# Sequential models. A step takes (state, compiled op) and returns the new
# state, or _ILLEGAL if the op cannot take effect in that state with the
# result it returned. The state must be hashable (it goes in the cache).

_ILLEGAL = object()

_PUT, _GET, _CAS, _INCR, _DEL, _ADD, _TOTAL = range(7)


def _kv_matches(state: str | None, expected: str) -> bool:
    # craft's CAS: an absent key matches an empty expected value.
    return state == expected or (state is None and expected == "")


def _kv_step(s: Any, inp: tuple) -> Any:
    c = inp[0]
    if c == _GET:
        o = inp[1]
        # craft's Get answers "" for an absent key; Read says found=false
        # (recorded as None). A present key must read as itself.
        if o == s or (o == "" and s is None):
            return s
        return _ILLEGAL
    if c == _PUT:
        return inp[1]
    if c == _CAS:
        match = _kv_matches(s, inp[1])
        out = inp[3]
        if out is None:  # unknown: it did whatever the state dictated
            return inp[2] if match else s
        if out:
            return inp[2] if match else _ILLEGAL
        return _ILLEGAL if match else s
    if c == _INCR:
        if s is None:
            cur = 0
        else:
            cur = parse_int(s)
            if cur is None:
                # craft refuses INCR of a non-number (INVALID, no change): an
                # ok incr cannot have happened here, an unknown one did nothing.
                return s if inp[2] is None else _ILLEGAL
        new = cur + inp[1]
        if inp[2] is not None and inp[2] != new:
            return _ILLEGAL
        return str(new)
    # _DEL
    out = inp[1]
    if out is not None and out != (s is not None):
        return _ILLEGAL
    return None


def _total_step(s: int, inp: tuple) -> Any:
    if inp[0] == _ADD:
        n = s + inp[1]
        t = inp[2]
        return n if t is None or t == n else _ILLEGAL
    return s if inp[1] == s else _ILLEGAL


def _total_step_free(s: tuple, inp: tuple) -> Any:
    # The initial total is not known: the state is (sum of the adds so far,
    # initial total or None), and the first observed total fixes the latter.
    sm, base = s
    if inp[0] == _ADD:
        sm += inp[1]
        t = inp[2]
    else:
        t = inp[1]
    if t is None:
        return (sm, base)
    if base is None:
        return (sm, t - sm)
    return (sm, base) if base + sm == t else _ILLEGAL


def _compile(op: Op) -> tuple:
    ok = op.effective_outcome() == "ok"
    v = op.value if ok else None
    k = op.kind
    if k == "put":
        return (_PUT, op.args[0])
    if k == "get":
        return (_GET, v)
    if k == "cas":
        return (_CAS, op.args[0], op.args[1], v)
    if k == "incr":
        return (_INCR, op.args[0], v)
    if k == "del":
        return (_DEL, v)
    if k == "add":
        return (_ADD, op.delta, v["total"] if v else None)
    return (_TOTAL, v)


def _show_state(key: str, state: Any) -> str:
    if key == TOTAL_KEY and isinstance(state, tuple):
        sm, base = state
        return f"total {base + sm}" if base is not None else \
            f"total = initial + {sm}"
    if key == TOTAL_KEY:
        return f"total {state}"
    return "absent" if state is None else repr(state)


# ---------------------------------------------------------------------------
# The search


@dataclass
class _Outcome:
    verdict: str                 # ok / violation / timeout
    states: int = 0              # configurations cached
    prefix: list = field(default_factory=list)   # deepest linearization (op indexes)
    stuck: int | None = None     # the op whose return could not be passed
    stuck_state: Any = None
    pending: list = field(default_factory=list)  # ops that could go next there


def _total_now(s: Any) -> int | None:
    """The running total a counter state stands for (None: not yet known)."""
    if isinstance(s, tuple):
        return None if s[1] is None else s[0] + s[1]
    return s


def _total_need(inp: tuple) -> int | None:
    """The total an observing counter op needs just before it takes effect."""
    if inp[0] == _ADD:
        return None if inp[2] is None else inp[2] - inp[1]
    return inp[1]


def _total_apply(s: Any, d: int) -> Any:
    return (s[0] + d, s[1]) if isinstance(s, tuple) else s + d


def _search(ops: list[Op], init: Any, step, deadline: float,
            horizon: list | None = None) -> _Outcome:
    """Lowe's variant of the Wing-Gong search on one object's history.

    The ok ops' calls and returns, in time order, form a doubly linked list
    (entry i is op i's call, n + i its return); linearizing an op lifts both
    of its entries (dancing links) and backtracking puts them back, so the
    list always holds the ok ops not yet linearized. The ops that may go
    next (the window) are those whose call comes before the first return in
    the list. A configuration (ok ops linearized, unknown ops linearized,
    state) already seen is not explored again.

    Unknown ops stay pending for ever, so trying each of them at every step
    would multiply the configurations by every subset of them. Instead they
    are only linearized in a chain just before an ok op that is illegal in
    the state where the chain starts, and that the chain makes legal. That
    loses no linearization: a chain before an op that is legal without it
    can move after that op (the op commutes with it, overwrites its effect,
    or would be illegal after it), so every linearizable history has a
    linearization of that form. Chains:
      * counter: any set of unknown adds whose sum is exactly what the
        observing op needs (adds commute; equal addends are interchangeable,
        so they are taken in call order);
      * key-value: at most one blind write (put, del) first, then cas and
        incr ops that each change the state, stopping as soon as the op is
        legal;
    and a configuration with the same ok ops and state as one seen before
    but a superset of its unknown ops is pruned (it has fewer choices left).
    When every add is positive the total only grows, so a move that takes it
    past what a pending observing op needs is pruned at once.

    horizon: for each unknown op, the latest time it may take effect in this
    search (None: no limit). Any limit only removes choices, so a search
    with one that succeeds proves the history linearizable; one that fails
    proves nothing."""
    n = len(ops)
    inputs = [_compile(o) for o in ops]
    unknown = [o.effective_outcome() != "ok" for o in ops]
    need = n - sum(unknown)
    if need == 0:
        return _Outcome(OK)
    counter = step is not _kv_step
    complete = [o.complete_ns for o in ops]
    events = []
    for i, o in enumerate(ops):
        if not unknown[i]:
            # At equal times a call sorts before a return: the ops are then
            # concurrent, which can only accept more histories, never reject
            # a linearizable one.
            events.append((o.invoke_ns, 0, i))
            events.append((o.complete_ns, 1, n + i))
    events.sort()
    head = 2 * n
    nxt = [-1] * (2 * n + 1)
    prv = [-1] * (2 * n + 1)
    last = head
    for _, _, e in events:
        nxt[last] = e
        prv[e] = last
        last = e
    # Unknown ops in call order; an unknown op may be linearized at a point
    # iff its call is no later than the first pending return.
    unk = sorted((i for i in range(n) if unknown[i]),
                 key=lambda i: (ops[i].invoke_ns, i))
    unk_invoke = [ops[i].invoke_ns for i in unk]
    used = [False] * n
    twin = [-1] * n     # the previous unknown op (in call order) with the same input
    seen_input: dict = {}
    for i in unk:
        twin[i] = seen_input.get(inputs[i], -1)
        seen_input[inputs[i]] = i
    bits = [1 << i for i in range(n)]
    budget = [0]
    monotone = counter and all(inp[0] == _TOTAL or inp[1] >= 0 for inp in inputs)

    def tick() -> None:
        budget[0] += 1
        if budget[0] & 1023 == 0 and time.monotonic() > deadline:
            raise _Timeout

    def counter_chains(s, x, avail):
        want = _total_need(inputs[x])
        now = _total_now(s)
        if want is None or now is None or not avail:
            return
        target = want - now
        groups: dict[int, list[int]] = {}
        for u in avail:
            groups.setdefault(inputs[u][1], []).append(u)
        # Largest addends first: the bounds below then cut early.
        gl = sorted(groups.items(), key=lambda g: -abs(g[0]))
        # the most and least the groups from g on can still add
        hi = [0] * (len(gl) + 1)
        lo = [0] * (len(gl) + 1)
        for g in range(len(gl) - 1, -1, -1):
            d, us = gl[g]
            hi[g] = hi[g + 1] + (d * len(us) if d > 0 else 0)
            lo[g] = lo[g + 1] + (d * len(us) if d < 0 else 0)
        chosen: list[int] = []

        def rec(g, rest):
            tick()
            if not lo[g] <= rest <= hi[g]:
                return
            if g == len(gl):
                if chosen:  # rest == 0 here
                    yield list(chosen)
                return
            d, us = gl[g]
            base = len(chosen)
            yield from rec(g + 1, rest)
            for k in range(len(us)):
                chosen.append(us[k])
                yield from rec(g + 1, rest - d * (k + 1))
            del chosen[base:]

        for chain in rec(0, target):
            after = step(_total_apply(s, target), inputs[x])
            if after is not _ILLEGAL:
                yield chain, after

    def kv_chains(s, x, avail):
        seen = set()
        chain: list[int] = []
        inch = set()

        def rec(cur):
            for u in avail:
                tick()
                if u in inch:
                    continue
                tw = twin[u]
                if tw >= 0 and not used[tw] and tw not in inch:
                    continue  # take equal ops in call order
                c = inputs[u][0]
                if chain and c in (_PUT, _DEL):
                    continue  # a later blind write would overwrite the chain
                nxt_s = step(cur, inputs[u])
                if nxt_s == cur:
                    continue  # changes nothing: never needed
                chain.append(u)
                inch.add(u)
                key = (nxt_s, frozenset(inch))
                if key not in seen:
                    seen.add(key)
                    after = step(nxt_s, inputs[x])
                    if after is not _ILLEGAL:
                        yield list(chain), after
                    else:
                        yield from rec(nxt_s)
                chain.pop()
                inch.discard(u)

        yield from rec(s)

    chains = counter_chains if counter else kv_chains

    def moves(s, pos):
        """The moves from state s: (op, chain of unknown ops before it,
        state after it), and the window they were drawn from."""
        window = []
        e = nxt[head]
        while e < n:
            window.append(e)
            e = nxt[e]
        first_return = complete[e - n]
        k = bisect.bisect_right(unk_invoke, first_return)
        if horizon is None:
            avail = [u for u in unk[:k] if not used[u]]
        else:
            # pos: the latest call among the ops linearized, the earliest
            # time the next one can take effect.
            avail = [u for u in unk[:k] if not used[u] and horizon[u] >= pos]
        limit = None
        if monotone and _total_now(s) is not None:
            # The two smallest totals that pending observing ops need: a move
            # may not take the total past them (but for the op itself).
            needs = sorted((w, x) for x in window
                           if (w := _total_need(inputs[x])) is not None)[:2]
            inf = float("inf")

            def limit(x):
                for w, y in needs:
                    if y != x:
                        return w
                return inf

        def gen():
            illegal = []
            for x in window:
                new = step(s, inputs[x])
                if new is _ILLEGAL:
                    illegal.append(x)
                elif limit is None or _total_now(new) <= limit(x):
                    yield x, (), new
            if avail:
                for x in illegal:
                    if limit is not None:
                        w = _total_need(inputs[x])
                        if w is None or w + (inputs[x][1] if inputs[x][0] == _ADD
                                             else 0) > limit(x):
                            continue
                    for chain, after in chains(s, x, avail):
                        yield x, chain, after
        return gen()

    cache: dict = {}   # (ok ops linearized, state) -> [unknown ops linearized]
    states = 0
    lin_ok = 0
    lin_unk = 0
    state = init
    stack: list = []   # (parent's moves, op, chain, state before, pos before)
    pos = float("-inf")
    invoke = [o.invoke_ns for o in ops]
    done = 0
    best = _Outcome(VIOLATION)
    best_depth = -1
    gen = moves(state, pos)
    try:
        while True:
            tick()
            mv = next(gen, None)
            if mv is None:
                # No move left: a dead end. Remember the deepest one for the
                # explanation, then backtrack.
                if done > best_depth:
                    best_depth = done
                    best.prefix = [(f[1], f[2]) for f in stack]
                    best.stuck_state = state
                    pend = []
                    e = nxt[head]
                    while e < n:
                        pend.append(e)
                        e = nxt[e]
                    best.stuck = e - n
                    best.pending = [p for p in pend if p != e - n]
                if not stack:
                    break
                gen, x, chain, state, pos = stack.pop()
                lin_ok ^= bits[x]
                done -= 1
                for u in chain:
                    lin_unk ^= bits[u]
                    used[u] = False
                # unlift: the return first, then the call (reverse of lifting)
                r = x + n
                nxt[prv[r]] = r
                if nxt[r] >= 0:
                    prv[nxt[r]] = r
                nxt[prv[x]] = x
                if nxt[x] >= 0:
                    prv[nxt[x]] = x
                continue
            x, chain, new = mv
            nk = lin_ok | bits[x]
            nu = lin_unk
            for u in chain:
                nu |= bits[u]
            ck = (nk, new)
            seen = cache.get(ck)
            if seen is None:
                cache[ck] = [nu]
            elif nu in seen:
                continue
            else:
                if any(not u & ~nu for u in seen):  # a subset was seen
                    continue
                seen[:] = [u for u in seen if nu & ~u]
                seen.append(nu)
            states += 1
            stack.append((gen, x, chain, state, pos))
            lin_ok, lin_unk, state = nk, nu, new
            pos = max(pos, invoke[x])
            for u in chain:
                used[u] = True
                pos = max(pos, invoke[u])
            done += 1
            # lift the call and its return
            p, q = prv[x], nxt[x]
            nxt[p] = q
            if q >= 0:
                prv[q] = p
            r = x + n
            p, q = prv[r], nxt[r]
            nxt[p] = q
            if q >= 0:
                prv[q] = p
            if done == need:
                return _Outcome(OK, states=states)
            gen = moves(state, pos)
    except _Timeout:
        best.verdict = "timeout"
        best.states = states
        return best
    # The deepest linearization as a list of ops, oldest first.
    best.prefix = [i for x, chain in best.prefix for i in (*chain, x)]
    best.states = states
    return best


class _Timeout(Exception):
    pass


def _precheck(key: str, ops: list[Op], initial: Any, base_ns: int) -> str | None:
    """Cheap, clearly explained violations found before any search."""
    for o in ops:
        if o.kind == "add" and o.outcome == "ok" and o.value["sum"] is not None \
                and o.value["sum"] != o.delta:
            return (f"wrong sum: {o.describe(base_ns)}: "
                    f"{o.args[0]} + {o.args[1]} is {o.delta}")
    if key == TOTAL_KEY:
        return None
    written = {initial, None, ""}
    numbers = False
    for o in ops:
        if o.kind == "put":
            written.add(o.args[0])
        elif o.kind == "cas":
            written.add(o.args[1])
        elif o.kind == "incr":
            numbers = True
    for o in ops:
        if o.kind == "get" and o.outcome == "ok" and o.value not in written \
                and not (numbers and parse_int(o.value) is not None):
            return (f"key {key!r}: {o.describe(base_ns)} read a value that "
                    f"no operation wrote")
    return None


def check_linearizable(history: History | Iterable[Op], *,
                       time_limit: float = 10.0,
                       initial_kv: dict | None = None,
                       initial_total: int | None = 0) -> CheckResult:
    """Is the history linearizable, per key and for the running total?

    initial_kv: each key's value before the history (absent if not given);
    initial_total: the running total before it, or None if not known (the
    first observed total then fixes it). time_limit: seconds for the whole
    check; when it runs out the verdict is unknown, naming the key."""
    t0 = time.monotonic()
    deadline = t0 + time_limit
    initial_kv = initial_kv or {}
    raw = _ops_of(history)
    base_ns = _base_ns(raw)
    ops, merged = logical_ops(raw)
    parts: dict[str, list[Op]] = {}
    dropped_fail = dropped_reads = 0
    for o in ops:
        out = o.effective_outcome()
        if out == "fail":
            dropped_fail += 1
            continue
        if out == "unknown" and o.kind in ("get", "total"):
            dropped_reads += 1
            continue
        parts.setdefault(TOTAL_KEY if o.key is None else o.key, []).append(o)
    figures = {"ops": sum(len(p) for p in parts.values()),
               "ok": sum(1 for p in parts.values() for o in p if o.outcome == "ok"),
               "unknown": sum(1 for p in parts.values() for o in p
                              if o.effective_outcome() == "unknown"),
               "dropped_fail": dropped_fail,
               "dropped_unknown_reads": dropped_reads,
               "merged_retries": merged, "keys": len(parts), "keys_checked": 0,
               "states": 0, "slowest_key": None, "slowest_key_s": 0.0}

    def result(verdict, message, details=None):
        return CheckResult("linearizable", verdict, message,
                           time.monotonic() - t0, figures, details or {})

    # Small objects first: a time-out on a big one then leaves the most checked.
    order = sorted(parts, key=lambda k: len(parts[k]))
    for key in order:
        pops = parts[key]
        if key == TOTAL_KEY and initial_total is None:
            init, step = (0, None), _total_step_free
        elif key == TOTAL_KEY:
            init, step = initial_total, _total_step
        else:
            init = initial_kv.get(key)
            step = _kv_step
        why = _precheck(key, pops, init, base_ns)
        if why:
            return result(VIOLATION, f"not linearizable: {why}",
                          {"key": key, "op": None})
        if time.monotonic() > deadline:
            return result(UNKNOWN, f"timed out after {time_limit:g} s before "
                          f"key {key!r} ({figures['keys_checked']} of "
                          f"{len(parts)} keys checked, all linearizable)",
                          {"key": key})
        k0 = time.monotonic()
        res = None
        if any(o.effective_outcome() == "unknown" for o in pops):
            # First a quick search in which an unknown op takes effect no
            # later than twice as long after its completion as it had run
            # (when it really did take effect it was most likely then); if
            # that finds no linearization, the full search decides.
            horizon = [None if o.complete_ns is None else
                       o.complete_ns + 2 * (o.complete_ns - o.invoke_ns)
                       for o in pops]
            horizon = [float("inf") if h is None else h for h in horizon]
            quick = min(deadline, k0 + 0.3 * max(0.0, deadline - k0))
            res = _search(pops, init, step, quick, horizon)
            figures["states"] += res.states
            if res.verdict != OK:
                res = None
        if res is None:
            res = _search(pops, init, step, deadline)
            figures["states"] += res.states
        spent = time.monotonic() - k0
        if spent >= figures["slowest_key_s"]:
            figures["slowest_key"], figures["slowest_key_s"] = key, round(spent, 6)
        if res.verdict == "timeout":
            return result(UNKNOWN, f"timed out after {time_limit:g} s on key "
                          f"{key!r} ({len(pops)} ops, {res.states} states "
                          f"explored; {figures['keys_checked']} of "
                          f"{len(parts)} keys checked, all linearizable)",
                          {"key": key, "ops": len(pops), "states": res.states})
        if res.verdict == VIOLATION:
            return result(VIOLATION, *_explain_violation(key, pops, res, base_ns))
        figures["keys_checked"] += 1
    return result(OK, f"linearizable: {figures['ops']} ops on "
                  f"{len(parts)} keys ({figures['unknown']} of unknown outcome)")


def _explain_violation(key: str, ops: list[Op], res: _Outcome,
                       base_ns: int) -> tuple[str, dict]:
    stuck = ops[res.stuck]
    prefix = [ops[i] for i in res.prefix]
    pending = [ops[i] for i in res.pending]
    lines = [f"not linearizable on key {key!r} ({len(ops)} ops): at most "
             f"{len(prefix)} ops linearize before "
             f"{stuck.describe(base_ns)}, which cannot take effect "
             f"(state then: {_show_state(key, res.stuck_state)})"]
    if prefix:
        lines.append(f"the longest linearizable prefix ends with "
                     f"(oldest first, state after it "
                     f"{_show_state(key, res.stuck_state)}):")
        lines += _explain(prefix[-EXPLAIN_OPS:], base_ns)
    if pending:
        lines.append("ops that could still take effect there (none fits):")
        lines += _explain(pending, base_ns)
    details = {"key": key, "op": stuck.to_dict(),
               "state": res.stuck_state if key != TOTAL_KEY or
               not isinstance(res.stuck_state, tuple) else list(res.stuck_state),
               "prefix": [o.id for o in prefix],
               "pending": [o.id for o in pending]}
    return "\n".join(lines), details


# ---------------------------------------------------------------------------
# Election safety


def check_election_safety(observations: History | Iterable[Observation | dict],
                          *, include_follower_views: bool = False) -> CheckResult:
    """At most one leader per term (Raft's Election Safety, §5.2).

    A node counts as leader of a term when it said it was LEADER in it. With
    include_follower_views, a node's report of who leads its current term
    counts as well (only sound if the implementation forgets the leader when
    its term changes, as craft does)."""
    t0 = time.monotonic()
    if isinstance(observations, History):
        obs = observations.observations
    else:
        obs = [o if isinstance(o, Observation) else Observation.from_dict(o)
               for o in observations]
    base = min((o.time_ns for o in obs), default=0)
    leaders: dict[int, dict[int, Observation]] = {}
    for o in sorted(obs, key=lambda o: o.time_ns):
        if o.role == "LEADER":
            leaders.setdefault(o.term, {}).setdefault(o.node, o)
        if include_follower_views and o.leader and o.role != "LEADER":
            leaders.setdefault(o.term, {}).setdefault(int(o.leader), o)
    chain = [next(iter(ls)) for _, ls in sorted(leaders.items())]
    changes = sum(1 for a, b in zip(chain, chain[1:]) if a != b)
    figures = {"observations": len(obs), "terms_with_leader": len(leaders),
               "max_term": max((o.term for o in obs), default=0),
               "leader_changes": changes,
               "leaders_by_term": {t: sorted(ls) for t, ls in sorted(leaders.items())}}
    bad = {t: ls for t, ls in leaders.items() if len(ls) > 1}
    elapsed = time.monotonic() - t0
    if not obs:
        return CheckResult("election_safety", UNKNOWN,
                           "no observations to check", elapsed, figures)
    if bad:
        lines = [f"{len(bad)} term(s) with more than one leader"]
        for t in sorted(bad):
            who = ", ".join(
                f"node {n} (seen at {(o.time_ns - base) / 1e9:.3f} s, {o.source}"
                f"{'' if o.role == 'LEADER' else f', as reported by node {o.node}'})"
                for n, o in sorted(bad[t].items()))
            lines.append(f"term {t}: {who}")
        return CheckResult("election_safety", VIOLATION, "\n".join(lines),
                           elapsed, figures,
                           {"terms": {t: sorted(ls) for t, ls in bad.items()}})
    return CheckResult("election_safety", OK,
                       f"one leader per term over {len(leaders)} term(s) "
                       f"({len(obs)} observations)", elapsed, figures)


# ---------------------------------------------------------------------------
# Final state: lost writes, duplicates


def _total_bounds(adds: list[Op], initial_total: int) -> tuple[int, int, int]:
    ok_sum = sum(o.delta for o in adds if o.outcome == "ok")
    unk = [o.delta for o in adds if o.effective_outcome() == "unknown"]
    lo = initial_total + ok_sum + sum(d for d in unk if d < 0)
    hi = initial_total + ok_sum + sum(d for d in unk if d > 0)
    return ok_sum, lo, hi


def _definitely_wrote(o: Op) -> bool:
    return o.outcome == "ok" and (o.kind in ("put", "incr", "del") or
                                  (o.kind == "cas" and o.value is True))


def _could_write(o: Op, value: str | None) -> bool:
    """Could op `o` have left `value` in its key?"""
    out = o.effective_outcome()
    if out == "fail":
        return False
    if o.kind == "put":
        return o.args[0] == value
    if o.kind == "cas":
        return o.args[1] == value and (out == "unknown" or o.value is True)
    if o.kind == "incr":
        n = parse_int(value) if value is not None else None
        if n is None:
            return False
        return out == "unknown" or o.value == n
    if o.kind == "del":
        return value is None
    return False


def check_no_lost_writes(history: History | Iterable[Op], *,
                         final_kv: dict | None = None,
                         final_total: int | None = None,
                         initial_kv: dict | None = None,
                         initial_total: int | None = 0) -> CheckResult:
    """Every acknowledged write is reflected in the final state.

    final_kv: key -> value (None: absent) read at the end with linearizable
    reads, for the keys to check; final_total: the running total read so.

    A key's final value must have been written by an op (or be the initial
    value) that no acknowledged write started after; otherwise that
    acknowledged write was lost. The total must lie within [initial + acked
    adds + negative unknown adds, initial + acked adds + positive unknown
    adds], i.e. [sum of acked, sum of attempted] for positive addends."""
    t0 = time.monotonic()
    raw = _ops_of(history)
    base_ns = _base_ns(raw)
    ops, _ = logical_ops(raw)
    initial_kv = initial_kv or {}
    figures: dict[str, Any] = {"keys_checked": 0, "acked_writes": 0,
                               "lost_keys": 0}
    problems: list[str] = []
    details: dict[str, Any] = {"keys": {}}
    if final_kv is None and final_total is None:
        return CheckResult("no_lost_writes", UNKNOWN,
                           "no final state given to check against",
                           time.monotonic() - t0, figures)
    by_key: dict[str, list[Op]] = {}
    for o in ops:
        if o.key is not None:
            by_key.setdefault(o.key, []).append(o)
    for key, fv in sorted((final_kv or {}).items()):
        if fv == "":
            fv = None  # craft's Get answers "" for an absent key
        kops = by_key.get(key, [])
        figures["keys_checked"] += 1
        acked = [o for o in kops if _definitely_wrote(o)]
        figures["acked_writes"] += len(acked)
        init = initial_kv.get(key)
        # (writer op or None for the initial value, its completion time)
        cands: list[tuple[Op | None, float]] = []
        if init == fv or (init == "" and fv is None):
            cands.append((None, float("-inf")))
        for o in kops:
            if _could_write(o, fv):
                done = float("inf") if o.effective_outcome() == "unknown" \
                    else o.complete_ns
                cands.append((o, done))
        if not cands:
            figures["lost_keys"] += 1
            problems.append(f"key {key!r}: final value {fv!r} was never "
                            f"written by any operation")
            details["keys"][key] = {"final": fv, "writers": []}
            continue
        def later(done: float, me: Op | None) -> list[Op]:
            return [a for a in acked if a is not me and a.invoke_ns > done]
        viable = [c for c in cands if not later(c[1], c[0])]
        if viable:
            continue
        figures["lost_keys"] += 1
        w, done = max(cands, key=lambda c: c[1])
        lost = later(done, w)
        who = "its initial value" if w is None else w.describe(base_ns)
        problems.append(
            f"key {key!r}: final value {fv!r} comes at the latest from {who}, "
            f"but {len(lost)} acknowledged write(s) started after that "
            f"completed and are lost:\n" + "\n".join(_explain(lost, base_ns)))
        details["keys"][key] = {"final": fv, "lost": [o.id for o in lost]}
    if final_total is not None:
        adds = [o for o in ops if o.kind == "add"]
        if initial_total is None:
            problems_total = None
            figures["total_checked"] = False
        else:
            ok_sum, lo, hi = _total_bounds(adds, initial_total)
            figures.update(total_final=final_total, total_min=lo, total_max=hi,
                           acked_adds=sum(1 for o in adds if o.outcome == "ok"),
                           total_checked=True)
            figures["acked_writes"] += figures["acked_adds"]
            problems_total = None
            if final_total < lo:
                problems_total = (f"running total {final_total} is below "
                                  f"{lo}, the least the acknowledged adds "
                                  f"allow (initial {initial_total} + acked "
                                  f"{ok_sum}): {lo - final_total} lost")
            elif final_total > hi:
                problems_total = (f"running total {final_total} is above "
                                  f"{hi}, the most all attempted adds allow: "
                                  f"an add was applied twice or invented")
            if problems_total:
                problems.append(problems_total)
                details["total"] = {"final": final_total, "min": lo, "max": hi}
    elapsed = time.monotonic() - t0
    if problems:
        return CheckResult("no_lost_writes", VIOLATION,
                           f"{len(problems)} problem(s):\n" + "\n".join(problems),
                           elapsed, figures, details)
    if final_total is not None and initial_total is None:
        return CheckResult("no_lost_writes", UNKNOWN,
                           "the initial total is not known, so the final total "
                           "cannot be checked", elapsed, figures)
    return CheckResult("no_lost_writes", OK,
                       f"{figures['acked_writes']} acknowledged write(s) all "
                       f"reflected in the final state", elapsed, figures)


def _superincreasing(values: list[int]) -> bool:
    run = 0
    for v in sorted(values):
        if v <= run:
            return False
        run += v
    return True


def check_no_duplicates(history: History | Iterable[Op], final_total: int, *,
                        initial_total: int = 0,
                        max_states: int = 1 << 21) -> CheckResult:
    """No add was applied twice: the final total must equal the initial total
    plus every acknowledged add plus some set of distinct unknown adds.

    Retries of one request (same client_id/sequence) are merged first, so a
    request counts once however many times it was sent. Then:
      * if the addends are superincreasing (each above the sum of all smaller
        ones; distinct powers of two are), the only set of adds that can sum to
        the total is found greedily from the largest, which also names the
        acked adds a duplicate or loss displaced;
      * else, with positive addends and a target below 2^22, a bitset
        dynamic program over reachable sums (a Python int as the bitset);
      * else a dynamic program over the set of reachable sums, abandoned with
        an unknown verdict past `max_states` sums."""
    t0 = time.monotonic()
    raw = _ops_of(history)
    base_ns = _base_ns(raw)
    ops, merged = logical_ops(raw)
    # An add of 0 changes nothing whether applied once or twice (the final
    # write of a run is one): leave it out.
    adds = [o for o in ops if o.kind == "add" and o.effective_outcome() != "fail"
            and o.delta != 0]
    acked = [o for o in adds if o.outcome == "ok"]
    unk = [o for o in adds if o.outcome != "ok"]
    ok_sum = sum(o.delta for o in acked)
    target = final_total - initial_total - ok_sum
    figures: dict[str, Any] = {"adds": len(adds), "acked": len(acked),
                               "unknown": len(unk), "merged_retries": merged,
                               "final_total": final_total, "method": None,
                               "unknown_applied": None, "duplicated": None}

    def result(verdict, message, details=None):
        return CheckResult("no_duplicates", verdict, message,
                           time.monotonic() - t0, figures, details or {})

    head = (f"final total {final_total} vs initial {initial_total} + "
            f"{len(acked)} acked add(s) ({ok_sum})")
    deltas = [o.delta for o in adds]
    if deltas and all(d > 0 for d in deltas) and _superincreasing(deltas):
        figures["method"] = "greedy"
        rem = final_total - initial_total
        taken = []
        for o in sorted(adds, key=lambda o: -o.delta):
            if rem >= o.delta:
                rem -= o.delta
                taken.append(o)
        missing = [o for o in acked if o not in taken]
        if rem == 0 and not missing:
            figures["unknown_applied"] = len(taken) - len(acked)
            figures["duplicated"] = 0
            return result(OK, f"{head}: exactly the acked adds and "
                          f"{len(taken) - len(acked)} of {len(unk)} unknown "
                          f"one(s), each once")
        lines = [f"{head}: not the sum of a set of distinct attempted adds "
                 f"that includes every acked one"]
        if rem:
            lines.append(f"{rem} is left over after the largest adds that fit: "
                         f"some add was applied more than once (or an add was "
                         f"never sent by this history)")
        if missing:
            lines.append(f"the only set of adds that fits leaves out "
                         f"{len(missing)} acked add(s) (lost, or displaced by a "
                         f"duplicate):")
            lines += _explain(missing, base_ns)
        figures["duplicated"] = None
        return result(VIOLATION, "\n".join(lines),
                      {"left_over": rem, "missing": [o.id for o in missing]})
    udeltas = [o.delta for o in unk]
    if target == 0:
        figures["method"] = "trivial"
        figures["unknown_applied"] = 0
        figures["duplicated"] = 0
        return result(OK, f"{head}: exactly the acked adds, each once")
    lo = sum(d for d in udeltas if d < 0)
    hi = sum(d for d in udeltas if d > 0)
    if not lo <= target <= hi:
        figures["method"] = "bounds"
        what = ("more than all attempted adds: an add was applied twice"
                if target > hi else "less than the acked adds: an add was lost")
        return result(VIOLATION, f"{head}: the unknown adds would have to sum "
                      f"to {target}, outside [{lo}, {hi}]: {what}",
                      {"target": target, "min": lo, "max": hi})
    if all(d > 0 for d in udeltas) and target < (1 << 22):
        figures["method"] = "bitset"
        reach, mask = 1, (1 << (target + 1)) - 1
        for d in udeltas:
            reach |= (reach << d) & mask
        found = bool(reach >> target & 1)
    else:
        figures["method"] = "sums"
        sums = {0}
        for d in udeltas:
            sums |= {s + d for s in sums}
            if len(sums) > max_states:
                return result(UNKNOWN, f"{head}: deciding which of {len(unk)} "
                              f"unknown adds were applied needs more than "
                              f"{max_states} partial sums; use distinct powers "
                              f"of two as addends")
        found = target in sums
    if found:
        figures["duplicated"] = 0
        return result(OK, f"{head}: the rest ({target}) is the sum of a set of "
                      f"distinct unknown adds")
    return result(VIOLATION, f"{head}: the rest ({target}) is not the sum of "
                  f"any set of distinct unknown adds: some add was applied "
                  f"twice, or lost", {"target": target})


# ---------------------------------------------------------------------------
# Convergence


def check_convergence(statuses: Iterable[Any]) -> CheckResult:
    """All nodes report the same applied index and state digest.

    statuses: GetStatus answers (StatusResponse messages or dicts with
    node_id, applied_index, state_digest and optionally total). A digest
    mismatch at the same applied index is a divergence of the state machines;
    different applied indexes mean the nodes have not caught up (yet)."""
    t0 = time.monotonic()
    sts = list(statuses)
    rows = [(_get(s, "node_id"), _get(s, "applied_index"),
             _get(s, "state_digest") or "", _get(s, "total")) for s in sts]
    figures: dict[str, Any] = {"nodes": len(rows),
                               "applied": {r[0]: r[1] for r in rows},
                               "digests": {r[0]: r[2] for r in rows}}

    def result(verdict, message, details=None):
        return CheckResult("convergence", verdict, message,
                           time.monotonic() - t0, figures, details or {})

    if not rows:
        return result(UNKNOWN, "no node statuses to compare")
    by_index: dict[Any, list] = {}
    for r in rows:
        by_index.setdefault(r[1], []).append(r)
    for idx, rs in sorted(by_index.items(), key=lambda kv: str(kv[0])):
        digests = {r[2] for r in rs}
        totals = {r[3] for r in rs if r[3] is not None}
        if len(digests) > 1 or len(totals) > 1:
            who = ", ".join(f"node {r[0]}: {r[2] or '-'}"
                            f"{'' if r[3] is None else f' total {r[3]}'}"
                            for r in rs)
            figures["diverged"] = True
            return result(VIOLATION, f"state machines diverged: at applied "
                          f"index {idx} the nodes differ: {who}",
                          {"applied_index": idx})
    figures["diverged"] = False
    if len(by_index) > 1:
        who = ", ".join(f"node {r[0]}: {r[1]}" for r in rows)
        return result(VIOLATION, f"not converged: applied indexes differ "
                      f"({who})", {"applied": figures["applied"]})
    idx = rows[0][1]
    figures["applied_index"] = idx
    if not rows[0][2]:
        return result(OK, f"{len(rows)} node(s) at applied index {idx} "
                      f"(no state digest reported)")
    return result(OK, f"{len(rows)} node(s) at applied index {idx} with "
                  f"digest {rows[0][2]}")


# ---------------------------------------------------------------------------
# All together


def check_all(history: History, *, final_kv: dict | None = None,
              final_total: int | None = None, initial_kv: dict | None = None,
              initial_total: int | None = 0, statuses: Iterable[Any] | None = None,
              time_limit: float = 10.0) -> dict[str, CheckResult]:
    """Runs every checker that the inputs allow; name -> result."""
    out = {"linearizable": check_linearizable(
        history, time_limit=time_limit, initial_kv=initial_kv,
        initial_total=initial_total)}
    if history.observations:
        out["election_safety"] = check_election_safety(history)
    if final_kv is not None or final_total is not None:
        out["no_lost_writes"] = check_no_lost_writes(
            history, final_kv=final_kv, final_total=final_total,
            initial_kv=initial_kv, initial_total=initial_total)
    if final_total is not None and initial_total is not None and \
            any(o.kind == "add" for o in history.ops):
        out["no_duplicates"] = check_no_duplicates(
            history, final_total, initial_total=initial_total)
    if statuses:
        out["convergence"] = check_convergence(statuses)
    return out


def main(argv: list[str] | None = None) -> int:
    """Replays the checks on a saved history:
        python3 -m pytest_craft.checkers run.history.jsonl [--time-limit S]
    Final state and initial state come from the history's meta (final_kv,
    final_total, initial_kv, initial_total, statuses). Exit status: 0 all ok,
    1 a violation, 2 undecided."""
    ap = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    ap.add_argument("history", help="a JSON Lines history saved by History.save")
    ap.add_argument("--time-limit", type=float, default=60.0,
                    help="seconds for the linearizability check (default 60)")
    ap.add_argument("--json", action="store_true", help="print results as JSON")
    a = ap.parse_args(argv)
    h = History.load(a.history)
    m = h.meta
    res = check_all(h, final_kv=m.get("final_kv"),
                    final_total=m.get("final_total"),
                    initial_kv=m.get("initial_kv"),
                    initial_total=m.get("initial_total", 0),
                    statuses=m.get("statuses"), time_limit=a.time_limit)
    if a.json:
        print(json.dumps({k: r.to_dict() for k, r in res.items()}, indent=2,
                         default=str))
    else:
        for r in res.values():
            print(r)
    verdicts = {r.verdict for r in res.values()}
    return 1 if VIOLATION in verdicts else 2 if UNKNOWN in verdicts else 0


if __name__ == "__main__":
    sys.exit(main())
