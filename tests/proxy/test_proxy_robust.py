"""What callers and targets can do to the proxy: a target that is down or
vanishes, a caller that cancels or sends too much or garbage, many calls
at once, a stop with calls in flight. The proxy must survive all of it
(the fixtures fail a test whose proxy died or did not stop cleanly)."""

import socket
import threading
import time

import grpc
import pytest

from test_proxy_faults import ECHO, STREAM, chunks, code, settled, timed

from pytest_craft import craft_proxy


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_target_down_unavailable_quickly_then_back(proxy_factory, server_factory):
    port = free_port()  # nobody listens there (yet)
    p = proxy_factory(["--link", f"1-2=127.0.0.1:0,127.0.0.1:{port}", "--seed", "1"])
    with grpc.insecure_channel(p.listen("1-2")) as ch:
        fn = ch.unary_unary(ECHO)
        for _ in range(5):
            r, took = timed(fn, b"x", timeout=5)
            assert code(r) == grpc.StatusCode.UNAVAILABLE, r
            assert took < 1.0
        server = server_factory(port)
        # Reconnect backoff is at most 1 s (GRPC-C-CORE.md).
        p.wait_for(lambda: code(timed(fn, b"y", timeout=2)[0]) == grpc.StatusCode.OK, 5,
                   "the target is reached again")
        assert server.count() >= 1


def test_target_vanishes_mid_call(proxy_factory, server_factory):
    server = server_factory()
    p = proxy_factory(["--link", f"1-2=127.0.0.1:0,{server.address}"])
    with grpc.insecure_channel(p.listen("1-2")) as ch:
        f = ch.unary_unary(ECHO).future(b"x", timeout=10, metadata=[("x-sleep-ms", "5000")])
        server.wait_calls(1, 5)
        t = time.monotonic()
        server.stop()
        try:
            f.result(5)
            raise AssertionError("the call succeeded")
        except grpc.RpcError as e:
            assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), e
        assert time.monotonic() - t < 3
        assert p.alive()
        r, took = timed(ch.unary_unary(ECHO), b"y", timeout=5)
        assert code(r) == grpc.StatusCode.UNAVAILABLE and took < 2


def test_caller_cancels_held_call(link, server):
    p, ch = link
    p.hold("1-2")
    f = ch.unary_unary(ECHO).future(b"x", timeout=10)
    p.wait_for(lambda: p.links()["1-2"].held_calls == 1, 5, "held")
    f.cancel()
    p.wait_for(lambda: p.links()["1-2"].active_calls == 0, 5, "cancelled call gone")
    assert p.links()["1-2"].held_calls == 0
    assert p.release("1-2").released_calls == 0
    time.sleep(0.1)
    assert server.count() == 0
    c = settled(p)
    assert (c.calls, c.held, c.failed, c.forwarded) == (1, 1, 1, 0)


def test_caller_cancels_delayed_call(link, server):
    p, ch = link
    p.set_fault("1-2", "delay-request", delay_ms=500)
    f = ch.unary_unary(ECHO).future(b"x", timeout=10)
    time.sleep(0.1)
    f.cancel()
    time.sleep(0.7)
    assert server.count() == 0
    assert settled(p).failed == 1


def test_caller_cancel_reaches_the_target(link, server):
    p, ch = link
    f = ch.unary_unary(ECHO).future(b"x", timeout=10, metadata=[("x-sleep-ms", "3000")])
    (c,) = server.wait_calls(1, 5)
    f.cancel()
    (c,) = server.wait_calls(1, 2, finished=True)
    assert c.cancelled and c.finished - c.arrived < 2


def test_caller_cancels_mid_stream(link, server):
    """The target must see a cancelled stream, not a complete one."""
    p, ch = link
    sent = threading.Event()
    stop = threading.Event()

    def parts():
        for part in chunks(3):
            yield part
        sent.set()
        stop.wait(10)

    f = ch.stream_unary(STREAM).future(parts(), timeout=10)
    assert sent.wait(5)
    server.wait_calls(1, 5, "/Stream")
    time.sleep(0.2)
    f.cancel()
    stop.set()
    (c,) = server.wait_calls(1, 5, "/Stream", finished=True)
    assert c.cancelled and not c.complete
    assert p.alive()


@pytest.mark.parametrize("path", ["generic", "unary"])
def test_message_too_large(proxy_factory, server, path):
    extra = ["--unary", ECHO] if path == "unary" else []
    p = proxy_factory(["--link", f"1-2=127.0.0.1:0,{server.address}", "--max-message-bytes", "65536", *extra])
    with grpc.insecure_channel(p.listen("1-2")) as ch:
        fn = ch.unary_unary(ECHO)
        r, _ = timed(fn, b"x" * 100000, timeout=5)
        assert code(r) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert fn(b"small", timeout=5) == b"echo:small"
        # Too large in the middle of a stream.
        parts = [b"a" * 1000, b"b" * 100000, b"c"]
        r, _ = timed(ch.stream_unary(STREAM), iter(parts), timeout=5)
        assert code(r) == grpc.StatusCode.RESOURCE_EXHAUSTED
    c = server.wait_calls(1, 5)
    assert server.count(STREAM) in (0, 1)
    if server.count(STREAM):
        (s,) = server.wait_calls(1, 5, "/Stream", finished=True)
        assert not s.complete  # never a truncated stream taken as whole
    assert c[0].requests == [b"small"]


