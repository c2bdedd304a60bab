"""Smoke tests of craftd: a local cluster of real processes, driven only
through proto/raft.proto (scenarios CLIENT-01, FAIL-01, JOIN-01, CATCHUP-01
and WIRE-01 of SCENARIOS.md, in their simplest form).

    CRAFTD=build/src/craftd /usr/bin/python3 -m pytest -q tests/blackbox -m smoke
"""

import random
import subprocess
import time

import grpc
import pytest
from google.protobuf.message import DecodeError

from pytest_craft.cluster import (
    HarnessError,
    add_acked,
    craftd_path,
    decode_fields,
    encode_varint,
    raw_method,
    signed64,
    wait_until,
)

pytestmark = pytest.mark.smoke

ELECTION_DEADLINE = 5.0  # a new leader after a crash (FAIL-01)
CATCHUP_DEADLINE = 10.0  # a restarted or new node converges
STOP_DEADLINE = 5.0  # SIGTERM to exit


def new_client_id():
    return random.getrandbits(62) + 1


def expect_ok_add(r, pb, want_sum, what):
    assert r.success, f"{what}: not successful: {r}"
    assert r.status == pb.OP_OK, f"{what}: status {pb.OpStatus.Name(r.status)}: {r}"
    assert r.sum == want_sum, f"{what}: sum {r.sum}, want {want_sum}: {r}"


def test_add_on_leader_and_follower(cluster, pb):
    """CLIENT-01: Add(5, 3) answers 8 at the leader and at a follower (which
    forwards); all nodes then agree on the total and the state digest."""
    lid = cluster.wait_for_leader()
    leader = cluster[lid]
    follower = cluster.followers(lid)[0]

    r = leader.add(5, 3)
    expect_ok_add(r, pb, 8, f"Add(5, 3) to the leader {lid}")
    assert r.total == 8, f"the total after the first add: {r}"
    assert not r.at_most_once, f"no client_id/sequence, yet at_most_once: {r}"

    r = follower.add(5, 3)
    expect_ok_add(r, pb, 8, f"Add(5, 3) to follower {follower.id}")
    assert r.total == 16, f"the total after the second add: {r}"
    assert r.leader_id == lid, f"the follower's answer names leader {r.leader_id}, not {lid}"

    r = follower.add(10, -2)
    expect_ok_add(r, pb, 8, f"Add(10, -2) to follower {follower.id}")
    r = leader.add(100, 200)
    expect_ok_add(r, pb, 300, "Add(100, 200) to the leader")

    st = cluster.wait_converged(deadline=5.0, total=324)
    assert st.state_digest, "GetStatus.state_digest is empty"


def test_leader_kill_9(cluster, pb):
    """FAIL-01: kill -9 the leader; a new one within 5 s serves writes; no
    acknowledged add is lost; the old leader restarts and catches up."""
    lid = cluster.wait_for_leader()
    cid = new_client_id()
    seq = 0
    acked = 0
    nodes = sorted(cluster.nodes.values(), key=lambda n: n.id)
    for k in range(12):
        seq += 1
        a, b = k + 1, 10 * k
        r = add_acked(nodes[k % 3], a, b, cid, seq)
        expect_ok_add(r, pb, a + b, f"Add({a}, {b}) seq {seq}")
        acked += r.sum
    old = cluster[lid]

    old.kill()
    killed_at = time.monotonic()
    new = cluster.wait_for_leader(deadline=ELECTION_DEADLINE)
    elected_in = time.monotonic() - killed_at
    assert new != lid, f"node {lid} was killed but is still the leader"
    assert elected_in <= ELECTION_DEADLINE
    print(f"node {new} leads {elected_in:.2f} s after kill -9 of node {lid}")

    for k in range(5):
        seq += 1
        r = add_acked(cluster[new], 1000, k, cid, seq)
        expect_ok_add(r, pb, 1000 + k, f"Add(1000, {k}) to the new leader {new}")
        acked += r.sum
    survivors = cluster.running()
    st = cluster.wait_converged(deadline=5.0, nodes=survivors, total=acked)
    assert st.total == acked, "acknowledged adds are missing from the total"

    old.start()
    cluster.wait_converged(deadline=CATCHUP_DEADLINE, total=acked)
    st = old.status()
    assert st.state == "FOLLOWER" and st.current_leader == new, (
        f"the restarted old leader: {st.state}, leader {st.current_leader}"
    )
    # And it takes part again: a write through it counts everywhere.
    seq += 1
    r = add_acked(old, 7, 7, cid, seq)
    acked += r.sum
    cluster.wait_converged(deadline=5.0, total=acked)


