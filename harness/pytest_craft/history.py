"""The recorded history of client operations, and of who claimed to lead when.

A test drives a cluster with a few client threads. Each logical client request
is one `Op`: recorded when it is sent (`History.invoke`) and resolved once
(`ok`, `fail` or `unknown`). A retry of the same request (same client_id and
sequence, after a timeout or a NOT_LEADER) belongs to the same Op: the
checkers need one record per request that may take effect, not one per RPC.

Outcomes, as the checkers read them:
  ok       applied exactly once, between invoke and completion, and `value` is
           what the server answered;
  fail     definitely not applied (OP_NOT_LEADER, OP_UNAVAILABLE, OP_INVALID,
           OP_REFUSED with no earlier attempt that may have gone through);
  unknown  may or may not have been applied, at any time after invoke (a
           timeout, a lost reply, OP_UNKNOWN); its completion time is +infinity.
An op still in flight when the history is checked counts as unknown.

Kinds and their arguments (mirroring the text commands of proto/raft.proto):
  put   key, args (value,)             value: ignored ("OK")
  get   key, args ()                   value: the string read, None if absent
  cas   key, args (expected, new)      value: True if it swapped
  incr  key, args (delta,)             value: the new integer value
  del   key, args ()                   value: True if the key existed
  add   key None, args (num1, num2)    value: {"sum": num1+num2 as answered,
                                               "total": running total after,
                                               or None if not reported}
  total key None, args ()              value: the running total read

Saved as JSON Lines (one record per line, so a truncated file still loads up
to its last whole line): a header {"type": "header", "format":
"craft-history", "version": 1, "meta": {...}}, then {"type": "op", ...} and
{"type": "observation", ...} records; see `Op.to_dict` and
`Observation.to_dict` for the fields.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

FORMAT = "craft-history"
VERSION = 1

KEY_KINDS = ("put", "get", "cas", "incr", "del")
TOTAL_KINDS = ("add", "total")
KINDS = KEY_KINDS + TOTAL_KINDS
# Kinds that change state when they take effect (cas only if it matches).
WRITE_KINDS = ("put", "cas", "incr", "del", "add")
OUTCOMES = ("ok", "fail", "unknown")

_ARITY = {"put": 1, "get": 0, "cas": 2, "incr": 1, "del": 0, "add": 2,
          "total": 0}

# craft's state machine accepts at most 19 digits and an optional sign
# (src/app/app.c parse_i64); int() would also take "1_000" or " 5".
_INT_RE = re.compile(r"[+-]?[0-9]{1,19}")


def parse_int(text: Any) -> int | None:
    """The integer a stored value means to INCR, or None if it is none."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text
    if isinstance(text, str) and _INT_RE.fullmatch(text):
        return int(text)
    return None


def _int(kind: str, what: str, v: Any) -> int:
    n = parse_int(v)
    if n is None:
        raise ValueError(f"{kind}: {what} must be an integer, got {v!r}")
    return n


