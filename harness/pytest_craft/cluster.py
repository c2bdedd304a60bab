"""Local craftd clusters: for the conformance harness, craft's black-box tests
and ci/cluster.sh.

Everything here talks to craftd only through proto/raft.proto over gRPC, and
starts nodes only with fork+exec (subprocess.Popen): a process that uses gRPC
must never fork without exec (see GRPC-C-CORE.md).

Run with Debian's /usr/bin/python3 (python3-grpcio, python3-protobuf).
"""

import os
from concurrent.futures import ThreadPoolExecutor
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import grpc

from .tools import REPO_ROOT, built, python_stubs  # noqa: F401 (REPO_ROOT: cl.REPO_ROOT)

# The default timing of craftd: elections of 300-600 ms, heartbeats of 50 ms.
POLL = 0.05
RPC_TIMEOUT = 2.0  # deadline of one GetStatus
CLIENT_TIMEOUT = 5.0  # deadline of one client operation

# Channel options of the test's clients: a restarted node is reached again
# quickly (the defaults back off for up to 2 minutes).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]

pb = None  # raft_pb2, once generate_stubs() ran
pb_grpc = None  # raft_pb2_grpc


class HarnessError(AssertionError):
    """A wait ran out, or a node misbehaved; the message says which."""


def craftd_path():
    """The craftd binary: $CRAFTD, or build/src/craftd of the repository."""
    return built("CRAFTD", "build/src/craftd")


