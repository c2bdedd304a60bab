"""Forwarding and faults through one link: each fault has the effect it
claims, as seen by the caller and by the target (echo_server.py)."""

import hashlib
import os
import time

import grpc

ECHO = "/test.Echo/Echo"
OTHER = "/test.Other/Echo"
STREAM = "/test.Echo/Stream"
FANOUT = "/test.Echo/Fanout"


def unary(ch, method=ECHO):
    return ch.unary_unary(method)


def timed(fn, *args, **kw):
    """(result or RpcError, seconds)"""
    t = time.monotonic()
    try:
        r = fn(*args, **kw)
    except grpc.RpcError as e:
        r = e
    return r, time.monotonic() - t


def code(r):
    return r.code() if isinstance(r, grpc.RpcError) else grpc.StatusCode.OK


def settled(p, link="1-2", method=ECHO, deadline=5):
    """The counters of (link, method) once every call has ended: a call
    is counted ok or failed when the proxy sees it close, a moment after
    the caller has its status."""

    def done():
        c = p.counters().get((link, method))
        return c if c is not None and c.ok + c.failed == c.calls else None

    return p.wait_for(done, deadline, f"counters of {link} {method} settle")


# -- forwarding ---------------------------------------------------------------


def test_unary_forwarded_intact(link, server):
    p, ch = link
    payloads = [b"", b"x", os.urandom(100), os.urandom(1 << 20)]
    for data in payloads:
        r, call = unary(ch).with_call(
            data,
            timeout=10,
            metadata=[("x-req", "a b"), ("x-data-bin", b"\x00\xff\x10")],
        )
        assert r == b"echo:" + data
        assert ("x-init", "1") in [(m.key, m.value) for m in call.initial_metadata()]
        trail = {m.key: m.value for m in call.trailing_metadata()}
        assert trail["x-trail"] == "2" and trail["x-bin-bin"] == b"\x00\x01"
    got = server.wait_calls(len(payloads), 5)
    assert [c.requests[0] for c in got] == payloads
    assert got[0].metadata["x-req"] == "a b"
    assert got[0].metadata["x-data-bin"] == b"\x00\xff\x10"
    c = settled(p, method=ECHO)
    total = sum(len(d) for d in payloads)
    assert (c.calls, c.forwarded, c.ok, c.failed) == (4, 4, 0 + 4, 0)
    assert c.request_bytes == total
    assert c.response_bytes == total + 5 * len(payloads)


def test_status_and_details_relayed(link, server):
    p, ch = link
    r, _ = timed(
        unary(ch), b"q", timeout=5, metadata=[("x-status", "NOT_FOUND"), ("x-details", "no such key")]
    )
    assert code(r) == grpc.StatusCode.NOT_FOUND
    assert r.details() == "no such key"
    c = settled(p, method=ECHO)
    assert (c.calls, c.forwarded, c.ok, c.failed) == (1, 1, 0, 1)


def test_deadline_forwarded(link, server):
    p, ch = link
    r, took = timed(unary(ch), b"slow", timeout=0.6, metadata=[("x-sleep-ms", "3000")])
    assert code(r) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.55 <= took < 2.0
    (c,) = server.wait_calls(1, 5)
    # The target got the caller's deadline, less the time to get there.
    assert c.time_remaining is not None and 0.2 < c.time_remaining <= 0.6