def test_garbage_on_a_listener(link, server):
    p, ch = link
    host, port = p.listen("1-2").rsplit(":", 1)
    for junk in (
        b"\x00" * 100,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(range(256)) * 8,
    ):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(junk)
        s.close()
    idle = socket.create_connection((host, int(port)), timeout=5)  # left open
    assert ch.unary_unary(ECHO)(b"still", timeout=5) == b"echo:still"
    idle.close()


def test_many_calls_with_faults(link, server):
    p, ch = link
    p.set_fault("1-2", "drop-request", probability=0.2)
    p.set_fault("1-2", "drop-response", probability=0.2)
    p.set_fault("1-2", "delay-request", probability=0.3, jitter_ms=50)
    p.set_fault("1-2", "duplicate", probability=0.2, jitter_ms=30)
    fn = ch.unary_unary(ECHO)
    futures = [fn.future(str(i).encode(), timeout=10) for i in range(300)]
    for f in futures[::7]:
        f.cancel()
    ok = 0
    for i, f in enumerate(futures):
        try:
            assert f.result(15) == b"echo:" + str(i).encode()
            ok += 1
        except grpc.FutureCancelledError:
            pass
        except grpc.RpcError as e:
            assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), e
    c = settled(p, deadline=10)
    # A cancelled call may never have reached the proxy, or have been
    # cancelled after the proxy delivered its answer.
    cancelled = len(futures[::7])
    assert 300 - cancelled <= c.calls <= 300 and ok <= c.ok <= ok + cancelled
    # Originals forwarded: every call that was neither dropped nor
    # cancelled first; at least those answered OK or with a dropped answer.
    originals = c.forwarded - c.duplicated
    assert c.ok + c.responses_dropped <= originals <= c.calls - c.requests_dropped
    p.wait_for(lambda: p.links()["1-2"].active_calls == 0, 10, "every call ended")
    # Every copy the proxy forwarded reached the target (cancelled ones
    # may have been cut on the way).
    assert server.count() <= c.forwarded


def test_stop_with_calls_in_flight(proxy_factory, server):
    p = proxy_factory(["--link", f"1-2=127.0.0.1:0,{server.address}"])
    p.hold("1-2")
    with grpc.insecure_channel(p.listen("1-2")) as ch:
        fn = ch.unary_unary(ECHO)
        held = [fn.future(b"h", timeout=10) for _ in range(3)]
        busy = fn.future(b"b", timeout=10, metadata=[("x-sleep-ms", "5000")])
        p.wait_for(lambda: p.links()["1-2"].held_calls == 4, 5, "held")
        t = time.monotonic()
        assert p.clear(links="*").released_calls == 4  # busy goes to the target
        server.wait_calls(1, 5)
        p.hold("1-2")
        held += [fn.future(b"h", timeout=10) for _ in range(2)]
        p.wait_for(lambda: p.links()["1-2"].held_calls >= 1, 5, "held again")
        assert p.stop() == 0
        assert time.monotonic() - t < 5
        for f in held[3:] + [busy]:
            try:
                f.result(5)
                raise AssertionError("a call succeeded after the proxy stopped")
            except grpc.RpcError as e:
                assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), e


def test_bad_flags_are_refused(tmp_path):
    import subprocess

    binary = str(craft_proxy.proxy_path())
    for args, text in (
        (["--link", "1-2=127.0.0.1:0"], "FROM-TO=LISTEN,TARGET"),
        (["--link", "1-1=127.0.0.1:0,127.0.0.1:1"], "two different nodes"),
        (["--seed", "x"], "--seed"),
        (["--node", "1=nohost"], "HOST:PORT"),
        (["--bogus", "1"], "unknown"),
        (["--cluster", str(tmp_path / "none")], "cannot open"),
    ):
        r = subprocess.run([binary, *args], capture_output=True, text=True, timeout=10)
        assert r.returncode == 2, (args, r.stderr)
        assert text in r.stderr, (args, r.stderr)
    r = subprocess.run([binary, "--control", "0.0.0.0:0"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "loopback" in r.stderr
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    busy = s.getsockname()[1]
    r = subprocess.run([binary, "--link", f"1-2=127.0.0.1:{busy},127.0.0.1:1"],
                       capture_output=True, text=True, timeout=10)
    s.close()
    assert r.returncode == 1 and "cannot listen" in r.stderr, r.stderr
