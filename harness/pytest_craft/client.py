"""A recording client of proto/raft.proto: every operation goes into a
History (history.py) as one Op, however many attempts it took.

A client is a sequential actor with its own session (client_id; one
sequence number per write, shared by every retry of it, so a retry is never
applied twice: dissertation §6.3). An operation is sent to a chosen node, or
to the leader as far as the client knows; it follows leader hints and moves
on when a node is down, until its deadline. How it ends:

  ok       a server answered OP_OK;
  fail     every attempt was definitely not applied (OP_NOT_LEADER,
           OP_UNAVAILABLE, OP_REFUSED, OP_INVALID, or a connection that was
           never made), or it is a read (a read that got no answer changed
           nothing);
  unknown  some attempt may have been applied (a deadline, a connection lost
           after sending, OP_UNKNOWN) and none said OP_OK.
"""

from __future__ import annotations

import itertools
import random
import threading
import time

import grpc

# Deadline of one attempt, and the pause before retrying a node that said
# no leader is known.
ATTEMPT_S = 1.0
PAUSE_S = 0.05

_ids = itertools.count(1)
_id_lock = threading.Lock()


class OpError(AssertionError):
    """An operation the scenario needed did not succeed."""


def _never_sent(err: grpc.RpcError) -> bool:
    """An UNAVAILABLE that means the request never left: the connection
    could not be made. Anything else may have reached the server."""
    if err.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    d = (err.details() or "").lower()
    return any(w in d for w in ("failed to connect", "connection refused",
                                "connect failed", "no route"))


class Client:
    """One sequential client. `endpoint(node_id)` gives the address to dial
    for a node (directly, or through the proxy's client link); `nodes()`
    the ids of the nodes that may be tried."""

    def __init__(self, pb, pb_grpc, history, endpoint, nodes, address_to_id,
                 number=None, rng=None):
        self.pb = pb
        self.pb_grpc = pb_grpc
        self.history = history
        self.endpoint = endpoint
        self.nodes = nodes
        self.address_to_id = address_to_id
        with _id_lock:
            self.number = number if number is not None else next(_ids)
        # Session ids must differ across clients and runs; 63 bits.
        self.client_id = random.getrandbits(62) | 1
        self.sequence = 0
        self.rng = rng or random.Random(self.client_id)
        self.leader_guess = None
        self._channels = {}

    def close(self):
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()

    def _stub(self, node_id):
        addr = self.endpoint(node_id)
        ch = self._channels.get(addr)
        if ch is None:
            ch = grpc.insecure_channel(addr, options=[
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 500)])
            self._channels[addr] = ch
        return self.pb_grpc.RaftServiceStub(ch)

    def _drop_channel(self, node_id):
        ch = self._channels.pop(self.endpoint(node_id), None)
        if ch is not None:
            ch.close()

    # -- one operation ------------------------------------------------------

    def _request(self, kind, key, args, session):
        pb = self.pb
        cid, seq = (self.client_id, self.sequence) if session else (0, 0)
        if kind == "add":
            return "Add", pb.AddRequest(num1=args[0], num2=args[1],
                                        client_id=cid, sequence=seq)
        if kind == "total":
            return "Read", pb.ReadRequest(key="")
        kv = pb.KeyValueRequest(key=key, client_id=cid, sequence=seq)
        if kind == "put":
            kv.value = str(args[0])
            return "Put", kv
        if kind == "get":
            return "Read", pb.ReadRequest(key=key)  # it says if K exists
        if kind == "cas":
            kv.expected, kv.value = str(args[0]), str(args[1])
            return "CompareAndSwap", kv
        if kind == "incr":
            kv.delta = int(args[0])
            return "Increment", kv
        if kind == "del":
            return "Delete", kv
        raise ValueError(f"unknown operation {kind}")

    def _value(self, kind, resp):
        """The answer, in history.py's terms, of an OP_OK response."""
        if kind == "add":
            return {"sum": resp.sum, "total": resp.total}
        if kind == "total":
            return int(resp.value)
        if kind == "get":
            return resp.value if resp.found else None
        if kind == "cas":
            return resp.result.strip() == "true"
        if kind == "incr":
            return int(resp.result)
        if kind == "del":
            return resp.result.strip() == "1"
        return resp.result

    def run(self, kind, key=None, args=(), via=None, deadline_s=10.0,
            sticky=False):
        """Performs one operation; returns the resolved Op. `via`: the node
        to send it to first; `sticky`: only to that node (it forwards)."""
        session = kind not in ("get", "total")
        if session:
            self.sequence += 1
        method, req = self._request(kind, key, args, session)
        target = via or self.leader_guess or self.rng.choice(self.nodes())
        op = self.history.invoke(
            self.number, kind, key, args,
            client_id=self.client_id if session else None,
            sequence=self.sequence if session else None, node=target)
        end = time.monotonic() + deadline_s
        maybe = None  # why an earlier attempt may have been applied
        last = "no attempt"
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            try:
                resp = getattr(self._stub(target), method)(
                    req, timeout=min(ATTEMPT_S, left))
            except grpc.RpcError as e:
                last = f"node {target}: {e.code().name} {e.details()}"
                if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    return self.history.fail(op, last)
                if not _never_sent(e):
                    maybe = maybe or last
                self._drop_channel(target)
                if not sticky:
                    target = self._next(target)
                time.sleep(PAUSE_S)
                continue
            status = resp.status
            if status == self.pb.OP_OK:
                self.leader_guess = target if not sticky else self.leader_guess
                return self.history.ok(op, self._value(kind, resp))
            last = (f"node {target}: {self.pb.OpStatus.Name(status)} "
                    f"{getattr(resp, 'error', '')}")
            if status == self.pb.OP_INVALID:
                return self.history.fail(op, last)
            if status == self.pb.OP_UNKNOWN:
                maybe = maybe or last
            hint = self.address_to_id(resp.leader_address) \
                if resp.leader_address else None
            if not sticky:
                if status == self.pb.OP_NOT_LEADER and hint:
                    target = hint
                elif status != self.pb.OP_UNKNOWN:
                    target = self._next(target) if not hint else hint
            time.sleep(PAUSE_S)
        if maybe is not None and session:
            return self.history.unknown(op, f"{maybe}; then {last}")
        return self.history.fail(op, last)

    def _next(self, target):
        ids = sorted(self.nodes())
        if not ids:
            return target
        self.leader_guess = None
        others = [i for i in ids if i != target] or ids
        return self.rng.choice(others)


def require_ok(op, expect=None):
    """Raises OpError unless op is ok (and, with `expect`, answered it)."""
    if op.outcome != "ok":
        raise OpError(f"{op.call_text()}: {op.outcome}: {op.why}")
    if expect is not None:
        got = op.value["sum"] if op.kind == "add" else op.value
        if got != expect:
            raise OpError(f"{op.call_text()}: answered {got!r}, expected "
                          f"{expect!r}")
    return op
