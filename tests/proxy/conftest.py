"""Fixtures of craft-proxy's tests: generated stubs of proto/proxy.proto,
Python target servers (echo_server.py) and proxies that are always stopped
at the end. A proxy that exited by itself, did not stop cleanly on
SIGTERM, or logged a sanitizer report fails the test. On failure the
proxy's command line (with its seed), its log and a replay command are
printed.

    CRAFT_PROXY=build/harness/proxy/craft-proxy /usr/bin/python3 -m pytest -q tests/proxy
"""

import re
import sys
from pathlib import Path

import grpc
import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(REPO_ROOT / "harness"))
sys.path.insert(0, str(HERE))

from pytest_craft import craft_proxy  # noqa: E402
from pytest_craft.tools import replay_command  # noqa: E402
from echo_server import EchoServer  # noqa: E402

_PROXIES = pytest.StashKey()
SANITIZER = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:")


@pytest.fixture(scope="session", autouse=True)
def stubs(tmp_path_factory):
    return craft_proxy.generate_stubs(tmp_path_factory.mktemp("stubs"))


@pytest.fixture
def server_factory():
    """make(port=0) -> a started EchoServer, stopped after the test."""
    made = []

    def make(port=0):
        s = EchoServer(port)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def server(server_factory):
    return server_factory()


@pytest.fixture
def proxy_factory(request, tmp_path):
    """make(args, start=True, **kw) -> craft_proxy.Proxy."""
    made = []
    request.node.stash[_PROXIES] = made

    def make(args, start=True, **kw):
        p = craft_proxy.Proxy(args, tmp_path / f"proxy{len(made)}", **kw)
        made.append(p)
        if start:
            p.start()
        return p

    yield make

    problems = []
    for p in made:
        if p.proc is None:
            continue
        rc = p.proc.poll()
        if rc is not None and not p.stopped:
            problems.append(f"craft-proxy exited by itself with status {rc}")
        elif rc is None:
            try:
                rc = p.stop()
            except craft_proxy.ProxyError as e:
                problems.append(str(e))
                continue
            if rc != 0:
                problems.append(f"craft-proxy exited with status {rc} on SIGTERM")
        text = p.log_path.read_text(errors="replace") if p.log_path.exists() else ""
        if SANITIZER.search(text):
            problems.append(f"sanitizer report in {p.log_path}")
    if problems:
        pytest.fail("craft-proxy misbehaved:\n  " + "\n  ".join(problems))


# The two paths of the proxy (proxy_forward.c): methods declared unary
# (--unary) come with their message and go out in one batch; all others
# are relayed as streams. Tests that take `link` run on both.
UNARY_METHODS = ("/test.Echo/Echo", "/test.Other/Echo")


@pytest.fixture(params=["generic", "unary"])
def link(request, proxy_factory, server):
    """A proxy with one link 1-2 to `server`, seed 42; returns
    (proxy, channel to the link's listener)."""
    args = ["--link", f"1-2=127.0.0.1:0,{server.address}", "--seed", "42"]
    if request.param == "unary":
        for m in UNARY_METHODS:
            args += ["--unary", m]
    p = proxy_factory(args)
    ch = grpc.insecure_channel(p.listen("1-2"))
    yield p, ch
    ch.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    for k, p in enumerate(item.stash.get(_PROXIES, [])):
        rep.sections.append(
            (f"craft-proxy {k}: {p.command_line()} (seed {p.seed})", p.log_tail(40))
        )
    rep.sections.append(("replay", replay_command(
        item, {"CRAFT_PROXY": craft_proxy.proxy_path()})))


def pytest_report_header(config):
    return [f"craft-proxy: {craft_proxy.proxy_path()}", f"python: {sys.executable}"]
