"""craft-proxy from Python: start one, and drive its control API
(proto/proxy.proto). For tests and harnesses; run with Debian's
/usr/bin/python3 (python3-grpcio, python3-protobuf).

    from pytest_craft import craft_proxy
    craft_proxy.generate_stubs(tmpdir)
    p = craft_proxy.Proxy(["--node", "1=127.0.0.1:50051", ...], workdir)
    p.start()
    p.listen("1-2")                       # where node 1 dials node 2
    fid = p.set_fault("1-2", "drop-request", probability=0.3)
    p.partition("isolate 1"); p.heal()
    p.counters()[("1-2", "/raft.RaftService/AppendEntries")].calls
    p.stop()

The proxy is started with fork+exec only (subprocess), as every process
that uses gRPC must be (GRPC-C-CORE.md). Every wait has a deadline.
"""

import re
import shlex
import subprocess
import threading
import time
from pathlib import Path

import grpc

from .tools import built, python_stubs

pb = None  # proxy_pb2, once generate_stubs() ran
pb_grpc = None  # proxy_pb2_grpc

KINDS = {
    "drop-request": 1,
    "drop-response": 2,
    "delay-request": 3,
    "delay-response": 4,
    "duplicate": 5,
    "hold": 6,
    "blackhole": 7,
    "reset": 8,
}


class ProxyError(AssertionError):
    """The proxy did not start, or misbehaved; the message says how."""


def proxy_path():
    """The craft-proxy binary: $CRAFT_PROXY, or the one in build/."""
    return built("CRAFT_PROXY", "build/harness/proxy/craft-proxy")


def generate_stubs(outdir):
    """Generates proxy_pb2 and proxy_pb2_grpc from proto/proxy.proto into
    outdir, imports them and returns (pb, pb_grpc)."""
    global pb, pb_grpc
    pb, pb_grpc = python_stubs("proxy", outdir, ProxyError)
    return pb, pb_grpc


class Proxy:
    """One craft-proxy process. `args` are its flags (--link, --node,
    --seed...); --control 127.0.0.1:0 is added unless given. stdout (the
    event lines) and stderr go to workdir/proxy.log."""

    def __init__(self, args, workdir, binary=None, wrapper=(), ready_timeout=10.0):
        self.args = list(args)
        if "--control" not in self.args:
            self.args += ["--control", "127.0.0.1:0"]
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binary = Path(binary) if binary else proxy_path()
        self.wrapper = list(wrapper)
        self.ready_timeout = ready_timeout
        self.proc = None
        self.stopped = False  # stop() or kill() was called
        self.lines = []
        self.control = None
        self.seed = None
        self._ready = threading.Event()
        self._channel = None
        self.stub = None
        self.log_path = self.workdir / "proxy.log"

    @property
    def command(self):
        return [*self.wrapper, str(self.binary), *self.args]

    def command_line(self):
        return " ".join(shlex.quote(a) for a in self.command)

    def _reader(self):
        with open(self.log_path, "a") as log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                self.lines.append(line.rstrip("\n"))
                m = re.search(r"evt=ready control=(\S+) seed=(\d+)", line)
                if m:
                    self.control = m.group(1)
                    self.seed = int(m.group(2))
                    self._ready.set()

    def start(self):
        if pb is None:
            raise ProxyError("call craft_proxy.generate_stubs() first")
        if not self.binary.exists():
            raise ProxyError(f"{self.binary} does not exist (build it, or set CRAFT_PROXY)")
        self.log_path.write_text(f"# {self.command_line()}\n")
        err = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1
        )
        err.close()
        threading.Thread(target=self._reader, daemon=True).start()
        if not self._ready.wait(self.ready_timeout):
            rc = self.proc.poll()
            self.kill()
            raise ProxyError(
                f"craft-proxy not ready within {self.ready_timeout} s (exit status {rc}):\n"
                f"  {self.command_line()}\n{self.log_tail()}"
            )
        self._channel = grpc.insecure_channel(self.control)
        self.stub = pb_grpc.ProxyControlStub(self._channel)
        return self

    def attach(self, control):
        """Drives a proxy that runs already (started by someone else, e.g.
        docker compose) at its control address; stop() then only closes
        the connection."""
        if pb is None:
            raise ProxyError("call craft_proxy.generate_stubs() first")
        self.control = control
        self._channel = grpc.insecure_channel(control)
        self.stub = pb_grpc.ProxyControlStub(self._channel)
        return self

    def log_tail(self, n=40):
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=30.0):
        """SIGTERM, then wait; returns the exit status (kills on timeout)."""
        self.stopped = True
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ProxyError(f"craft-proxy did not exit within {timeout} s of SIGTERM")

    def kill(self):
        self.stopped = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    # -- the control API ------------------------------------------------------

    def call(self, method, request, timeout=5.0):
        return getattr(self.stub, method)(request, timeout=timeout)

    def links(self):
        """{name: Link}"""
        r = self.call("ListLinks", pb.ListLinksRequest())
        return {l.name: l for l in r.links}

    def listen(self, name):
        """The bound listen address of link `name`."""
        return self.links()[name].listen

    def add_link(self, name, target, listen="127.0.0.1:0"):
        return self.call("AddLink", pb.AddLinkRequest(name=name, listen=listen, target=target)).link

    def remove_link(self, name):
        return self.call("RemoveLink", pb.RemoveLinkRequest(name=name))

    def set_fault(self, links, kind, probability=None, method="", delay_ms=0,
                  jitter_ms=0, blackhole=False):
        """Adds a fault; returns its id. `kind` is a name ("drop-request")
        or a FaultKind number."""
        f = pb.Fault(
            links=links,
            kind=KINDS.get(kind, kind),
            method=method,
            delay_ms=delay_ms,
            jitter_ms=jitter_ms,
            blackhole=blackhole,
        )
        if probability is not None:
            f.probability = probability
        return self.call("SetFault", pb.SetFaultRequest(fault=f)).fault.id

    def clear(self, ids=None, links=None):
        return self.call("ClearFaults", pb.ClearFaultsRequest(ids=ids or [], links=links or ""))

    def faults(self):
        return list(self.call("ListFaults", pb.ListFaultsRequest()).faults)

    def partition(self, spec, blackhole=False):
        return self.call("Partition", pb.PartitionRequest(spec=spec, blackhole=blackhole))

    def heal(self):
        return self.call("Heal", pb.HealRequest())

    def hold(self, links, method=""):
        return self.set_fault(links, "hold", method=method)

    def release(self, links):
        return self.call("Release", pb.ReleaseRequest(links=links))

    def counters(self, links="", method=""):
        """{(link, method): Counters}"""
        r = self.call("GetCounters", pb.CountersRequest(links=links, method=method))
        return {(c.link, c.method): c for c in r.counters}

    def timeline(self, after=0):
        return list(self.call("GetTimeline", pb.TimelineRequest(after=after)).events)

    def wait_for(self, pred, deadline, what, interval=0.02):
        """Calls pred() until it returns a true value; ProxyError naming
        `what` after `deadline` seconds."""
        end = time.monotonic() + deadline
        last = None
        while True:
            v = pred()
            if v:
                return v
            last = v
            if time.monotonic() >= end:
                raise ProxyError(f"{what}: not within {deadline} s (last: {last})")
            time.sleep(interval)
