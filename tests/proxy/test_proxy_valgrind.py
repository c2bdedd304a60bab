"""craft-proxy under valgrind memcheck: a short forwarding load with every
fault, cancellations, a dead target, link changes and a stop with calls in
flight; then no memory error and no definitely or indirectly lost block
(with tests/blackbox/valgrind.supp: abseil's static random pool, see
GRPC-C-CORE.md). About a minute.

    CRAFT_PROXY=build/harness/proxy/craft-proxy /usr/bin/python3 -m pytest -m valgrind tests/proxy
"""

import re
import shutil
import socket

import grpc
import pytest

from test_proxy_faults import ECHO, OTHER, STREAM, chunks, code, timed

SUPP = __import__("pathlib").Path(__file__).resolve().parents[1] / "blackbox" / "valgrind.supp"


@pytest.mark.valgrind
def test_valgrind_clean(proxy_factory, server_factory, tmp_path):
    # A missing valgrind fails the test: a skip would pass in CTest.
    assert shutil.which("valgrind"), "valgrind is not installed (ci/install-deps.sh installs it)"
    server = server_factory()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    log = tmp_path / "valgrind.log"
    p = proxy_factory(
        ["--seed", "9", "--link", f"1-2=127.0.0.1:0,{server.address}",
         "--link", f"1-3=127.0.0.1:0,127.0.0.1:{dead}",
         # Partitions know node 1 only as the target of a link.
         "--link", f"2-1=127.0.0.1:0,{server.address}", "--unary", ECHO],
        wrapper=[
            "valgrind", f"--suppressions={SUPP}", "--leak-check=full",
            "--show-leak-kinds=definite,indirect,possible",
            "--errors-for-leak-kinds=definite,indirect", "--track-origins=yes",
            "--num-callers=30", f"--log-file={log}",
        ],
        ready_timeout=120,
    )
    ch = grpc.insecure_channel(p.listen("1-2"), options=[("grpc.enable_retries", 0)])
    dead_ch = grpc.insecure_channel(p.listen("1-3"))
    fn, stream = ch.unary_unary(ECHO), ch.stream_unary(STREAM)
    T = 30  # valgrind slows the proxy down 20-50 times

    # The first connection to the target may take a while under valgrind.
    p.wait_for(lambda: code(timed(fn, b"plain", timeout=T)[0]) == grpc.StatusCode.OK,
               60, "a first call through the proxy")
    for i in range(20):
        assert fn(b"plain", timeout=T) == b"echo:plain"
    p.set_fault("1-2", "drop-request", probability=0.2)
    p.set_fault("1-2", "drop-response", probability=0.2)
    p.set_fault("1-2", "duplicate", probability=0.3, jitter_ms=20)
    p.set_fault("1-2", "delay-request", probability=0.3, jitter_ms=30)
    p.set_fault("1-2", "delay-response", probability=0.3, delay_ms=5)
    p.set_fault("1-2", "reset", probability=0.05, method=STREAM)
    other = ch.unary_unary(OTHER)  # not declared unary: the generic path
    futures = [(fn if i % 2 else other).future(b"load", timeout=T) for i in range(80)]
    futures += [stream.future(iter(chunks(5, seed=i)), timeout=T) for i in range(6)]
    for f in futures[::5]:
        f.cancel()
    for f in futures:
        try:
            f.result(T + 10)
        except (grpc.RpcError, grpc.FutureCancelledError):
            pass
    p.clear(links="*")
    for m in (ECHO, OTHER):
        assert code(timed(dead_ch.unary_unary(m), b"d", timeout=T)[0]) == grpc.StatusCode.UNAVAILABLE
    assert list(ch.unary_stream("/test.Echo/Fanout")(b"3", timeout=T)) == [b"part-0", b"part-1", b"part-2"]
    p.partition("isolate 1")
    assert code(timed(fn, b"p", timeout=T)[0]) == grpc.StatusCode.UNAVAILABLE
    p.heal()
    with pytest.raises(grpc.RpcError):
        p.set_fault("1-2", "drop-request", probability=7)
    p.set_fault("1-2", "blackhole", method="/test.Echo/Black")
    bh = ch.unary_unary("/test.Echo/Black").future(b"b", timeout=T)
    p.hold("1-3")
    held = dead_ch.unary_unary(ECHO).future(b"h", timeout=T)
    p.wait_for(lambda: p.links()["1-3"].held_calls == 1, T, "held")
    assert p.remove_link("1-3").cancelled_calls == 1
    p.add_link("1-3", server.address)
    p.hold("1-2")
    last = [fn.future(b"last", timeout=T) for _ in range(3)]
    p.wait_for(lambda: p.links()["1-2"].held_calls == 3, T, "held at the stop")
    assert p.stop(timeout=120) == 0
    for f in [held, bh] + last:
        with pytest.raises(grpc.RpcError):
            f.result(T)
    ch.close()
    dead_ch.close()

    text = log.read_text(errors="replace")
    errors = re.search(r"ERROR SUMMARY: (\d+) errors", text)
    assert errors is not None, f"no valgrind summary in {log}"
    lost = {
        kind: int(m.group(1).replace(",", ""))
        for kind in ("definitely", "indirectly")
        for m in [re.search(kind + r" lost: ([\d,]+) bytes", text)]
        if m
    }
    assert errors.group(1) == "0" and not any(lost.values()), (
        f"valgrind: {errors.group(0)}, lost {lost}; see {log}:\n" + text[-6000:]
    )