def test_original_add_message_shape(cluster):
    """A client of the original shapes: AddRequest{1: num1, 2: num2} as hand
    encoded bytes, AddResponse fields 1 (sum) and 2 (success) decoded by
    hand, at the leader and at a follower. The same for SubmitOperation
    and GetStatus."""
    lid = cluster.wait_for_leader()
    body = b"\x08" + encode_varint(5) + b"\x10" + encode_varint(3)
    assert body == b"\x08\x05\x10\x03"
    for node in (cluster[lid], cluster.followers(lid)[0]):
        reply = raw_method(node.channel(), "Add")(body, timeout=5)
        f = decode_fields(reply)
        assert f.get(1) == [8], f"node {node.id}: AddResponse.sum {f.get(1)}: {reply!r}"
        assert f.get(2) == [1], f"node {node.id}: AddResponse.success {f.get(2)}: {reply!r}"

        # OperationRequest{1: "ADD 5 3"} -> OperationResponse{1: success, 2: "8"}
        op = b"ADD 5 3"
        reply = raw_method(node.channel(), "SubmitOperation")(
            b"\x0a" + encode_varint(len(op)) + op, timeout=5
        )
        f = decode_fields(reply)
        assert f.get(1) == [1], f"node {node.id}: OperationResponse.success: {reply!r}"
        assert f.get(2) == [b"8"], f"node {node.id}: OperationResponse.result: {reply!r}"

        # StatusRequest{} -> StatusResponse{1: term, 2: state, 3: leader}
        f = decode_fields(raw_method(node.channel(), "GetStatus")(b"", timeout=5))
        assert signed64(f[1][0]) >= 1, f"node {node.id}: current_term {f.get(1)}"
        assert f[2][0] in (b"LEADER", b"FOLLOWER"), f"node {node.id}: state {f.get(2)}"
        assert f[3] == [lid], f"node {node.id}: current_leader {f.get(3)}"
    cluster.wait_converged(deadline=5.0, total=32)


def test_exactly_once(cluster, pb):
    """CLIENT-01: the same Add with the same client_id and sequence, sent to
    a follower and then to the leader, is applied once; a new sequence is
    applied again. The same for SubmitOperation."""
    lid = cluster.wait_for_leader()
    leader = cluster[lid]
    follower = cluster.followers(lid)[0]
    cid = new_client_id()

    first = follower.add(5, 3, cid, 1)
    expect_ok_add(first, pb, 8, "Add(5, 3) seq 1 to a follower")
    assert first.at_most_once, f"client_id and sequence set, at_most_once false: {first}"
    for node, what in ((leader, "the leader"), (follower, "the follower")):
        r = node.add(5, 3, cid, 1)
        expect_ok_add(r, pb, 8, f"the retry of Add(5, 3) seq 1 to {what}")
        assert r.total == first.total, (
            f"the retry to {what} answers total {r.total}, the first answer "
            f"said {first.total}: applied twice?"
        )
    cluster.wait_converged(deadline=5.0, total=8)

    r = leader.add(5, 3, cid, 2)
    expect_ok_add(r, pb, 8, "Add(5, 3) seq 2 to the leader")
    assert r.total == 16, f"a new sequence is applied: {r}"
    cluster.wait_converged(deadline=5.0, total=16)

    cid2 = new_client_id()
    answers = [
        follower.submit("ADD 5 3", cid2, 1),
        leader.submit("ADD 5 3", cid2, 1),
    ]
    for r in answers:
        assert r.success and r.status == pb.OP_OK and r.result == "8", r
    cluster.wait_converged(deadline=5.0, total=24)

    # Both copies in flight at once, at a follower and at the leader.
    cid3 = new_client_id()
    for seq in range(1, 6):
        req = pb.AddRequest(num1=seq, num2=seq, client_id=cid3, sequence=seq)
        futures = [n.stub().Add.future(req, timeout=5) for n in (follower, leader)]
        for f in futures:
            r = f.result()
            expect_ok_add(r, pb, 2 * seq, f"concurrent copies of Add seq {seq}")
    cluster.wait_converged(deadline=5.0, total=24 + 30)


# Bodies that no protobuf parser may accept (checked against the Python
# one below): an endless varint, a length past the end, a cut varint, wire
# type 7, a cut fixed64.
GARBAGE = [
    b"\xff" * 12,
    b"\x2a\x40abc",
    b"\x08",
    b"\x0f\x00\x01\x02",
    b"\x09\x01\x02",
]


