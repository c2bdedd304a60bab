"""A gRPC server for any method, with raw bytes (no protobuf), that records
every call it gets: the target behind craft-proxy in the tests.

Methods (any package and service; the method name decides):
  .../Echo     unary: answers b"echo:" + request
  .../Stream   client-streaming: answers b"chunks=N bytes=M sha=HEX"
  .../Fanout   server-streaming: request b"N" -> N answers b"part-i"
Request metadata steers it: x-sleep-ms (answer that much later),
x-status / x-details (fail with that code). Every answer carries initial
metadata x-init=1 and trailing metadata x-trail=2, x-bin-bin=\\x00\\x01.
"""

import hashlib
import threading
import time
from concurrent import futures

import grpc


class Call:
    """One call the server got."""

    def __init__(self, method, metadata, time_remaining):
        self.method = method
        self.metadata = metadata  # dict
        self.time_remaining = time_remaining  # seconds, or None
        self.arrived = time.monotonic()
        self.requests = []  # request messages, in order
        self.finished = None  # time the handler returned
        self.complete = False  # a stream ended by the client's half-close
        self.cancelled = False


class EchoServer(grpc.GenericRpcHandler):
    def __init__(self, port=0, workers=64):
        self.calls = []
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers),
            handlers=[self],
            options=[("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=None,
        )
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        if self.port == 0:
            raise RuntimeError(f"cannot listen on 127.0.0.1:{port}")
        self.address = f"127.0.0.1:{self.port}"
        self.server.start()

    def stop(self, grace=0):
        self.server.stop(grace).wait(10)

    # -- recording ------------------------------------------------------------

    def _record(self, method, context):
        md = {}
        for k, v in context.invocation_metadata():
            md[k] = v
        c = Call(method, md, context.time_remaining())
        with self.cond:
            self.calls.append(c)
            self.cond.notify_all()
        return c

    def count(self, method_suffix=""):
        with self.lock:
            return sum(1 for c in self.calls if c.method.endswith(method_suffix))

    def wait_calls(self, n, deadline, method_suffix="", finished=False):
        """Waits until at least n calls (of that method) arrived, or with
        `finished` were also answered; returns them. AssertionError after
        `deadline` seconds."""
        end = time.monotonic() + deadline
        with self.cond:
            while True:
                got = [c for c in self.calls if c.method.endswith(method_suffix)]
                if len(got) >= n and (not finished or all(c.finished for c in got)):
                    return got
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"server {self.address}: {len(got)} calls of *{method_suffix}, "
                        f"expected {n} within {deadline} s"
                    )
                self.cond.wait(left)

    # -- handlers -------------------------------------------------------------

    def service(self, handler_call_details):
        method = handler_call_details.method
        name = method.rsplit("/", 1)[-1]

        def bind(fn):
            def run(request, context):
                return fn(method, request, context)

            return run

        if name == "Stream":
            return grpc.stream_unary_rpc_method_handler(bind(self._stream))
        if name == "Fanout":
            return grpc.unary_stream_rpc_method_handler(bind(self._fanout))
        return grpc.unary_unary_rpc_method_handler(bind(self._echo))

    def _finish(self, call):
        with self.cond:
            call.finished = time.monotonic()
            self.cond.notify_all()

    def _behave(self, call, context):
        md = call.metadata
        context.send_initial_metadata([("x-init", "1")])
        context.set_trailing_metadata([("x-trail", "2"), ("x-bin-bin", b"\x00\x01")])
        if "x-sleep-ms" in md:
            end = time.monotonic() + int(md["x-sleep-ms"]) / 1000.0
            while time.monotonic() < end and context.is_active():
                time.sleep(0.005)
            call.cancelled = call.cancelled or not context.is_active()
        if "x-status" in md:
            context.abort(grpc.StatusCode[md["x-status"]], md.get("x-details", ""))

    def _echo(self, method, request, context):
        c = self._record(method, context)
        c.requests.append(request)
        try:
            self._behave(c, context)
        finally:
            self._finish(c)
        return b"echo:" + request

    def _stream(self, method, request_iterator, context):
        c = self._record(method, context)
        try:
            for chunk in request_iterator:
                c.requests.append(chunk)
            # gRPC Python ends the iteration the same way for a half-close
            # and for a reset stream, and learns of the reset a moment
            # later: a stream that stays active for 0.2 s was whole.
            end = time.monotonic() + 0.2
            while context.is_active() and time.monotonic() < end:
                time.sleep(0.01)
            c.complete = context.is_active()
        except grpc.RpcError:
            c.cancelled = True
        if not context.is_active():
            c.cancelled = True
            c.complete = False
        try:
            self._behave(c, context)
        finally:
            self._finish(c)
        data = b"".join(c.requests)
        return (
            f"chunks={len(c.requests)} bytes={len(data)} "
            f"sha={hashlib.sha256(data).hexdigest()}"
        ).encode()

    def _fanout(self, method, request, context):
        c = self._record(method, context)
        c.requests.append(request)
        self._behave(c, context)
        for i in range(int(request)):
            yield f"part-{i}".encode()
        self._finish(c)