def generate_stubs(outdir):
    """Generates raft_pb2 and raft_pb2_grpc from proto/raft.proto into
    outdir (never committed), imports them and returns (pb, pb_grpc)."""
    global pb, pb_grpc
    pb, pb_grpc = python_stubs("raft", outdir, HarnessError)
    return pb, pb_grpc


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (held together while chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_until(pred, deadline, what, interval=POLL):
    """Calls pred() until it returns a true value, which it returns; raises
    HarnessError naming `what` (and the last value or exception) once
    `deadline` seconds have passed."""
    end = time.monotonic() + deadline
    last = None
    while True:
        try:
            v = pred()
            if v:
                return v
            last = v
        except grpc.RpcError as e:
            last = f"{e.code()}: {e.details()}"
        if time.monotonic() >= end:
            raise HarnessError(f"{what}: not within {deadline} s (last: {last})")
        time.sleep(interval)


def raw_method(channel, method):
    """A unary call of /raft.RaftService/<method> that sends and returns raw
    bytes (identity serializers)."""
    return channel.unary_unary(
        f"/raft.RaftService/{method}",
        request_serializer=None,
        response_deserializer=None,
    )


class Node:
    """One craftd process: its id, address, data directory and log file."""

    def __init__(self, cluster, node_id, port):
        self.cluster = cluster
        self.id = node_id
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.data_dir = cluster.root / f"n{node_id}"
        self.log_path = cluster.root / f"n{node_id}.log"
        self.args = []  # craftd's flags, set by Cluster
        self.peers = []  # (id, address) of the initial configuration
        self.join = None  # the address it joins through, if it joins
        self.removed = False  # removed from the configuration on purpose
        self.proc = None
        self.expected_exit = False  # the harness stopped it on purpose
        self.exits = []  # (how, returncode) of every process that ended
        self._channel = None
        self._stub = None

    # -- processes

    def command(self):
        """The command line; the cluster's wrapper (e.g. valgrind) first, its
        words formatted with {id} and {root}. With the cluster's node_cmd
        (another implementation), that template instead: {id}, {listen},
        {data}, {peers} (--peer ID=ADDR words), {routes} (--route ID=ADDR
        words), {join} (--join ADDR, or nothing)."""
        wrapper = [
            w.format(id=self.id, root=self.cluster.root) for w in self.cluster.wrapper
        ]
        if self.cluster.node_cmd:
            words = {
                "id": str(self.id),
                "listen": self.address,
                "data": str(self.data_dir),
                "peers": " ".join(f"--peer {j}={a}" for j, a in self.peers),
                "routes": " ".join(
                    f"--route {j}={a}" for j, a in self.cluster.routes(self.id)),
                "join": f"--join {self.join}" if self.join else "",
            }
            return wrapper + shlex.split(self.cluster.node_cmd.format(**words))
        return wrapper + [str(self.cluster.craftd)] + self.args

    def start(self):
        if self.running():
            raise HarnessError(f"node {self.id} is already running")
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(
                f"# harness {time.strftime('%H:%M:%S')}: start "
                f"{' '.join(self.command())}\n".encode()
            )
            log.flush()
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                close_fds=True,
                start_new_session=True,  # no terminal signals from pytest
            )
        self.expected_exit = False
        self._close_channel()
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _note(self, text):
        with open(self.log_path, "ab") as log:
            log.write(f"# harness {time.strftime('%H:%M:%S')}: {text}\n".encode())

    def _reap(self, how, timeout):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self.exits.append((how, rc))
        self._note(f"{how}: exit status {rc}")
        return rc

    def kill(self):
        """kill -9; returns once the process is gone."""
        if not self.running():
            raise HarnessError(f"node {self.id} is not running")
        self.expected_exit = True
        self._note("kill -9")
        self.proc.send_signal(signal.SIGKILL)
        self._reap("kill -9", 10)
        self._close_channel()

    def terminate(self, deadline=5.0):
        """SIGTERM; returns the exit status, or None if the process was still
        running after `deadline` seconds (then it is left running)."""
        if not self.running():
            raise HarnessError(f"node {self.id} is not running")
        self.expected_exit = True
        self._note("SIGTERM")
        self.proc.send_signal(signal.SIGTERM)
        rc = self._reap("SIGTERM", deadline)
        self._close_channel()
        return rc

    def pause(self):
        """SIGSTOP: the process stays, silent, with its connections open."""
        if not self.running():
            raise HarnessError(f"node {self.id} is not running")
        self._note("SIGSTOP")
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        if not self.running():
            raise HarnessError(f"node {self.id} is not running")
        self._note("SIGCONT")
        self.proc.send_signal(signal.SIGCONT)

    def wipe(self):
        """Removes the data directory of a node that is not running."""
        if self.running():
            raise HarnessError(f"node {self.id} runs: stop it before a wipe")
        self._note("wipe the data directory")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def tear_last_write(self):
        """Zeroes the newest WAL segment from inside its last record on, as
        a power loss in the middle of that write would leave it (craftd's
        on-disk format; the node must not be running). Returns (segment,
        offset). craftd must then start, cut the torn batch with a
        recovery_warning, and catch up from the leader."""
        if self.running():
            raise HarnessError(f"node {self.id} runs: stop it before tearing its log")
        if self.cluster.node_cmd:
            raise HarnessError("tearing a write needs craftd's log format "
                               "(not with --node-cmd)")
        craftctl = Path(self.cluster.craftd).parent / "craftctl"
        r = subprocess.run([str(craftctl), "wal", "dump", str(self.data_dir)],
                           capture_output=True, text=True, timeout=30)
        last = None
        for line in r.stdout.splitlines():
            m = re.match(r"(\S+/wal-\d+) @(\d+) ", line)
            if m and (last is None or m.group(1) >= last[0]):
                last = (m.group(1), int(m.group(2)))
        if last is None:
            raise HarnessError(f"no WAL record in {self.data_dir} "
                               f"({craftctl} wal dump: {r.stderr.strip()[:300]})")
        path, offset = last
        # Past the record's first bytes, so that its header survives and
        # its body does not: a torn write, not a clean end.
        at = offset + 8
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.seek(at)
            f.write(bytes(max(0, min(size, at + 4096) - at)))
        self._note(f"tear the last write: zeroes from {Path(path).name} offset {at}")
        return path, at

    def restart(self):
        if self.running():
            self.kill()
        return self.start()

    def unexpected_exit(self):
        """The exit status if the process ended without the harness asking."""
        if self.proc is None or self.expected_exit:
            return None
        return self.proc.poll()

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.expected_exit = True
            self._note("cleanup: kill -9")
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._close_channel()

    # -- gRPC

    def channel(self):
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        return self._channel

    def stub(self):
        if self._stub is None:
            self._stub = pb_grpc.RaftServiceStub(self.channel())
        return self._stub

    def _close_channel(self):
        if self._channel is not None:
            self._channel.close()
        self._channel = None
        self._stub = None

    def call(self, method, request, timeout):
        """stub.<method>(request). A channel that failed to connect is
        dropped: grpcio 1.51 keeps one that was refused (the node was not
        listening yet) failing for about 5 s, whatever its backoff options."""
        try:
            return getattr(self.stub(), method)(request, timeout=timeout)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                self._close_channel()
            raise

    def status(self, timeout=RPC_TIMEOUT):
        return self.call("GetStatus", pb.StatusRequest(), timeout)

    def add(self, a, b, client_id=0, sequence=0, timeout=CLIENT_TIMEOUT):
        return self.call(
            "Add",
            pb.AddRequest(num1=a, num2=b, client_id=client_id, sequence=sequence),
            timeout,
        )

    def submit(self, operation, client_id=0, sequence=0, timeout=CLIENT_TIMEOUT):
        return self.call(
            "SubmitOperation",
            pb.OperationRequest(
                operation=operation, client_id=client_id, sequence=sequence
            ),
            timeout,
        )

    def log_text(self):
        """Everything the node logged ("" before its first start)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines=40):
        try:
            data = self.log_path.read_bytes().decode(errors="replace")
        except OSError as e:
            return f"(no log: {e})"
        return "\n".join(data.splitlines()[-lines:])

    def __repr__(self):
        return f"Node({self.id}, {self.address})"


class Cluster:
    """N craftd processes on free 127.0.0.1 ports, data under `root`."""

    def __init__(self, root, n=3, craftd=None, extra_args=(), wrapper=None,
                 capacity=None, network=None, node_cmd=None):
        """n nodes start as the initial voters; ports are chosen for
        `capacity` (default n) ids, so that nodes that join later already
        have their links. `network` (e.g. the craft-proxy links) says how
        node i dials node j (`route(i, j)`, None: directly) and how clients
        reach node j (`client_address(j)`). `node_cmd` replaces craftd with
        another implementation (see command())."""
        self.root = Path(root)
        self.network = network
        self.node_cmd = node_cmd
        # A command that runs craftd, e.g. valgrind; default: $CRAFTD_WRAPPER.
        if wrapper is None:
            wrapper = shlex.split(os.environ.get("CRAFTD_WRAPPER", ""))
        self.wrapper = list(wrapper)
        self.root.mkdir(parents=True, exist_ok=True)
        self.craftd = Path(craftd) if craftd else craftd_path()
        if not os.access(self.craftd, os.X_OK):
            raise HarnessError(
                f"craftd not found or not executable at {self.craftd}: build it "
                f"(cmake --build build) or set CRAFTD=/path/to/craftd"
            )
        self.extra_args = list(extra_args)
        self.capacity = max(capacity or n, n)
        ports = free_ports(self.capacity)
        self.ports = {i: ports[i - 1] for i in range(1, self.capacity + 1)}
        if network is not None:
            network.setup(self.ports)
        self.nodes = {}
        for i in range(1, n + 1):
            self.nodes[i] = Node(self, i, self.ports[i])
        for node in self.nodes.values():
            node.peers = [(j, p.address) for j, p in self.nodes.items()
                          if j != node.id]
            node.args = self._args(node)

    def address(self, i):
        return f"127.0.0.1:{self.ports[i]}"

    def _args(self, node):
        """craftd's flags for a node (its peers and join set before)."""
        args = [
            "--id",
            str(node.id),
            "--listen",
            node.address,
            "--data-dir",
            str(node.data_dir),
        ]
        for j, addr in node.peers:
            args += ["--peer", f"{j}={addr}"]
        for j, addr in self.routes(node.id):
            args += ["--route", f"{j}={addr}"]
        if node.join:
            args += ["--join", node.join]
        return args + self.extra_args

    def routes(self, i):
        """(j, address) for every other id node i may dial via the network."""
        if self.network is None:
            return []
        out = []
        for j in range(1, self.capacity + 1):
            addr = self.network.route(i, j) if j != i else None
            if addr:
                out.append((j, addr))
        return out

    def client_address(self, i):
        """Where a client dials node i (through the network's client link,
        if it has one)."""
        if self.network is not None:
            addr = self.network.client_address(i)
            if addr:
                return addr
        return self.nodes[i].address if i in self.nodes else self.address(i)

    def id_of_address(self, address):
        """The node id of a real or client address, or None."""
        for i in range(1, self.capacity + 1):
            if address in (self.address(i), self.client_address(i)):
                return i
        return None

    def __getitem__(self, i):
        return self.nodes[i]

    def start(self):
        for node in self.nodes.values():
            node.start()
        return self

    def add_node(self, join_via, node_id=None):
        """Starts a new node with --join pointing at node `join_via`."""
        node_id = node_id or max(self.nodes) + 1
        if node_id in self.nodes:
            raise HarnessError(f"node {node_id} exists already")
        port = self.ports.get(node_id) or free_ports(1)[0]
        node = Node(self, node_id, port)
        node.join = self.client_address(join_via)
        node.args = self._args(node)
        self.nodes[node_id] = node
        return node.start()

    def running(self):
        return [n for n in self.nodes.values() if n.running()]

    def status(self, i, timeout=RPC_TIMEOUT):
        return self.nodes[i].status(timeout)

    def statuses(self, nodes=None, timeout=RPC_TIMEOUT):
        """{id: StatusResponse or the error text} of the given (default:
        running) nodes."""
        nodes = list(nodes if nodes is not None else self.running())

        def one(n):
            try:
                return n.status(timeout)
            except grpc.RpcError as e:
                return f"{e.code()}: {e.details()}"
        # In parallel: a paused node costs one timeout, not one per node.
        if len(nodes) <= 1:
            return {n.id: one(n) for n in nodes}
        with ThreadPoolExecutor(max_workers=len(nodes)) as ex:
            return dict(zip([n.id for n in nodes], ex.map(one, nodes)))

    def check_alive(self):
        """Raises if a node ended without the harness stopping it."""
        for n in self.nodes.values():
            rc = n.unexpected_exit()
            if rc is not None:
                raise HarnessError(
                    f"node {n.id} exited by itself with status {rc}; log tail:\n"
                    f"{n.log_tail()}"
                )

    def leader(self, nodes=None):
        """The id of the leader that every given (default: running) node
        agrees on, or None. Raises on two leaders in one term."""
        self.check_alive()
        sts = self.statuses(nodes)
        leaders = {}
        for i, st in sts.items():
            if isinstance(st, str):
                return None
            if st.state == "LEADER":
                if st.current_term in leaders:
                    raise HarnessError(
                        f"election safety: nodes {leaders[st.current_term]} and "
                        f"{i} both lead term {st.current_term}"
                    )
                leaders[st.current_term] = i
        if not leaders:
            return None
        term = max(leaders)
        lid = leaders[term]
        for i, st in sts.items():
            if st.current_term != term or st.current_leader != lid:
                return None
        return lid

    def wait_for_leader(self, deadline=5.0, nodes=None):
        """Waits until the given (default: running) nodes agree on one
        leader in one term; returns its id."""
        try:
            return wait_until(
                lambda: self.leader(nodes),
                deadline,
                f"one leader that nodes {[n.id for n in nodes or self.running()]} "
                f"agree on",
            )
        except HarnessError as e:
            raise HarnessError(f"{e}\n{self.describe(nodes)}") from None

    def followers(self, leader_id):
        return [n for n in self.running() if n.id != leader_id]

    def converged(self, nodes=None, total=None):
        """The StatusResponse of the first node if the given (default:
        running) nodes report the same total, state digest and applied
        index (and the total is `total`, if given); else None."""
        self.check_alive()
        sts = self.statuses(nodes)
        if any(isinstance(s, str) for s in sts.values()):
            return None
        views = {(s.total, s.state_digest, s.applied_index) for s in sts.values()}
        if len(views) != 1:
            return None
        first = next(iter(sts.values()))
        if total is not None and first.total != total:
            return None
        return first

    def wait_converged(self, deadline=10.0, nodes=None, total=None):
        try:
            return wait_until(
                lambda: self.converged(nodes, total), deadline, "convergence"
            )
        except HarnessError as e:
            raise HarnessError(f"{e}\n{self.describe(nodes)}") from None

    def describe(self, nodes=None):
        """One line per node: what GetStatus says."""
        out = []
        for i, st in self.statuses(
            nodes if nodes is not None else list(self.nodes.values())
        ).items():
            if isinstance(st, str):
                out.append(f"  node {i}: {st}")
            else:
                out.append(
                    f"  node {i}: {st.state} term={st.current_term} "
                    f"leader={st.current_leader} commit={st.commit_index} "
                    f"applied={st.applied_index} last={st.last_log_index} "
                    f"total={st.total} digest={st.state_digest} "
                    f"voters={list(st.config.nodes)} version={st.config.version}"
                )
        return "\n".join(out)

    def log_tails(self, lines=40):
        parts = []
        for n in self.nodes.values():
            if n.proc is None:
                state = "never started"
            elif n.running():
                state = "running"
            else:
                state = f"exit status {n.proc.returncode}"
            parts.append(f"==== node {n.id} ({n.address}, {state}) {n.log_path}")
            parts.append(n.log_tail(lines))
        return "\n".join(parts)

    def sanitizer_reports(self):
        """Log lines in which a sanitizer or valgrind reported an error."""
        marks = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                 "runtime error:", "WARNING: ThreadSanitizer")
        found = []
        for n in self.nodes.values():
            for line in n.log_text().splitlines():
                if any(m in line for m in marks):
                    found.append(f"node {n.id}: {line}")
        return found

    def cleanup(self):
        """Kills every process (always safe to call); returns the nodes that
        had exited by themselves before, as (id, status)."""
        crashed = []
        for n in self.nodes.values():
            rc = n.unexpected_exit()
            if rc is not None:
                crashed.append((n.id, rc))
            n.cleanup()
        return crashed