def test_bad_input(cluster, pb):
    """WIRE-01 / CLIENT-01: bad input is refused with an answer, nothing
    crashes, nothing changes, and the nodes keep serving."""
    lid = cluster.wait_for_leader()
    version = cluster.status(lid).config.version
    refused_before = {n.id: n.status().counters.bad_input for n in cluster.running()}
    for body in GARBAGE:
        with pytest.raises(DecodeError):
            pb.AppendEntriesRequest.FromString(body)

    for node in cluster.running():
        r = node.submit("ADD 5 x")
        assert not r.success, f"node {node.id}: 'ADD 5 x' succeeded: {r}"
        assert r.error, f"node {node.id}: 'ADD 5 x' failed without an error: {r}"
        assert r.status == pb.OP_INVALID, (
            f"node {node.id}: 'ADD 5 x' status {pb.OpStatus.Name(r.status)}"
        )

        with pytest.raises(grpc.RpcError) as e:
            node.stub().JoinCluster(
                pb.JoinRequest(node_id=-1, address="127.0.0.1:9"), timeout=5
            )
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (
            f"node {node.id}: JoinRequest node_id=-1: {e.value.code()} {e.value.details()}"
        )
        assert e.value.details(), f"node {node.id}: INVALID_ARGUMENT without a message"

        append = raw_method(node.channel(), "AppendEntries")
        for body in GARBAGE:
            with pytest.raises(grpc.RpcError) as e:
                append(body, timeout=5)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (
                f"node {node.id}: AppendEntries {body!r}: {e.value.code()} "
                f"{e.value.details()}"
            )

    for node in cluster.running():
        # The garbage appends and the bad join, counted (GetStatus.counters).
        refused = node.status().counters.bad_input - refused_before[node.id]
        assert refused >= len(GARBAGE) + 1, (
            f"node {node.id}: {refused} calls counted as bad input, "
            f"expected at least {len(GARBAGE) + 1}"
        )

    time.sleep(0.5)  # long enough for an election, if one was disturbed
    cluster.check_alive()
    assert cluster.wait_for_leader() == lid, "the leader changed after bad input"
    for node in cluster.running():
        st = node.status()
        assert st.config.version == version and -1 not in st.config.nodes, (
            f"node {node.id}: the configuration changed: {st.config}"
        )
        expect_ok_add(node.add(5, 3), pb, 8, f"Add(5, 3) to node {node.id}")
    cluster.wait_converged(deadline=5.0, total=24)


def test_join(cluster, pb):
    """JOIN-01: a 4th node joins through a follower, becomes a voter in
    every node's configuration, and converges to the same state."""
    lid = cluster.wait_for_leader()
    follower = cluster.followers(lid)[0]
    cid = new_client_id()
    total = 0
    for seq in range(1, 6):
        total += add_acked(cluster[lid], seq, seq, cid, seq).sum
    version = cluster.status(lid).config.version

    n4 = cluster.add_node(join_via=follower.id)
    assert n4.id == 4

    def member_everywhere():
        cluster.check_alive()
        for node in cluster.running():
            cfg = node.status().config
            servers = {s.id: s for s in cfg.servers}
            if 4 not in servers or servers[4].role != pb.VOTER or 4 not in cfg.nodes:
                return False
            if servers[4].address != n4.address:
                raise HarnessError(
                    f"node {node.id} has node 4 at {servers[4].address}, not {n4.address}"
                )
        return True

    try:
        wait_until(member_everywhere, CATCHUP_DEADLINE, "node 4 a voter everywhere")
    except HarnessError as e:
        raise HarnessError(f"{e}\n{cluster.describe()}") from None
    for node in cluster.running():
        st = node.status()
        assert st.config.version > version, f"node {node.id}: config version {st.config.version}"
        assert sorted(st.config.nodes) == [1, 2, 3, 4], f"node {node.id}: {st.config}"
    cluster.wait_converged(deadline=CATCHUP_DEADLINE, total=total)

    # Writes go on with 4 voters, and reach node 4.
    total += add_acked(n4, 50, 50, cid, 6).sum
    cluster.wait_converged(deadline=5.0, total=total)
    assert n4.status().state == "FOLLOWER"


def test_sigterm_follower(cluster, pb):
    """CATCHUP-01: SIGTERM stops a follower cleanly (exit 0); the others go
    on; restarted, it catches up."""
    lid = cluster.wait_for_leader()
    follower = cluster.followers(lid)[0]
    cid = new_client_id()
    seq = 0
    total = 0
    for k in range(5):
        seq += 1
        total += add_acked(cluster[lid], k, 1, cid, seq).sum

    started = time.monotonic()
    rc = follower.terminate(deadline=STOP_DEADLINE)
    assert rc is not None, f"node {follower.id} still running {STOP_DEADLINE} s after SIGTERM"
    assert rc == 0, f"node {follower.id} exited with status {rc} after SIGTERM"
    took = time.monotonic() - started

    for k in range(10):
        seq += 1
        total += add_acked(cluster[lid], 100, k, cid, seq).sum
    cluster.wait_converged(deadline=5.0, total=total)  # the two running

    follower.start()
    cluster.wait_converged(deadline=CATCHUP_DEADLINE, total=total)
    assert cluster.wait_for_leader() == lid
    print(f"node {follower.id} stopped {took:.2f} s after SIGTERM")


def test_port_in_use_refused(cluster, tmp_path):
    """A second server on a node's port must not start: with gRPC's default
    SO_REUSEPORT it would, and the kernel would hand it half of the node's
    connections."""
    node = cluster[cluster.wait_for_leader()]
    r = subprocess.run(
        [str(craftd_path()), "--id", "9", "--listen", node.address,
         "--data-dir", str(tmp_path / "other")],
        capture_output=True, text=True, timeout=20)
    assert r.returncode != 0, f"a second craftd started on {node.address}:\n{r.stderr}"
    assert "cannot listen on " + node.address in r.stderr, r.stderr