def chunks(n, seed=1):
    rnd = hashlib.sha256(str(seed).encode()).digest()
    out = []
    for i in range(n):
        size = (i * 7919) % (256 * 1024)
        out.append((rnd * (size // 32 + 1))[:size])
    return out


def stream_reply(parts):
    data = b"".join(parts)
    return f"chunks={len(parts)} bytes={len(data)} sha={hashlib.sha256(data).hexdigest()}".encode()


def test_client_streaming_forwarded_intact(link, server):
    p, ch = link
    parts = chunks(40)
    r = ch.stream_unary(STREAM)(iter(parts), timeout=20)
    assert r == stream_reply(parts)
    (c,) = server.wait_calls(1, 5, "/Stream", finished=True)
    assert c.requests == parts and c.complete
    # An empty stream is forwarded too.
    assert ch.stream_unary(STREAM)(iter([]), timeout=5) == stream_reply([])
    cnt = settled(p, method=STREAM)
    assert cnt.calls == 2 and cnt.ok == 2
    assert cnt.request_bytes == sum(len(x) for x in parts)


def test_server_streaming_forwarded(link, server):
    p, ch = link
    assert list(ch.unary_stream(FANOUT)(b"5", timeout=5)) == [
        f"part-{i}".encode() for i in range(5)
    ]
    assert list(ch.unary_stream(FANOUT)(b"0", timeout=5)) == []


# -- drops ----------------------------------------------------------------------


def test_drop_request(link, server):
    p, ch = link
    fid = p.set_fault("1-2", "drop-request", method=ECHO)
    r, took = timed(unary(ch), b"a", timeout=5)
    assert code(r) == grpc.StatusCode.UNAVAILABLE and took < 1.0
    assert f"fault {fid}" in r.details()
    # Other methods pass.
    assert unary(ch, OTHER)(b"b", timeout=5) == b"echo:b"
    time.sleep(0.2)
    assert server.count(ECHO) == 0 and server.count(OTHER) == 1
    c = settled(p, method=ECHO)
    assert (c.calls, c.forwarded, c.requests_dropped, c.failed) == (1, 0, 1, 1)


def test_drop_request_blackhole(link, server):
    p, ch = link
    p.set_fault("1-2", "drop-request", blackhole=True)
    r, took = timed(unary(ch), b"a", timeout=0.5)
    assert code(r) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.45 <= took < 2.0
    time.sleep(0.1)
    assert server.count() == 0
    p.wait_for(lambda: p.links()["1-2"].active_calls == 0, 5, "blackholed call gone")


def test_drop_response(link, server):
    p, ch = link
    p.set_fault("1-2", "drop-response")
    r, took = timed(unary(ch), b"executed", timeout=5)
    assert code(r) == grpc.StatusCode.UNAVAILABLE and took < 1.0
    assert "answer dropped" in r.details()
    # The target ran it.
    (c,) = server.wait_calls(1, 5)
    assert c.requests == [b"executed"]
    cnt = settled(p, method=ECHO)
    assert (cnt.forwarded, cnt.responses_dropped, cnt.response_bytes, cnt.failed) == (1, 1, 0, 1)


def test_drop_response_blackhole(link, server):
    p, ch = link
    p.set_fault("1-2", "drop-response", blackhole=True)
    r, took = timed(unary(ch), b"x", timeout=0.5)
    assert code(r) == grpc.StatusCode.DEADLINE_EXCEEDED and 0.45 <= took < 2.0
    server.wait_calls(1, 5)


def test_blackhole(link, server):
    p, ch = link
    p.set_fault("1-2", "blackhole")
    r, took = timed(unary(ch), b"x", timeout=0.4)
    assert code(r) == grpc.StatusCode.DEADLINE_EXCEEDED and 0.35 <= took < 2.0
    time.sleep(0.1)
    assert server.count() == 0
    assert settled(p, method=ECHO).blackholed == 1


def test_reset(link, server):
    p, ch = link
    p.set_fault("1-2", "reset")
    r, took = timed(unary(ch), b"x", timeout=5)
    assert code(r) == grpc.StatusCode.UNAVAILABLE and took < 0.5
    assert "reset" in r.details()
    time.sleep(0.1)
    assert server.count() == 0
    assert settled(p, method=ECHO).reset == 1


# -- delays ---------------------------------------------------------------------


def test_delay_request(link, server):
    p, ch = link
    p.set_fault("1-2", "delay-request", delay_ms=200)
    sent = time.monotonic()
    r, took = timed(unary(ch), b"d", timeout=5)
    assert r == b"echo:d"
    (c,) = server.wait_calls(1, 1)
    assert c.arrived - sent >= 0.2
    assert 0.2 <= took < 1.2
    assert settled(p, method=ECHO).requests_delayed == 1


def test_delay_response(link, server):
    p, ch = link
    p.set_fault("1-2", "delay-response", delay_ms=250)
    sent = time.monotonic()
    r, took = timed(unary(ch), b"d", timeout=5)
    assert r == b"echo:d"
    (c,) = server.wait_calls(1, 1)
    # The target answered at once; the answer waited in the proxy.
    assert c.arrived - sent < 0.2
    assert 0.25 <= took < 1.2
    assert settled(p, method=ECHO).responses_delayed == 1


def test_delay_jitter_within_bounds(link, server):
    p, ch = link
    p.set_fault("1-2", "delay-request", delay_ms=50, jitter_ms=100)
    took = []
    for i in range(12):
        r, t = timed(unary(ch), b"j", timeout=5)
        assert r == b"echo:j"
        took.append(t)
    assert min(took) >= 0.05
    assert max(took) < 0.15 + 0.8  # the upper bound, with room for a busy machine
    assert max(took) - min(took) > 0.01  # not a fixed delay


def test_long_random_delays_reorder(link, server):
    p, ch = link
    p.set_fault("1-2", "delay-request", delay_ms=0, jitter_ms=400)
    fn = unary(ch)
    futures = []
    for i in range(10):
        futures.append(fn.future(str(i).encode(), timeout=10))
        time.sleep(0.01)
    assert [f.result() for f in futures] == [b"echo:" + str(i).encode() for i in range(10)]
    order = [c.requests[0] for c in server.wait_calls(10, 5)]
    assert sorted(order) == [str(i).encode() for i in range(10)]
    assert order != sorted(order), "seed 42 reorders these calls"


# -- duplicates -------------------------------------------------------------------


def test_duplicate(link, server):
    p, ch = link
    p.set_fault("1-2", "duplicate")
    r, took = timed(unary(ch), b"twice", timeout=5)
    assert r == b"echo:twice"  # one answer
    got = server.wait_calls(2, 5)
    assert [c.requests for c in got] == [[b"twice"], [b"twice"]]
    time.sleep(0.2)
    assert server.count() == 2
    c = settled(p, method=ECHO)
    assert (c.calls, c.forwarded, c.duplicated, c.ok) == (1, 2, 1, 1)


def test_duplicate_later(link, server):
    p, ch = link
    p.set_fault("1-2", "duplicate", delay_ms=300)
    sent = time.monotonic()
    r, took = timed(unary(ch), b"later", timeout=5)
    assert r == b"echo:later" and took < 0.3
    first, second = server.wait_calls(2, 5)
    assert second.arrived - sent >= 0.3
    assert second.requests == [b"later"]


def test_duplicate_client_stream(link, server):
    p, ch = link
    p.set_fault("1-2", "duplicate", method=STREAM, delay_ms=100)
    parts = chunks(12, seed=3)
    assert ch.stream_unary(STREAM)(iter(parts), timeout=10) == stream_reply(parts)
    got = server.wait_calls(2, 5, "/Stream", finished=True)
    assert all(c.requests == parts and c.complete for c in got)


# -- hold, release --------------------------------------------------------------


def test_hold_and_release(link, server):
    p, ch = link
    fid = p.hold("1-2")
    fn = unary(ch)
    futures = [fn.future(str(i).encode(), timeout=10) for i in range(3)]
    p.wait_for(lambda: p.links()["1-2"].held_calls == 3, 5, "3 calls held")
    time.sleep(0.2)
    assert server.count() == 0
    assert not any(f.done() for f in futures)
    r = p.release("1-2")
    assert r.released_calls == 3 and list(r.removed_ids) == [fid]
    assert [f.result(5) for f in futures] == [b"echo:0", b"echo:1", b"echo:2"]
    # All three reach the target now (in no order the Python server's
    # thread pool would keep).
    assert sorted(c.requests[0] for c in server.wait_calls(3, 2)) == [b"0", b"1", b"2"]
    assert settled(p, method=ECHO).held == 3
    # The hold is gone: new calls pass.
    assert fn(b"after", timeout=5) == b"echo:after"


def test_held_call_meets_its_deadline(link, server):
    p, ch = link
    p.hold("1-2")
    r, took = timed(unary(ch), b"x", timeout=0.4)
    assert code(r) == grpc.StatusCode.DEADLINE_EXCEEDED
    p.wait_for(lambda: p.links()["1-2"].held_calls == 0, 5, "expired call leaves the hold")
    assert p.release("1-2").released_calls == 0
    time.sleep(0.1)
    assert server.count() == 0


def test_clearing_a_hold_releases(link, server):
    p, ch = link
    fid = p.hold("1-2", method=ECHO)
    f = unary(ch).future(b"h", timeout=10)
    p.wait_for(lambda: p.links()["1-2"].held_calls == 1, 5, "call held")
    r = p.clear(ids=[fid])
    assert r.released_calls == 1
    assert f.result(5) == b"echo:h"


# -- reproducibility --------------------------------------------------------------


def outcomes(proxy_factory, server, seed, n=120):
    p = proxy_factory(["--link", f"1-2=127.0.0.1:0,{server.address}", "--seed", str(seed)])
    p.set_fault("1-2", "drop-request", probability=0.5)
    with grpc.insecure_channel(p.listen("1-2")) as ch:
        fn = unary(ch)
        out = "".join("." if code(timed(fn, b"p", timeout=5)[0]) == grpc.StatusCode.OK else "x" for _ in range(n))
    p.stop()
    return out


def test_same_seed_same_decisions(proxy_factory, server):
    a = outcomes(proxy_factory, server, 7)
    b = outcomes(proxy_factory, server, 7)
    c = outcomes(proxy_factory, server, 8)
    assert a == b, f"seed 7 twice:\n{a}\n{b}"
    assert a != c
    # p=0.5 over 120 calls: 5 sigma is 27 either side of 60.
    assert 33 <= a.count("x") <= 87
    assert server.count() == a.count(".") + b.count(".") + c.count(".")


def test_probability_zero_never_fires(link, server):
    p, ch = link
    p.set_fault("1-2", "reset", probability=0.0)
    for _ in range(20):
        assert unary(ch)(b"z", timeout=5) == b"echo:z"
