"""The control API and `craft-proxy ctl`: bad input is refused and changes
nothing; partitions cut what they say; links come and go at run time;
counters and the timeline agree with what was sent and switched."""

import json
import re
import subprocess
import time
from datetime import datetime, timezone

import grpc
import pytest

from pytest_craft import craft_proxy
from test_proxy_faults import ECHO, OTHER, code, settled, timed

pb = None


@pytest.fixture(autouse=True)
def _pb(stubs):
    global pb
    pb = stubs[0]


def refused(fn, *args, text, **kw):
    with pytest.raises(grpc.RpcError) as e:
        fn(*args, **kw)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
    assert text in e.value.details(), e.value.details()


def test_bad_control_input_changes_nothing(link, server):
    p, ch = link
    good = p.set_fault("1-2", "delay-request", delay_ms=5)
    before = (p.faults(), p.timeline(), {n: l.listen for n, l in p.links().items()})
    F = pb.Fault

    def setf(**kw):
        return p.call("SetFault", pb.SetFaultRequest(fault=F(**kw)))

    refused(setf, links="1-9", kind=1, text="unknown link 1-9")
    refused(setf, links="7-*x", kind=1, text="not a link selector")
    refused(setf, links="1-2", kind=1, probability=1.5, text="outside [0, 1]")
    refused(setf, links="1-2", kind=1, probability=-0.1, text="outside [0, 1]")
    refused(setf, links="1-2", kind=3, delay_ms=-5, text="delay_ms -5 is negative")
    refused(setf, links="1-2", kind=3, delay_ms=5, jitter_ms=-1, text="negative")
    refused(setf, links="1-2", kind=3, delay_ms=10**9, text="above")
    refused(setf, links="1-2", kind=0, text="kind is missing")
    refused(setf, links="1-2", kind=1, delay_ms=5, text="takes no delay")
    refused(setf, links="1-2", kind=1, method="Echo", text="full method name")
    refused(p.call, "SetFault", pb.SetFaultRequest(), text="no fault")
    refused(p.partition, "isolate 9", text="node 9")
    refused(p.partition, "halves 1|2", text="unknown partition")
    refused(p.partition, "components 2", text="two groups")
    refused(p.partition, "isolate 1", text="node 1 is the target of no link")
    refused(p.clear, ids=[999], text="no fault with id 999")
    refused(p.clear, ids=[good, 999], text="no fault with id 999")
    refused(p.call, "ClearFaults", pb.ClearFaultsRequest(), text="either ids or links")
    refused(p.call, "ClearFaults", pb.ClearFaultsRequest(ids=[good], links="*"), text="either ids or links")
    refused(p.release, "9-1", text="unknown link 9-1")
    refused(p.remove_link, "2-1", text="unknown link 2-1")
    refused(p.add_link, "1-2", server.address, text="exists already")
    refused(p.add_link, "3-3", server.address, text="two different nodes")
    refused(p.add_link, "3-4", "nowhere", text="not HOST:PORT")
    refused(p.counters, links="x", text="not a link selector")
    # Not even a request of the right type.
    with pytest.raises(grpc.RpcError) as e:
        p._channel.unary_unary("/craft.proxy.ProxyControl/SetFault")(b"\xff\xff\xff", timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = (p.faults(), p.timeline(), {n: l.listen for n, l in p.links().items()})
    assert after == before
    # The good fault still works.
    assert ch.unary_unary(ECHO)(b"ok", timeout=5) == b"echo:ok"


def three_nodes(proxy_factory, server_factory):
    """A proxy with every link between 3 target servers (nodes 1-3)."""
    servers = {i: server_factory() for i in (1, 2, 3)}
    args = ["--seed", "3"]
    for i, s in servers.items():
        args += ["--node", f"{i}={s.address}"]
    p = proxy_factory(args)
    chans = {name: grpc.insecure_channel(l.listen) for name, l in p.links().items()}
    return p, servers, chans


def reachable(chans, name):
    r, _ = timed(chans[name].unary_unary(ECHO), b"r", timeout=2)
    return code(r) == grpc.StatusCode.OK


def matrix(chans):
    return {name: reachable(chans, name) for name in sorted(chans)}


def test_partitions(proxy_factory, server_factory):
    p, servers, chans = three_nodes(proxy_factory, server_factory)
    assert sorted(chans) == ["1-2", "1-3", "2-1", "2-3", "3-1", "3-2"]
    assert all(matrix(chans).values())

    r = p.partition("isolate 1")
    assert [(c.from_id, c.to_id) for c in r.cuts] == [(1, 2), (1, 3), (2, 1), (3, 1)]
    before = servers[1].count()
    assert matrix(chans) == {
        "1-2": False, "1-3": False, "2-1": False, "2-3": True, "3-1": False, "3-2": True,
    }
    # Dropped requests never reached node 1.
    assert servers[1].count() == before

    # A new partition replaces the old one.
    r2 = p.partition("one-way 1>2")
    assert sorted(r2.replaced_ids) == sorted(r.fault_ids)
    before, before2 = servers[1].count(), servers[2].count()
    assert matrix(chans) == {
        "1-2": False, "1-3": True, "2-1": False, "2-3": True, "3-1": True, "3-2": True,
    }
    # 2's call reached node 1 (which answered): only the answer was lost.
    assert servers[1].count() == before + 2  # from 2 and from 3
    assert servers[2].count() == before2 + 1  # from 3; 1-2 never got through
    kinds = sorted((f.links, f.kind) for f in p.faults())
    assert kinds == [("1-2", pb.DROP_REQUEST), ("2-1", pb.DROP_RESPONSE)]

    r3 = p.partition("bridge 1|2|3")
    assert [(c.from_id, c.to_id) for c in r3.cuts] == [(1, 3), (3, 1)]
    assert matrix(chans) == {
        "1-2": True, "1-3": False, "2-1": True, "2-3": True, "3-1": False, "3-2": True,
    }
    r4 = p.partition("majorities-ring")
    assert [(c.from_id, c.to_id) for c in r4.cuts] == [(1, 3), (2, 1), (3, 2)]

    healed = p.heal()
    assert sorted(healed.removed_ids) == sorted(r4.fault_ids)
    assert p.faults() == []
    assert all(matrix(chans).values())
    actions = [e.action for e in p.timeline() if e.action != "link-add"]
    # Each new partition first switches the old one off.
    assert actions == ["partition"] + ["heal", "partition"] * 3 + ["heal"]
    for c in chans.values():
        c.close()


def test_partition_blackhole_waits_for_the_deadline(proxy_factory, server_factory):
    p, servers, chans = three_nodes(proxy_factory, server_factory)
    p.partition("isolate 3", blackhole=True)
    r, took = timed(chans["1-3"].unary_unary(ECHO), b"x", timeout=0.4)
    assert code(r) == grpc.StatusCode.DEADLINE_EXCEEDED and took >= 0.35
    for c in chans.values():
        c.close()


def test_links_at_run_time(link, server_factory, server):
    p, ch = link
    other = server_factory()
    new = p.add_link("3-1", other.address)
    assert new.name == "3-1" and new.listen.startswith("127.0.0.1:")
    assert not new.listen.endswith(":0")
    fid = p.set_fault("3-1", "drop-response")
    keep = p.set_fault("*-1", "delay-request", delay_ms=1)
    with grpc.insecure_channel(new.listen) as ch3:
        fn = ch3.unary_unary(ECHO)
        r, _ = timed(fn, b"x", timeout=5)
        assert code(r) == grpc.StatusCode.UNAVAILABLE
        other.wait_calls(1, 5)
        p.hold("3-1")
        held = fn.future(b"h", timeout=10)
        p.wait_for(lambda: p.links()["3-1"].held_calls == 1, 5, "held")
        removed = p.remove_link("3-1")
        assert removed.cancelled_calls == 1
        assert fid in removed.removed_fault_ids and keep not in removed.removed_fault_ids
        with pytest.raises(grpc.RpcError) as e:
            held.result(5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "removed" in e.value.details()
        r, _ = timed(fn, b"y", timeout=2)
        assert code(r) == grpc.StatusCode.UNAVAILABLE
    assert sorted(p.links()) == ["1-2"]
    assert [f.id for f in p.faults()] == [keep]
    # The name can be used again; the wildcard fault covers it.
    again = p.add_link("3-1", other.address)
    assert keep in again.fault_ids
    with grpc.insecure_channel(again.listen) as ch3:
        assert ch3.unary_unary(ECHO)(b"z", timeout=5) == b"echo:z"
    actions = [e.action for e in p.timeline()]
    assert actions.count("link-add") == 3 and actions.count("link-remove") == 1


def test_counters_and_timeline_agree(link, server):
    p, ch = link
    t0 = time.time()
    fn, other = ch.unary_unary(ECHO), ch.unary_unary(OTHER)
    for i in range(5):
        assert fn(b"12345", timeout=5) == b"echo:12345"
    drop = p.set_fault("1-2", "drop-request", method=ECHO)
    for i in range(3):
        assert code(timed(fn, b"1", timeout=5)[0]) == grpc.StatusCode.UNAVAILABLE
    assert other(b"abc", timeout=5) == b"echo:abc"
    p.clear(ids=[drop])
    resp = p.set_fault("1-2", "drop-response")
    assert code(timed(fn, b"22", timeout=5)[0]) == grpc.StatusCode.UNAVAILABLE
    p.clear(links="1-2")

    c = settled(p, method=ECHO)
    assert (c.calls, c.forwarded, c.ok, c.failed) == (9, 6, 5, 4)
    assert (c.requests_dropped, c.responses_dropped) == (3, 1)
    assert c.request_bytes == 5 * 5 + 2  # dropped requests are never read
    assert c.response_bytes == 5 * 10
    o = settled(p, method=OTHER)
    assert (o.calls, o.ok, o.request_bytes, o.response_bytes) == (1, 1, 3, 8)
    only = p.counters(method=OTHER)
    assert list(only) == [("1-2", OTHER)]

    events = p.timeline()
    assert [e.action for e in events] == [
        "link-add", "fault-set", "fault-clear", "fault-set", "fault-clear",
    ]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert list(events[1].fault_ids) == [drop] and list(events[2].fault_ids) == [drop]
    assert list(events[3].fault_ids) == [resp] and list(events[4].fault_ids) == [resp]
    assert "drop-request 1-2" in events[1].detail and ECHO in events[1].detail
    monos = [e.mono_ms for e in events]
    assert monos == sorted(monos)
    for e in events:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e.time)
        wall = datetime.strptime(e.time, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        assert t0 - 5 <= wall.timestamp() <= time.time() + 1
    assert [e.seq for e in p.timeline(after=3)] == [4, 5]


def ctl(p, *args):
    r = subprocess.run(
        [str(p.binary), "ctl", "--control", p.control, *args],
        capture_output=True, text=True, timeout=20,
    )
    return r.returncode, r.stdout, r.stderr


def test_ctl_commands(link, server):
    p, ch = link
    rc, out, err = ctl(p, "links")
    assert rc == 0 and "1-2" in out and p.listen("1-2") in out and "seed 42" in out
    rc, out, _ = ctl(p, "fault", "set", "1-2", "drop-request", "--p", "0.5", "--method", ECHO)
    assert rc == 0 and re.match(r"fault \d+: drop-request 1-2 p=0.5 method=/test.Echo/Echo", out)
    rc, out, _ = ctl(p, "--json", "faults")
    faults = json.loads(out)["faults"]
    assert rc == 0 and faults[0]["kind"] == "DROP_REQUEST" and faults[0]["probability"] == 0.5
    rc, out, err = ctl(p, "fault", "set", "1-2", "drop-request", "--p", "2")
    assert rc == 1 and "refused: probability 2 is outside [0, 1]" in err
    rc, out, err = ctl(p, "fault", "set", "1-2", "delay-request", "--delay", "-3")
    assert rc == 1 and "negative" in err
    rc, out, err = ctl(p, "fault", "set", "1-2", "drop")
    assert rc == 2 and "unknown fault kind" in err
    rc, out, _ = ctl(p, "fault", "clear", "--all")
    assert rc == 0 and "faults removed: 1" in out
    rc, out, _ = ctl(p, "hold", "1-2")
    assert rc == 0
    f = ch.unary_unary(ECHO).future(b"h", timeout=10)
    p.wait_for(lambda: p.links()["1-2"].held_calls == 1, 5, "held")
    rc, out, _ = ctl(p, "release", "1-2")
    assert rc == 0 and "released 1 calls" in out
    assert f.result(5) == b"echo:h"
    rc, out, _ = ctl(p, "add-link", "2-1", server.address)
    assert rc == 0 and out.startswith("link 2-1 listen 127.0.0.1:")
    rc, out, _ = ctl(p, "partition", "isolate", "2")
    assert rc == 0 and "1>2" in out and "2>1" in out
    rc, out, err = ctl(p, "partition", "isolate", "7")
    assert rc == 1 and "node 7" in err
    rc, out, _ = ctl(p, "heal")
    assert rc == 0
    settled(p)
    rc, out, _ = ctl(p, "counters", "--json")
    counters = json.loads(out)["counters"]
    assert rc == 0 and counters[0]["link"] == "1-2" and counters[0]["calls"] >= 1
    rc, out, _ = ctl(p, "counters", "1-*")
    assert rc == 0 and "/test.Echo/Echo" in out
    rc, out, _ = ctl(p, "timeline", "--json")
    events = json.loads(out)["events"]
    assert rc == 0 and [e["action"] for e in events][:2] == ["link-add", "fault-set"]
    rc, out, _ = ctl(p, "timeline", "--after", "1")
    assert rc == 0 and out.startswith("2 ") and "\n1 " not in out
    rc, out, _ = ctl(p, "remove-link", "2-1")
    assert rc == 0 and "removed" in out
    rc, out, err = ctl(p, "remove-link", "2-1")
    assert rc == 1 and "unknown link 2-1" in err
    rc, out, err = ctl(p, "frobnicate")
    assert rc == 2 and "unknown command" in err


def test_ctl_cannot_reach(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = subprocess.run(
        [str(craft_proxy.proxy_path()), "ctl", "--control", f"127.0.0.1:{port}",
         "--timeout", "2000", "links"],
        capture_output=True, text=True, timeout=20,
    )
    assert r.returncode == 1 and "cannot reach the proxy" in r.stderr


def test_help():
    r = subprocess.run([str(craft_proxy.proxy_path()), "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0
    for text in ("--link", "--node", "--route", "ctl", "partition isolate"):
        assert text in r.stdout
    r = subprocess.run([str(craft_proxy.proxy_path()), "ctl", "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "majorities-ring" in r.stdout
