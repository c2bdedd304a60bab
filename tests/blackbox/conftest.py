"""Fixtures of the black-box tests: generated gRPC stubs, and local craftd
clusters that are always killed at the end, whose log tails and a replay
command are printed when a test fails.

Run from the repository root with Debian's Python (it has python3-grpcio):

    CRAFTD=build/src/craftd /usr/bin/python3 -m pytest -q tests/blackbox
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "harness"))

from pytest_craft import cluster as craft_cluster  # noqa: E402
from pytest_craft.cluster import Cluster, HarnessError  # noqa: E402
from pytest_craft.tools import replay_command  # noqa: E402

_CLUSTERS = pytest.StashKey()


@pytest.fixture(scope="session", autouse=True)
def pb(tmp_path_factory):
    """raft_pb2, generated from proto/raft.proto for this run."""
    mod, _ = craft_cluster.generate_stubs(tmp_path_factory.mktemp("stubs"))
    return mod


@pytest.fixture
def cluster_factory(request, tmp_path, pb):
    """make(n=3, start=True, wait_leader=True, extra_args=()) -> Cluster.
    Every cluster made is killed after the test; a node that exited by
    itself, or a sanitizer report in a log, fails the test."""
    made = []
    request.node.stash[_CLUSTERS] = made

    def make(n=3, start=True, wait_leader=True, extra_args=()):
        c = Cluster(tmp_path / f"cluster{len(made)}", n=n, extra_args=extra_args)
        made.append(c)
        if start:
            c.start()
            if wait_leader:
                c.wait_for_leader(deadline=5.0)
        return c

    yield make

    problems = []
    for c in made:
        for node_id, rc in c.cleanup():
            problems.append(f"node {node_id} exited by itself with status {rc}")
        problems.extend(c.sanitizer_reports())
    if problems:
        pytest.fail("craftd misbehaved during the test:\n  " + "\n  ".join(problems))


@pytest.fixture
def cluster(cluster_factory):
    """3 nodes, running, with a leader that all of them agree on."""
    return cluster_factory(3)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    for k, c in enumerate(item.stash.get(_CLUSTERS, [])):
        rep.sections.append(
            (f"craftd cluster {k}: log tails ({c.root})", c.log_tails(40))
        )
    rep.sections.append(("replay", replay_command(item, {
        "CRAFTD_WRAPPER": os.environ.get("CRAFTD_WRAPPER"),
        "CRAFTD": craft_cluster.craftd_path()})))


def pytest_report_header(config):
    return [
        f"craftd: {craft_cluster.craftd_path()}",
        f"python: {sys.executable}",
    ]


# Keep the name importable for tests that want to catch it.
__all__ = ["HarnessError"]
