"""The network of a local cluster: one craft-proxy process with a link for
every ordered pair of node ids (node i dials node j through link "i-j",
craftd's --route), and a client link "C-j" per node (C = CLIENTS) that the
harness's clients use, so that client replies can be lost too. Faults and
partitions go through the proxy's control API (proto/proxy.proto).

Partitions and peer faults name only node ids, so they never touch the
client links; `client_drop` is the one fault on those.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc

from . import cluster as cl
from . import craft_proxy as cp

CLIENTS = 100  # the pseudo node id of the harness's clients
RAFT = "/raft.RaftService/"


class ProxyNet:
    """Starts craft-proxy in `root`; setup(ports) makes the links."""

    def __init__(self, root, seed, stubs_dir):
        self.root = Path(root)
        cp.generate_stubs(stubs_dir)
        self.pb = cp.pb
        exe = cp.proxy_path()
        if not os.access(exe, os.X_OK):
            raise cl.HarnessError(f"no craft-proxy at {exe}: build it, or set "
                                  f"CRAFT_PROXY, or run with --no-proxy")
        # Raft's unary methods take the proxy's faster path.
        self.proxy = cp.Proxy(["--seed", str(seed), "--unary-from",
                               str(cl.REPO_ROOT / "proto" / "raft.proto")],
                              self.root, binary=exe)
        try:
            self.proxy.start()
        except cp.ProxyError as e:
            raise cl.HarnessError(str(e)) from None
        self.log_path = self.proxy.log_path
        self.routes = {}   # (i, j) -> listen address of link i-j
        self.clients = {}  # j -> listen address of link C-j
        self.ids = []

    def setup(self, ports):
        """Links for every ordered pair of the ids in `ports` (id -> the
        node's port), and a client link to each."""
        self.ids = sorted(ports)
        avoid = set(ports.values())
        for j in self.ids:
            target = f"127.0.0.1:{ports[j]}"
            self.clients[j] = self._add(f"{CLIENTS}-{j}", target, avoid)
            for i in self.ids:
                if i != j:
                    self.routes[(i, j)] = self._add(f"{i}-{j}", target, avoid)

    def _add(self, name, target, avoid):
        """Adds link `name` on a free port that no node will listen on: a
        port of the kernel's choosing (":0") may be one the harness just
        picked for a node and released, and the node would then find it
        taken. Another process may still take the port first: then the
        proxy refuses it and another is tried."""
        last = None
        for _ in range(5):
            port = next(p for p in cl.free_ports(len(avoid) + 1) if p not in avoid)
            try:
                return self.proxy.add_link(name, target,
                                           listen=f"127.0.0.1:{port}").listen
            except grpc.RpcError as e:
                last = e
        raise cl.HarnessError(f"craft-proxy could not listen for link {name}: "
                              f"{last.details() if last else '?'}")

    def route(self, i, j):
        return self.routes.get((i, j))

    def client_address(self, j):
        return self.clients.get(j)

    # -- faults -------------------------------------------------------------

    def fault(self, kind, probability=None, delay_ms=0, jitter_ms=0,
              method="", nodes=None, blackhole=False, selectors=None):
        """A rule on every peer link (or those from `nodes`); `kind` is a
        proto/proxy.proto FaultKind name (DROP_REQUEST...)."""
        sels = selectors or [f"{i}-*" for i in (nodes or self.ids)]
        return [self.proxy.set_fault(sel, getattr(self.pb, kind),
                                     probability=probability,
                                     method=RAFT + method if method else "",
                                     delay_ms=int(delay_ms),
                                     jitter_ms=int(jitter_ms),
                                     blackhole=blackhole)
                for sel in sels]

    def links_of(self, node):
        """Selectors of every peer link to and from node."""
        return [f"{node}-*"] + [f"{i}-{node}" for i in self.ids if i != node]

    def partition(self, spec):
        self.proxy.partition(spec)

    def heal(self):
        self.proxy.heal()

    def release(self, links):
        self.proxy.release(links)

    def clear(self):
        """Every fault and partition removed, held calls released."""
        self.proxy.heal()
        self.proxy.clear(links="*")

    def counters(self):
        """{(link, method): Counters}"""
        return self.proxy.counters()

    def timeline(self):
        return self.proxy.timeline()

    def log_tail(self, lines=20):
        return self.proxy.log_tail(lines)

    def close(self):
        """Stops the proxy; its exit status."""
        try:
            return self.proxy.stop(timeout=10)
        except cp.ProxyError:
            return None