def _str(kind: str, what: str, v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if not isinstance(v, str):
        raise ValueError(f"{kind}: {what} must be a string, got {v!r}")
    return v


def normalize_args(kind: str, key: Any, args: Iterable[Any]) -> tuple[Any, tuple]:
    """Checks an operation's shape; returns (key, args) in canonical form."""
    if kind not in KINDS:
        raise ValueError(f"unknown op kind {kind!r} (one of {', '.join(KINDS)})")
    args = tuple(args or ())
    if len(args) != _ARITY[kind]:
        raise ValueError(f"{kind} takes {_ARITY[kind]} argument(s), got {args!r}")
    if kind in KEY_KINDS:
        key = _str(kind, "key", key)
        if key == "":
            raise ValueError(f"{kind}: the key must not be empty")
    elif key is not None:
        raise ValueError(f"{kind} acts on the running total and takes no key "
                         f"(got {key!r})")
    if kind == "put":
        args = (_str(kind, "value", args[0]),)
    elif kind == "cas":
        args = (_str(kind, "expected", args[0]), _str(kind, "new", args[1]))
    elif kind == "incr":
        args = (_int(kind, "delta", args[0]),)
    elif kind == "add":
        args = (_int(kind, "num1", args[0]), _int(kind, "num2", args[1]))
    return key, args


def normalize_value(kind: str, value: Any) -> Any:
    """The value an ok op returned, in canonical form (see the module doc).

    Accepts what a client naturally has at hand: the text result of
    SubmitOperation ("true", "1", "42") or typed values."""
    if kind == "put":
        return None if value is None else str(value)
    if kind == "get":
        return None if value is None else _str(kind, "value", value)
    if kind == "cas":
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        if value in (0, 1):
            return bool(value)
        raise ValueError(f"cas: the result must be a bool or 'true'/'false', "
                         f"got {value!r}")
    if kind == "incr":
        return _int(kind, "result", value)
    if kind == "del":
        if isinstance(value, bool):
            return value
        if value in (0, 1, "0", "1"):
            return value in (1, "1")
        raise ValueError(f"del: the result must be a bool or 0/1, got {value!r}")
    if kind == "add":
        if value is None:
            return {"sum": None, "total": None}
        if isinstance(value, dict):
            unknown_fields = set(value) - {"sum", "total"}
            if unknown_fields:
                raise ValueError(f"add: unexpected result fields {unknown_fields}")
            s, t = value.get("sum"), value.get("total")
        elif isinstance(value, (tuple, list)) and len(value) == 2:
            s, t = value
        else:
            # A bare number is the running total: that is what orders adds.
            s, t = None, value
        return {"sum": None if s is None else _int(kind, "sum", s),
                "total": None if t is None else _int(kind, "total", t)}
    if kind == "total":
        return _int(kind, "result", value)
    raise ValueError(f"unknown op kind {kind!r}")


@dataclass
class Op:
    """One logical client request and how it ended (see the module doc)."""
    id: int
    client: int           # the harness's client number (a sequential actor)
    kind: str
    key: str | None
    args: tuple
    invoke_ns: int        # time.monotonic_ns() when first sent
    process: str = ""     # the thread (or process) that ran it
    complete_ns: int | None = None  # when resolved (for unknown: gave up)
    outcome: str | None = None      # ok / fail / unknown; None: in flight
    value: Any = None
    why: str | None = None          # for fail / unknown: the reason
    client_id: int | None = None    # exactly-once session of the request
    sequence: int | None = None
    node: int | None = None         # the server it was sent to (first)

    @property
    def is_write(self) -> bool:
        return self.kind in WRITE_KINDS

    @property
    def delta(self) -> int:
        """What an add adds to the running total."""
        return self.args[0] + self.args[1]

    def effective_outcome(self) -> str:
        """The outcome the checkers use: an op in flight is unknown."""
        return self.outcome or "unknown"

    def to_dict(self) -> dict:
        return {"type": "op", "id": self.id, "client": self.client,
                "process": self.process, "kind": self.kind, "key": self.key,
                "args": list(self.args), "invoke_ns": self.invoke_ns,
                "complete_ns": self.complete_ns, "outcome": self.outcome,
                "value": self.value, "why": self.why,
                "client_id": self.client_id, "sequence": self.sequence,
                "node": self.node}

    @classmethod
    def from_dict(cls, d: dict) -> "Op":
        kind = d["kind"]
        key, args = normalize_args(kind, d.get("key"), d.get("args", ()))
        outcome = d.get("outcome")
        if outcome is not None and outcome not in OUTCOMES:
            raise ValueError(f"op {d.get('id')}: unknown outcome {outcome!r}")
        value = d.get("value")
        if outcome == "ok":
            value = normalize_value(kind, value)
        return cls(id=int(d["id"]), client=d.get("client", 0), kind=kind,
                   key=key, args=args, invoke_ns=int(d["invoke_ns"]),
                   process=d.get("process", ""),
                   complete_ns=d.get("complete_ns"), outcome=outcome,
                   value=value, why=d.get("why"),
                   client_id=d.get("client_id"), sequence=d.get("sequence"),
                   node=d.get("node"))

    def call_text(self) -> str:
        """The request as people read it: put(k1, 'v3'), add(5, 3)."""
        parts = ([repr(self.key)] if self.key is not None else [])
        parts += [repr(a) for a in self.args]
        return f"{self.kind}({', '.join(parts)})"

    def describe(self, base_ns: int = 0) -> str:
        """One line: op#12 c3 put('k1', 'v3') -> ok [1.203..1.250 s]."""
        out = self.effective_outcome()
        if out == "ok":
            res = "ok" if self.kind == "put" else f"ok {self.value!r}"
        elif self.why:
            res = f"{out} ({self.why})"
        else:
            res = out
        t0 = (self.invoke_ns - base_ns) / 1e9
        if out == "ok" and self.complete_ns is not None:
            span = f"[{t0:.6f}..{(self.complete_ns - base_ns) / 1e9:.6f} s]"
        else:
            span = f"[{t0:.6f}..inf s]" if out == "unknown" else f"[{t0:.6f} s]"
        return f"op#{self.id} c{self.client} {self.call_text()} -> {res} {span}"


@dataclass
class Observation:
    """What a node said about itself at a time: from GetStatus or its log."""
    time_ns: int
    node: int
    term: int
    role: str                 # LEADER, FOLLOWER, CANDIDATE, PRE_CANDIDATE, LEARNER
    leader: int | None = None  # the leader it knew of in `term` (None/0: none)
    source: str = "status"    # "status" (GetStatus) or "log" (a node's log line)

    def to_dict(self) -> dict:
        return {"type": "observation", "time_ns": self.time_ns,
                "node": self.node, "term": self.term, "role": self.role,
                "leader": self.leader, "source": self.source}

    @classmethod
    def from_dict(cls, d: dict) -> "Observation":
        return cls(time_ns=int(d["time_ns"]), node=int(d["node"]),
                   term=int(d["term"]), role=str(d["role"]).upper(),
                   leader=d.get("leader"), source=d.get("source", "status"))


class History:
    """A thread-safe recorder of client operations and leader observations.

        h = History()
        op = h.invoke(client=1, kind="put", key="k", args=("v1",))
        ... send it ...
        h.ok(op, "OK")   # or h.fail(op, "NOT_LEADER"), h.unknown(op, "timeout")
    """

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns,
                 meta: dict | None = None):
        self._clock = clock
        self._lock = threading.Lock()
        self._ops: list[Op] = []
        self._obs: list[Observation] = []
        # Free-form facts for replaying offline: seed, scenario id, and, for
        # the command line checker, initial_total / initial_kv / final_total /
        # final_kv / statuses.
        self.meta: dict = dict(meta or {})

    # -- recording ----------------------------------------------------------

    def invoke(self, client: int, kind: str, key: str | None = None,
               args: Iterable[Any] = (), *, process: str | None = None,
               client_id: int | None = None, sequence: int | None = None,
               node: int | None = None) -> Op:
        """Records a request about to be sent; returns its handle."""
        key, args = normalize_args(kind, key, args)
        if process is None:
            process = threading.current_thread().name
        now = self._clock()
        with self._lock:
            op = Op(id=len(self._ops), client=client, kind=kind, key=key,
                    args=args, invoke_ns=now, process=process,
                    client_id=client_id, sequence=sequence, node=node)
            self._ops.append(op)
        return op

    def _resolve(self, handle: Op | int, outcome: str, value: Any,
                 why: str | None) -> Op:
        now = self._clock()
        with self._lock:
            op = handle if isinstance(handle, Op) else self._ops[handle]
            if op.outcome is not None:
                # A plugin bug, and one that would corrupt the verdict.
                raise RuntimeError(f"op#{op.id} {op.call_text()} is already "
                                   f"resolved as {op.outcome}; cannot make it "
                                   f"{outcome}")
            op.complete_ns = max(now, op.invoke_ns)
            op.outcome = outcome
            op.value = value
            op.why = why
        return op

    def ok(self, handle: Op | int, value: Any = None) -> Op:
        """The request was applied and answered `value` (see the module doc)."""
        op = handle if isinstance(handle, Op) else self._ops[handle]
        return self._resolve(handle, "ok", normalize_value(op.kind, value), None)

    def fail(self, handle: Op | int, why: str = "") -> Op:
        """The request was definitely not applied."""
        return self._resolve(handle, "fail", None, why or None)

    def unknown(self, handle: Op | int, why: str = "") -> Op:
        """The request may or may not have been applied."""
        return self._resolve(handle, "unknown", None, why or None)

    def record(self, client: int, kind: str, key: str | None = None,
               args: Iterable[Any] = (), *, invoke_ns: int,
               complete_ns: int | None = None, outcome: str = "ok",
               value: Any = None, why: str | None = None,
               process: str = "", client_id: int | None = None,
               sequence: int | None = None, node: int | None = None) -> Op:
        """Adds a finished op with explicit times: for hand-made histories
        and for importing one recorded elsewhere."""
        key, args = normalize_args(kind, key, args)
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r} (one of {OUTCOMES})")
        if outcome == "ok":
            value = normalize_value(kind, value)
            if complete_ns is None:
                raise ValueError("an ok op needs its completion time")
        if complete_ns is not None and complete_ns < invoke_ns:
            raise ValueError(f"{kind}: completes ({complete_ns}) before it is "
                             f"invoked ({invoke_ns})")
        with self._lock:
            op = Op(id=len(self._ops), client=client, kind=kind, key=key,
                    args=args, invoke_ns=invoke_ns, process=process,
                    complete_ns=complete_ns, outcome=outcome, value=value,
                    why=why, client_id=client_id, sequence=sequence,
                    node=node)
            self._ops.append(op)
        return op

    def observe(self, node: int, term: int, role: str, *,
                leader: int | None = None, source: str = "status",
                time_ns: int | None = None) -> Observation:
        """Records that `node` was `role` in `term` (and knew `leader`)."""
        ob = Observation(time_ns=self._clock() if time_ns is None else time_ns,
                         node=int(node), term=int(term), role=str(role).upper(),
                         leader=leader or None, source=source)
        with self._lock:
            self._obs.append(ob)
        return ob

    def observe_status(self, status: Any, time_ns: int | None = None) -> Observation:
        """Records a GetStatus answer (a StatusResponse or a dict of its fields)."""
        get = status.get if isinstance(status, dict) else (
            lambda name: getattr(status, name))
        return self.observe(get("node_id"), get("current_term"), get("state"),
                            leader=get("current_leader"), source="status",
                            time_ns=time_ns)

    # -- reading ------------------------------------------------------------

    @property
    def ops(self) -> list[Op]:
        with self._lock:
            return list(self._ops)

    @property
    def observations(self) -> list[Observation]:
        with self._lock:
            return list(self._obs)

    def start_ns(self) -> int:
        """The first invoke (or observation): a base for relative times."""
        times = [o.invoke_ns for o in self.ops] + [o.time_ns for o in self.observations]
        return min(times) if times else 0

    def summary(self) -> dict:
        """Counts for the run report: attempted / ok / fail / unknown, in all
        and per kind (in-flight ops count as unknown)."""
        out = {"attempted": 0, "ok": 0, "fail": 0, "unknown": 0, "by_kind": {}}
        for op in self.ops:
            o = op.effective_outcome()
            out["attempted"] += 1
            out[o] += 1
            k = out["by_kind"].setdefault(op.kind, {"attempted": 0, "ok": 0,
                                                    "fail": 0, "unknown": 0})
            k["attempted"] += 1
            k[o] += 1
        return out

    # -- saving -------------------------------------------------------------

    def to_records(self) -> list[dict]:
        recs = [{"type": "header", "format": FORMAT, "version": VERSION,
                 "meta": self.meta}]
        recs += [o.to_dict() for o in self.ops]
        recs += [o.to_dict() for o in self.observations]
        return recs

    @classmethod
    def from_records(cls, records: Iterable[dict]) -> "History":
        h = cls()
        ops, obs = [], []
        for n, r in enumerate(records, 1):
            t = r.get("type")
            if t == "header":
                if r.get("format") != FORMAT or r.get("version") != VERSION:
                    raise ValueError(f"record {n}: not a {FORMAT} v{VERSION} "
                                     f"header: {r!r}")
                h.meta = dict(r.get("meta") or {})
            elif t == "op":
                ops.append(Op.from_dict(r))
            elif t == "observation":
                obs.append(Observation.from_dict(r))
            else:
                raise ValueError(f"record {n}: unknown record type {t!r}")
        ops.sort(key=lambda o: o.id)
        if [o.id for o in ops] != list(range(len(ops))):
            raise ValueError("op ids must be 0, 1, 2, ... without gaps")
        h._ops, h._obs = ops, obs
        return h

    def save(self, path: str) -> None:
        """Writes the history as JSON Lines (see the module doc)."""
        with open(path, "w", encoding="utf-8") as f:
            for r in self.to_records():
                f.write(json.dumps(r, separators=(",", ":")) + "\n")

    @classmethod
    def load(cls, path: str) -> "History":
        recs = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    recs.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not JSON: {e}") from None
        return cls.from_records(recs)