def add_acked(node, a, b, client_id, sequence, deadline=CLIENT_TIMEOUT):
    """Sends Add(a, b) with client_id/sequence to `node` and retries (same
    client_id and sequence, so it is applied at most once) until it is
    acknowledged or `deadline` passes. Returns the AddResponse."""
    end = time.monotonic() + deadline
    last = None
    while True:
        left = end - time.monotonic()
        if left <= 0:
            raise HarnessError(
                f"Add({a}, {b}) client_id={client_id} sequence={sequence} to "
                f"node {node.id}: no acknowledgement within {deadline} s "
                f"(last: {last})"
            )
        try:
            r = node.add(a, b, client_id, sequence, timeout=min(left, CLIENT_TIMEOUT))
            if r.success and r.status == pb.OP_OK:
                return r
            last = f"success={r.success} status={pb.OpStatus.Name(r.status)} error={r.error!r}"
            if r.status == pb.OP_INVALID:
                raise HarnessError(f"Add({a}, {b}) refused as invalid: {last}")
        except grpc.RpcError as e:
            last = f"{e.code()}: {e.details()}"
        time.sleep(POLL)


# -- hand-made protobuf, for the tests of the original message shapes


def encode_varint(v):
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def decode_varint(buf, pos):
    shift = 0
    v = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")


def decode_fields(buf):
    """{field number: [values]} of a protobuf message: varints as int,
    length-delimited as bytes, fixed32/fixed64 as int."""
    fields = {}
    pos = 0
    while pos < len(buf):
        key, pos = decode_varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, pos = decode_varint(buf, pos)
        elif wt == 1:
            v = int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        elif wt == 2:
            n, pos = decode_varint(buf, pos)
            v = bytes(buf[pos : pos + n])
            pos += n
        elif wt == 5:
            v = int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        else:
            raise ValueError(f"wire type {wt} of field {num}")
        if pos > len(buf):
            raise ValueError("truncated message")
        fields.setdefault(num, []).append(v)
    return fields


def signed64(v):
    return v - (1 << 64) if v >= 1 << 63 else v
