"""The network of a local cluster: one craft-proxy process with a link for
every ordered pair of node ids (node i dials node j through link "i-j",
craftd's --route), and a client link "C-j" per node (C = CLIENTS) that the
harness's clients use, so that client replies can be lost too. Faults and
partitions go through the proxy's control API (proto/proxy.proto).

Partitions and peer faults name only node ids, so they never touch the
client links; `client_drop` is the one fault on those.
"""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc

from . import cluster as cl

CLIENTS = 100  # the pseudo node id of the harness's clients
PROTO = cl.REPO_ROOT / "proto" / "proxy.proto"
RAFT = "/raft.RaftService/"


def proxy_path():
    p = Path(os.environ.get("CRAFT_PROXY") or "build/harness/proxy/craft-proxy")
    return p if p.is_absolute() else cl.REPO_ROOT / p


def _stubs(outdir):
    cmd = ["protoc", f"-I{PROTO.parent}", f"--python_out={outdir}",
           f"--grpc_out={outdir}",
           f"--plugin=protoc-gen-grpc={cl.GRPC_PLUGIN}", str(PROTO)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise cl.HarnessError(f"protoc failed: {' '.join(cmd)}\n{r.stderr}")
    if str(outdir) not in sys.path:
        sys.path.insert(0, str(outdir))
    return (importlib.import_module("proxy_pb2"),
            importlib.import_module("proxy_pb2_grpc"))


class ProxyNet:
    """Starts craft-proxy in `root`; setup(ports) makes the links."""

    def __init__(self, root, seed, stubs_dir):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.seed = seed
        self.pb, self.pb_grpc = _stubs(stubs_dir)
        self.log_path = self.root / "proxy.log"
        self.control = f"127.0.0.1:{cl.free_ports(1)[0]}"
        exe = proxy_path()
        if not os.access(exe, os.X_OK):
            raise cl.HarnessError(f"no craft-proxy at {exe}: build it, or set "
                                  f"CRAFT_PROXY, or run with --no-proxy")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(exe), "--control", self.control, "--seed", str(seed)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                close_fds=True, start_new_session=True)
        self.channel = None
        cl.wait_until(self._listening, 10.0,
                      f"craft-proxy listening on {self.control}")
        self.channel = grpc.insecure_channel(self.control,
                                             options=cl.CHANNEL_OPTIONS)
        self.stub = self.pb_grpc.ProxyControlStub(self.channel)
        cl.wait_until(self._up, 10.0, f"craft-proxy answering on {self.control}")
        self.routes = {}   # (i, j) -> listen address of link i-j
        self.clients = {}  # j -> listen address of link C-j
        self.ids = []

    def _listening(self):
        """Its control port accepts connections (before any gRPC channel:
        a refused connection makes grpcio back off for seconds, whatever
        the channel's options say)."""
        if self.proc.poll() is not None:
            raise cl.HarnessError(f"craft-proxy exited with status "
                                  f"{self.proc.returncode}; log: "
                                  f"{self.log_tail()}")
        host, port = self.control.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return True
        except OSError:
            return False

    def _up(self):
        if self.proc.poll() is not None:
            raise cl.HarnessError(f"craft-proxy exited with status "
                                  f"{self.proc.returncode}; log: "
                                  f"{self.log_tail()}")
        try:
            self.stub.ListLinks(self.pb.ListLinksRequest(), timeout=1)
            return True
        except grpc.RpcError:
            return False

    def _link(self, name, target):
        r = self.stub.AddLink(self.pb.AddLinkRequest(
            name=name, listen="127.0.0.1:0", target=target), timeout=5)
        return r.link.listen

    def setup(self, ports):
        """Links for every ordered pair of the ids in `ports` (id -> the
        node's port), and a client link to each."""
        self.ids = sorted(ports)
        for j in self.ids:
            target = f"127.0.0.1:{ports[j]}"
            self.clients[j] = self._link(f"{CLIENTS}-{j}", target)
            for i in self.ids:
                if i != j:
                    self.routes[(i, j)] = self._link(f"{i}-{j}", target)

    def route(self, i, j):
        return self.routes.get((i, j))

    def client_address(self, j):
        return self.clients.get(j)

    # -- faults -------------------------------------------------------------

    def _peer_selectors(self, nodes=None):
        return [f"{i}-*" for i in (nodes or self.ids)]

    def fault(self, kind, probability=None, delay_ms=0, jitter_ms=0,
              method="", nodes=None, blackhole=False, selectors=None):
        """A rule on every peer link (or those from `nodes`)."""
        ids = []
        for sel in selectors or self._peer_selectors(nodes):
            f = self.pb.Fault(links=sel, kind=getattr(self.pb, kind),
                              delay_ms=int(delay_ms), jitter_ms=int(jitter_ms),
                              method=RAFT + method if method else "",
                              blackhole=blackhole)
            if probability is not None:
                f.probability = probability
            ids.append(self.stub.SetFault(self.pb.SetFaultRequest(fault=f),
                                          timeout=5).fault.id)
        return ids

    def links_of(self, node):
        """Selectors of every peer link to and from node."""
        return [f"{node}-*"] + [f"{i}-{node}" for i in self.ids if i != node]

    def partition(self, spec):
        self.stub.Partition(self.pb.PartitionRequest(spec=spec), timeout=5)

    def heal(self):
        self.stub.Heal(self.pb.HealRequest(), timeout=5)

    def clear(self):
        """Every fault and partition removed, held calls released."""
        self.stub.Heal(self.pb.HealRequest(), timeout=5)
        self.stub.ClearFaults(self.pb.ClearFaultsRequest(links="*"), timeout=5)

    def counters(self):
        return self.stub.GetCounters(self.pb.CountersRequest(), timeout=5)

    def timeline(self):
        return self.stub.GetTimeline(self.pb.TimelineRequest(), timeout=5)

    def log_tail(self, lines=20):
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def close(self):
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode
