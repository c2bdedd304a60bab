"""The pytest plugin: testcases/*.md are collected as tests and run against
real clusters (testcases/README.md describes the files and the options).

Loaded by testcases/conftest.py. Every scenario:
  1. runs its steps (run.py) against a fresh cluster, recording every client
     operation and every GetStatus answer;
  2. ends with FINAL-01: every fault healed, every node that should run
     running, one more write, every node converged;
  3. is judged by the checkers (checkers.py): linearizability, election
     safety, no acknowledged write lost, no request applied twice,
     convergence.
A failure prints the step, the seed, the fault timeline, the tail of the
history and of each node's log, and the command that replays it.
"""

from __future__ import annotations

import json
import random
import shlex
import shutil
import tempfile
import time
import traceback
from pathlib import Path

import pytest

from . import checkers
from . import cluster as cl
from . import compose
from . import run as runmod
from .proxy import ProxyNet
from .report import report_figures, summary_lines
from .scenario import ScenarioSyntaxError, parse

REPO = Path(__file__).resolve().parents[2]
# The maximum election timeout of each timing profile, in seconds: craftd's
# defaults (300 ms, randomized up to 2x) and the original's (20-30 s).
PROFILES = {"fast": (0.6, []), "seed": (30.0, ["--timing", "seed"])}
AREAS = ("elect", "fail", "join", "catchup", "client", "repl", "persist",
         "net", "lin", "member", "snap", "final", "wire")

_RESULTS = pytest.StashKey()


def pytest_addoption(parser):
    g = parser.getgroup("craft", "craft conformance scenarios")
    g.addoption("--cluster", choices=("local", "compose"), default="local",
                help="local: craftd processes on 127.0.0.1 behind craft-proxy "
                     "(default); compose: the docker compose cluster")
    g.addoption("--node-cmd", default=None,
                help="run this command instead of craftd (placeholders {id} "
                     "{listen} {data} {peers} {routes} {join})")
    g.addoption("--seed", type=int, default=None,
                help="the random seed (default: random, printed)")
    g.addoption("--timing", choices=tuple(PROFILES), default="fast",
                help="fast (default) or seed: the original's slow elections")
    g.addoption("--long", action="store_true",
                help="also the long randomized runs")
    g.addoption("--report", default=None,
                help="write one JSON record per scenario to this file")
    g.addoption("--no-proxy", action="store_true",
                help="peer links without craft-proxy (network steps fail)")


def pytest_configure(config):
    for a in AREAS:
        config.addinivalue_line("markers", f"{a}: {a.upper()}-* scenarios")
    config.addinivalue_line("markers", "long: runs only with --long")
    config.stash[_RESULTS] = []
    if config.getoption("--seed", None) is None:
        config.option.seed = random.SystemRandom().randrange(1 << 31)


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".md" and file_path.name != "README.md" and \
            file_path.parent.name == "testcases":
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    def collect(self):
        try:
            sc = parse(self.path)
        except ScenarioSyntaxError as e:
            raise self.CollectError(str(e)) from None
        item = ScenarioItem.from_parent(self, name=sc.id, scenario=sc)
        item.add_marker(sc.area)
        yield item


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario, **kw):
        super().__init__(**kw)
        self.scenario = scenario
        self.run_state = None
        self.failed_step = None
        self.record = {"id": scenario.id, "title": scenario.title}

    # -- running -------------------------------------------------------------

    def runtest(self):
        opt = self.config.option
        if opt.cluster == "compose":
            why = compose.unsupported(self.scenario, opt.timing, opt.node_cmd)
            if why:
                pytest.skip(f"--cluster compose: {why}")
        et, timing_args = PROFILES[opt.timing]
        stubs_dir = _stubs_dir()
        # Kept when the scenario fails (the failure names it), else removed.
        root = Path(tempfile.mkdtemp(prefix=f"craft-{self.scenario.id}-"))
        self.root = root
        seed = opt.seed
        nets = []

        def make_cluster(n, extra=()):
            """n nodes, room for 3 more to join, every link through a new
            craft-proxy (unless --no-proxy)."""
            if opt.cluster == "compose":
                return make_compose(n)
            net = None
            if not opt.no_proxy:
                net = ProxyNet(root / "proxy", seed, stubs_dir)
                nets.append(net)
            c = cl.Cluster(root / "cluster", n=n,
                           extra_args=timing_args + list(extra),
                           capacity=n + 3, network=net, node_cmd=opt.node_cmd)
            return c, net

        def make_compose(n):
            """The compose cluster, reset to n nodes (compose.py)."""
            env = _compose_env(self.config)
            net = compose.ComposeNet(stubs_dir)
            nets.append(net)
            return compose.ComposeCluster(env, root / "cluster", n, net), net

        run = runmod.Run(self.scenario, make_cluster, None, seed, et,
                         long=opt.long)
        self.run_state = run
        t0 = time.monotonic()
        ok = False
        try:
            self._steps(run, self.scenario.steps)
            self.failed_step = None
            final_phase(run)
            ok = True
        finally:
            self.record.update(report_figures(run, time.monotonic() - t0))
            run.close()
            for net in nets:
                rc = net.close()
                if rc not in (0, None, -15) and ok:
                    ok = False
                    raise runmod.StepFailed(f"craft-proxy exited with status "
                                            f"{rc}:\n{net.log_tail()}")
            if run.cluster is not None:
                crashed = run.cluster.cleanup()
                problems = [f"node {i} exited by itself with status {rc}"
                            for i, rc in crashed]
                problems += run.cluster.sanitizer_reports()
                if problems and ok:
                    ok = False
                    raise runmod.StepFailed("craftd misbehaved:\n  " +
                                            "\n  ".join(problems))
            if ok:
                shutil.rmtree(root, ignore_errors=True)

    def _steps(self, run, steps):
        for st in steps:
            if st.times:
                times = st.long_times if run.long and st.long_times \
                    else st.times
                for i in range(times):
                    run.note(f"{st.where()}: round {i + 1} of {times}")
                    self._steps(run, st.block)
                continue
            self.failed_step = st
            run.current_step_text = st.text
            run.note(f"{st.where()}: {st.text}")
            st.func(run, **st.args)
            if getattr(st.func, "is_fault", False):
                # Once the step has put it in force: elections and
                # unavailability are timed from then.
                run.faults.append((time.monotonic(), st.text))
        self.failed_step = None

    # -- reporting -------------------------------------------------------------

    def repr_failure(self, excinfo):
        run = self.run_state
        lines = []
        if self.failed_step is not None:
            lines.append(f"step {self.failed_step.where()}: "
                         f"{self.failed_step.text}")
        else:
            lines.append("after the steps (final checks)")
        err = excinfo.value
        if isinstance(err, (runmod.StepFailed, AssertionError, cl.HarnessError)):
            lines.append(str(err))
        else:
            lines.append("".join(traceback.format_exception(
                type(err), err, err.__traceback__)).rstrip())
        if run is not None:
            lines.append(f"seed: {run.seed}")
            lines.append("fault timeline:")
            lines += [f"  {t:8.3f}s  {what}" for t, what in run.timeline[-40:]]
            ops = run.history.ops[-15:]
            if ops:
                lines.append("last client operations:")
                base = run.history.start_ns()
                lines += ["  " + o.describe(base) for o in ops]
            if run.cluster is not None:
                lines.append(run.cluster.log_tails(25))
        lines.append(f"data and logs kept in {getattr(self, 'root', '?')}")
        lines.append("replay: " + replay_command(self))
        return "\n".join(lines)

    def reportinfo(self):
        return self.path, 0, f"{self.scenario.id}: {self.scenario.title}"


_STUBS = []
_COMPOSE = pytest.StashKey()


def _compose_env(config):
    """The compose project under test, found once a session."""
    env = config.stash.get(_COMPOSE, None)
    if env is None:
        env = compose.ComposeEnv()
        config.stash[_COMPOSE] = env
    return env


def pytest_sessionfinish(session, exitstatus):
    """--cluster compose: leaves node1..node5 running on fresh data, as
    `docker compose up` did, and no container of the harness behind."""
    env = session.config.stash.get(_COMPOSE, None)
    if env is None:
        return
    try:
        env.restore()
    except cl.HarnessError as e:
        print(f"\ncraft: restoring the compose cluster failed: {e}")


def _stubs_dir():
    """Generated stubs of proto/*.proto, once per session."""
    if not _STUBS:
        d = tempfile.mkdtemp(prefix="craft-stubs-")
        cl.generate_stubs(d)
        _STUBS.append(d)
    return _STUBS[0]


def replay_command(item):
    opt = item.config.option
    if opt.cluster == "compose":
        return ("docker-compose run --rm tester testcases -k " +
                shlex.quote(item.scenario.id) + f" --seed {opt.seed}")
    words = ["/usr/bin/python3", "-m", "pytest", "testcases",
             "-k", item.scenario.id, "--seed", str(opt.seed)]
    if opt.timing != "fast":
        words += ["--timing", opt.timing]
    if opt.node_cmd:
        words += ["--node-cmd", opt.node_cmd]
    env = f"CRAFTD={shlex.quote(str(cl.craftd_path()))} "
    return f"cd {shlex.quote(str(REPO))} && {env}" + " ".join(
        shlex.quote(w) for w in words)


# ---------------------------------------------------------------------------
# The end of every scenario: FINAL-01 and the checkers


def final_phase(run):
    """Heals everything, brings back every member, writes once more, waits
    for convergence, reads the final state and runs the checkers."""
    if run.cluster is None:
        return
    run.stop_background()
    if run.net is not None:
        run.net.clear()
    for node in run.cluster.nodes.values():
        if node.removed:
            continue
        if node.running():
            node.resume()  # harmless if it was not paused
        else:
            node.start()
    run.note("final: healed, every member running")
    run.figures["final_t"] = t_heal = time.monotonic()
    long_wait = max(10.0, 20 * run.et)
    run.leader(long_wait)
    c = run.new_client()
    final = c.run("add", None, (0, 0), deadline_s=long_wait)
    if final.outcome != "ok":
        raise runmod.StepFailed(f"final write failed: {final.outcome}: "
                                f"{final.why}\n{run.describe()}")
    members = [n for n in run.cluster.running() if not n.removed]
    st = run.wait(lambda: run.cluster.converged(members), long_wait,
                  "final convergence of every member")
    run.figures["recovery_s"] = round(time.monotonic() - t_heal, 3)
    total = c.run("total", deadline_s=long_wait)
    keys = sorted({o.key for o in run.history.ops if o.key is not None})
    final_kv = {}
    for k in keys:
        got = c.run("get", k, deadline_s=long_wait)
        if got.outcome != "ok":
            raise runmod.StepFailed(f"final read of {k!r} failed: {got.why}")
        final_kv[k] = got.value
    for node in run.cluster.nodes.values():
        for term, role in leader_claims_in_log(node):
            run.history.observe(node.id, term, role, source="log")
    statuses = [s for s in run.statuses(members).values()
                if not isinstance(s, str)]
    run.checks = checkers.check_all(
        run.history, final_kv=final_kv,
        final_total=total.value if total.outcome == "ok" else None,
        initial_total=0, statuses=statuses)
    run.figures["final_applied"] = st.applied_index
    bad = [r for r in run.checks.values() if r.verdict == checkers.VIOLATION]
    if bad:
        raise runmod.StepFailed("checker verdicts:\n" + "\n".join(
            str(r) for r in bad))


def leader_claims_in_log(node):
    """(term, 'LEADER') for every became_leader line in a craftd log."""
    text = node.log_text()
    out = []
    for line in text.splitlines():
        if "evt=became_leader" in line:
            for w in line.split():
                if w.startswith("term=") and w[5:].isdigit():
                    out.append((int(w[5:]), "LEADER"))
                    break
    return out


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if isinstance(item, ScenarioItem) and rep.when == "call":
        item.record["outcome"] = rep.outcome
        item.config.stash[_RESULTS].append(item.record)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    results = config.stash.get(_RESULTS, [])
    if not results:
        return
    tr = terminalreporter
    tr.section("craft conformance")
    tr.write_line(f"seed {config.option.seed}, timing {config.option.timing}")
    for line in summary_lines(results):
        tr.write_line(line)
    path = config.option.report
    if path:
        with open(path, "w") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")
        tr.write_line(f"records: {path}")
