"""Running a scenario: the Run (everything a step can touch) and the steps.

Every step is a function `f(run, **groups)` registered with @step; its
patterns are the language of testcases/README.md. A step that finds what it
expects returns; one that does not raises StepFailed with what it saw.
Every wait is bounded (see scenario.seconds)."""

from __future__ import annotations

import random
import re
import threading
import time
from pathlib import Path

import grpc

from . import checkers
from . import cluster as cl
from .client import Client, require_ok
from .history import History
from .scenario import seconds, step

POLL = 0.05


class StepFailed(AssertionError):
    """A step's expectation did not hold."""


class Run:
    """The state of one scenario run."""

    def __init__(self, scenario, cluster_factory, net, seed, et, long=False,
                 pb=None, pb_grpc=None):
        self.scenario = scenario
        self.make_cluster = cluster_factory
        self.cluster = None
        self.net = net
        self.seed = seed
        self.rng = random.Random(seed)
        self.et = et
        self.long = long
        self.pb = pb or cl.pb
        self.pb_grpc = pb_grpc or cl.pb_grpc
        self.vars = {}
        self.chosen = set()        # followers named so far ("another")
        self.history = History(meta={"scenario": scenario.id, "seed": seed})
        self.timeline = []         # (monotonic s, text)
        self.t0 = time.monotonic()
        self.failed_leader = None  # the leader a fault took away
        self.clients = []
        self.background = []       # (thread, stop event)
        self._client = None
        self.figures = {}
        self.faults = []           # (monotonic s, step text) of fault steps
        self.current_step_text = ""
        self._addend = 1000
        self._addend_lock = threading.Lock()

    # -- bookkeeping ----------------------------------------------------------

    def note(self, text):
        self.timeline.append((time.monotonic() - self.t0, text))

    def dur(self, text):
        return seconds(text, self.et)

    def wait(self, pred, within, what):
        """pred() until true (returned) or `within` seconds passed; then a
        StepFailed with what every node says."""
        try:
            return cl.wait_until(pred, within, what)
        except cl.HarnessError as e:
            raise StepFailed(f"{e}\n{self.describe()}") from None

    def describe(self):
        return self.cluster.describe() if self.cluster else "(no cluster)"

    # -- nodes ----------------------------------------------------------------

    def members(self):
        """Running nodes that were not removed on purpose."""
        return [n for n in self.cluster.running() if not n.removed]

    def statuses(self, nodes=None):
        """GetStatus of the given (default: member) nodes; each answer is
        also an observation for the election safety check."""
        sts = self.cluster.statuses(nodes if nodes is not None
                                    else self.members(), timeout=0.5)
        for st in sts.values():
            if not isinstance(st, str):
                self.history.observe_status(st)
        return sts

    def leader_now(self):
        """The node that claims to lead the highest term among the members
        that answer, if a majority of its configuration's voters say the
        same (a paused or cut-off minority neither answers nor agrees; it
        does not hide the leader). None if there is none."""
        sts = {i: s for i, s in self.statuses().items()
               if not isinstance(s, str)}
        claims = [(s.current_term, i) for i, s in sts.items()
                  if s.state == "LEADER"]
        if not claims:
            return None
        term, lid = max(claims)
        voters = set(sts[lid].config.nodes)
        agree = {i for i, s in sts.items()
                 if s.current_term == term and s.current_leader == lid}
        return lid if len(agree & voters) > len(voters) // 2 else None

    def leader_now_quiet(self):
        try:
            return self.leader_now()
        except (grpc.RpcError, cl.HarnessError):
            return None

    def next_addend(self):
        """A value no other add of the run uses."""
        with self._addend_lock:
            self._addend += 1
            return self._addend

    def leader(self, within=None):
        return self.wait(self.leader_now, within or max(5.0, 4 * self.et),
                         "a leader that every running node agrees on")

    def node(self, ref):
        """'node 3', 'the leader', 'a follower', 'another follower', '$x'."""
        ref = ref.strip()
        if ref.startswith("$"):
            if ref not in self.vars:
                raise StepFailed(f"{ref} is not remembered yet")
            return self.vars[ref]
        m = re.fullmatch(r"node (\d+)", ref)
        if m:
            return int(m.group(1))
        if ref == "the leader":
            return self.leader()
        if ref in ("a follower", "another follower"):
            lid = self.leader()
            # Followers of that leader (not a cut-off node that lost it).
            pool = [i for i, s in self.statuses().items()
                    if not isinstance(s, str) and i != lid and
                    s.current_leader == lid]
            if ref == "another follower":
                pool = [i for i in pool if i not in self.chosen] or pool
            if not pool:
                raise StepFailed(f"no running follower for {ref!r}")
            pick = self.rng.choice(sorted(pool))
            self.chosen.add(pick)
            return pick
        raise StepFailed(f"unknown node reference {ref!r}")

    def nodes(self, ref, exclude=()):
        """'1,2,3', '$a,$b', '3 random nodes', 'the rest'."""
        ref = ref.strip()
        m = re.fullmatch(r"(\d+) random nodes", ref)
        if m:
            pool = sorted(n.id for n in self.members())
            return sorted(self.rng.sample(pool, int(m.group(1))))
        m = re.fullmatch(r"(\d+) followers", ref)
        if m:
            lid = self.leader()
            pool = sorted(i for i, s in self.statuses().items()
                          if not isinstance(s, str) and i != lid and
                          s.current_leader == lid)
            return sorted(self.rng.sample(pool, int(m.group(1))))
        if ref == "the rest":
            return sorted(set(self.cluster.nodes) - set(exclude))
        return [self.node(p if p.strip().startswith("$") else f"node {p}")
                for p in ref.split(",")]

    # -- clients --------------------------------------------------------------

    def new_client(self):
        c = Client(self.pb, self.pb_grpc, self.history, self.client_endpoint,
                   lambda: [n.id for n in self.members()],
                   self.cluster.id_of_address, number=len(self.clients) + 1,
                   rng=random.Random(self.rng.getrandbits(64)))
        self.clients.append(c)
        return c

    def client(self):
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def client_endpoint(self, node_id):
        return self.cluster.client_address(node_id)

    def op_deadline(self):
        return max(10.0, 10 * self.et)

    def stop_background(self):
        for t, stop in self.background:
            stop.set()
        for t, _ in self.background:
            t.join(timeout=self.op_deadline() + 5)
        self.background = []

    def close(self):
        for t, stop in self.background:
            stop.set()
        for t, _ in self.background:
            t.join(timeout=self.op_deadline() + 5)
        for c in self.clients:
            c.close()


# ---------------------------------------------------------------------------
# The cluster


@step("start {int:n} nodes(?: with snapshots every {int:every} entries)?")
def start_nodes(run, n, every=None):
    # Keep half an interval behind each snapshot: a follower further
    # behind than that needs the snapshot.
    extra = ["--snapshot-every", every, "--snapshot-keep",
             str(max(1, int(every) // 2))] if every else []
    run.cluster, run.net = run.make_cluster(int(n), extra)
    run.cluster.start()
    run.note(f"started {n} nodes")


@step("start node {int:k} joining via {node:via}")
def start_joining(run, k, via):
    k, via = int(k), run.node(via)
    voters_before = None
    run.cluster.add_node(via, node_id=k)
    run.note(f"started node {k} joining via node {via}")

    def member():
        sts = run.statuses()
        if any(isinstance(s, str) for s in sts.values()):
            return False
        return all(k in s.config.nodes for s in sts.values())
    run.wait(member, max(10.0, 20 * run.et),
             f"node {k} a voter in every running node's configuration")
    del voters_before


@step("remember the leader as {var:v}")
def remember_leader(run, v):
    run.vars[v] = run.leader()


@step("remember a follower as {var:v}")
def remember_follower(run, v):
    run.vars[v] = run.node("another follower")


@step("remember the term as {var:v}")
def remember_term(run, v):
    lid = run.leader()
    run.vars[v] = run.statuses([run.cluster[lid]])[lid].current_term


@step("remember the config version as {var:v}")
def remember_version(run, v):
    lid = run.leader()
    run.vars[v] = run.statuses([run.cluster[lid]])[lid].config.version


# ---------------------------------------------------------------------------
# Process faults


def _leader_fault(run, nid):
    """A fault on the current leader: `wait for a new leader` excludes it."""
    try:
        if run.leader_now() == nid:
            run.failed_leader = nid
    except cl.HarnessError:
        pass


@step("kill {node:n}")
def kill(run, n):
    nid = run.node(n)
    _leader_fault(run, nid)
    run.cluster[nid].kill()
    run.note(f"kill -9 node {nid}")


@step("stop {node:n}")
def stop(run, n):
    nid = run.node(n)
    _leader_fault(run, nid)
    rc = run.cluster[nid].terminate(deadline=max(10.0, 2 * run.et))
    if rc is None:
        raise StepFailed(f"node {nid} still runs 10 s after SIGTERM")
    if rc != 0:
        raise StepFailed(f"node {nid} exited with status {rc} on SIGTERM")
    run.note(f"SIGTERM node {nid}")


@step("pause {node:n}")
def pause(run, n):
    nid = run.node(n)
    _leader_fault(run, nid)
    run.cluster[nid].pause()
    run.note(f"SIGSTOP node {nid}")


@step("resume {node:n}")
def resume(run, n):
    nid = run.node(n)
    run.cluster[nid].resume()
    run.note(f"SIGCONT node {nid}")


@step("restart {node:n}")
def restart(run, n):
    nid = run.node(n)
    run.cluster[nid].start()
    run.note(f"restart node {nid}")


@step("kill all")
def kill_all(run):
    for node in run.cluster.running():
        node.kill()
    run.note("kill -9 every node")


@step("restart all")
def restart_all(run):
    for node in run.cluster.nodes.values():
        if not node.running() and not node.removed:
            node.start()
    run.note("restart every node")


@step("wipe {node:n}")
def wipe(run, n):
    nid = run.node(n)
    run.cluster[nid].wipe()
    run.note(f"wipe the data of node {nid}")


@step("tear the last write of {node:n}")
def tear(run, n):
    nid = run.node(n)
    path, at = run.cluster[nid].tear_last_write()
    run.note(f"tear the last write of node {nid} ({Path(path).name} from offset {at})")


@step("expect {node:n} logged {word:evt} within {dur:d}")
def logged(run, n, evt, d):
    nid = run.node(n)
    node = run.cluster[nid]
    run.wait(lambda: f"evt={evt}" in node.log_text(), run.dur(d),
             f"node {nid} logging evt={evt} ({node.log_path})")


# ---------------------------------------------------------------------------
# Clients


def _via(run, via):
    return run.node(via) if via else None


@step("add {int:a} {int:b}(?: via {node:via})?(?: expect {int:expect})?")
def add(run, a, b, via=None, expect=None):
    node = _via(run, via)
    op = run.client().run("add", None, (int(a), int(b)), via=node,
                          deadline_s=run.op_deadline(), sticky=node is not None)
    require_ok(op, int(expect) if expect is not None else None)


@step("add {int:a} {int:b} via {node:via}, and retry it via {node:again} "
      "expect {int:expect}")
def add_retry(run, a, b, via, again, expect):
    """The same request (client id, sequence) twice: the second answer comes
    from the session table (dissertation §6.3)."""
    c = run.client()
    first = c.run("add", None, (int(a), int(b)), via=run.node(via),
                  deadline_s=run.op_deadline(), sticky=True)
    require_ok(first, int(expect))
    c.sequence -= 1  # the retry reuses the sequence
    second = c.run("add", None, (int(a), int(b)), via=run.node(again),
                   deadline_s=run.op_deadline(), sticky=True)
    require_ok(second, int(expect))
    if second.value.get("total") != first.value.get("total"):
        raise StepFailed(f"the retry was applied again: the total went from "
                         f"{first.value.get('total')} to "
                         f"{second.value.get('total')}")


@step("{int:n} adds(?: via {node:via})?")
def n_adds(run, n, via=None):
    node = _via(run, via)
    for i in range(1, int(n) + 1):
        op = run.client().run("add", None, (i, 0), via=node,
                              deadline_s=run.op_deadline(),
                              sticky=node is not None)
        require_ok(op, i)


@step("expect the total is {int:t}")
def expect_total(run, t):
    op = run.client().run("total", deadline_s=run.op_deadline())
    require_ok(op, int(t))


# ---------------------------------------------------------------------------
# Waiting and checking


@step("wait for a leader within {dur:d}")
def wait_leader(run, d):
    lid = run.leader(run.dur(d))
    run.figures["leader_seen_t"] = time.monotonic()
    run.note(f"leader: node {lid}")


@step("wait for a new leader within {dur:d}")
def wait_new_leader(run, d):
    old = run.failed_leader
    # From the fault that took the leader away (SCENARIOS.md: fault to new
    # leader): the latest one since a leader was last waited for; else now.
    t0 = time.monotonic()
    if run.faults and run.faults[-1][0] > run.figures.get("leader_seen_t", 0):
        t0 = run.faults[-1][0]

    def new():
        lid = run.leader_now()
        return lid if lid is not None and lid != old else None
    lid = run.wait(new, run.dur(d), f"a new leader (not node {old})")
    run.figures["leader_seen_t"] = time.monotonic()
    run.figures.setdefault("election_s", []).append(time.monotonic() - t0)
    run.note(f"new leader: node {lid}")


@step("expect one leader, and every node agrees on its term")
def one_leader(run):
    sts = run.statuses()
    bad = {i: s for i, s in sts.items() if isinstance(s, str)}
    if bad:
        raise StepFailed(f"nodes did not answer: {bad}")
    leaders = [i for i, s in sts.items() if s.state == "LEADER"]
    terms = {s.current_term for s in sts.values()}
    if len(leaders) != 1 or len(terms) != 1:
        raise StepFailed(f"leaders {leaders}, terms {sorted(terms)}\n"
                         f"{run.describe()}")


@step("expect no election for {dur:d}")
def no_election(run, d):
    lid = run.leader()
    st = run.statuses([run.cluster[lid]])[lid]
    end = time.monotonic() + run.dur(d)
    while time.monotonic() < end:
        for i, s in run.statuses().items():
            if isinstance(s, str):
                continue
            if s.current_term != st.current_term:
                raise StepFailed(f"node {i} is in term {s.current_term}, the "
                                 f"leader's was {st.current_term}\n"
                                 f"{run.describe()}")
        time.sleep(POLL)


@step("expect the term is still {var:v}")
def term_still(run, v):
    lid = run.leader()
    t = run.statuses([run.cluster[lid]])[lid].current_term
    if t != run.vars[v]:
        raise StepFailed(f"the term is {t}, it was {run.vars[v]}")


@step("expect the term is above {var:v}")
def term_above(run, v):
    lid = run.leader()
    t = run.statuses([run.cluster[lid]])[lid].current_term
    if t <= run.vars[v]:
        raise StepFailed(f"the term is {t}, not above {run.vars[v]}")


@step("expect {node:n} is a follower within {dur:d}")
def is_follower(run, n, d):
    nid = run.node(n)

    def follower():
        st = run.statuses([run.cluster[nid]])[nid]
        return not isinstance(st, str) and st.state == "FOLLOWER" and \
            st.current_leader not in (0, nid)
    run.wait(follower, run.dur(d), f"node {nid} a follower with a leader")


@step("expect {node:n} has every entry within {dur:d}")
def has_every_entry(run, n, d):
    nid = run.node(n)

    def caught_up():
        lid = run.leader_now()
        if lid is None:
            return False
        sts = run.statuses([run.cluster[lid], run.cluster[nid]])
        if any(isinstance(s, str) for s in sts.values()):
            return False
        lst, nst = sts[lid], sts[nid]
        return nst.last_log_index >= lst.commit_index and \
            nst.applied_index >= lst.commit_index
    run.wait(caught_up, run.dur(d), f"node {nid} caught up with the leader")


@step("wait until converged within {dur:d}")
def converged(run, d):
    run.wait(lambda: run.cluster.converged(run.members()), run.dur(d),
             "every running node at the same applied index and state digest")


@step("expect every node has {int:k} voters within {dur:d}")
def voters(run, k, d):
    def ok():
        sts = run.statuses()
        return all(not isinstance(s, str) and len(s.config.nodes) == int(k)
                   for s in sts.values())
    run.wait(ok, run.dur(d), f"{k} voters in every running node's configuration")


@step("expect every node logged its role changes")
def logged_roles(run):
    for node in run.cluster.nodes.values():
        text = node.log_text()
        roles = set(re.findall(r"role=(\w+) evt=(?:became_\w+|state)", text))
        if not roles:
            raise StepFailed(f"node {node.id} logged no role change "
                             f"({node.log_path})")


@step("sleep {dur:d}")
def sleep(run, d):
    time.sleep(run.dur(d))


# ---------------------------------------------------------------------------
# Concurrent and background clients


@step("{int:n} concurrent adds")
def concurrent_adds(run, n):
    """n clients add distinct powers of two at once; each must be
    acknowledged (and so applied exactly once: the final checks)."""
    n = int(n)
    clients = [run.new_client() for _ in range(n)]
    ops = [None] * n

    def one(i):
        ops[i] = clients[i].run("add", None, (1 << (i + 8), 0),
                                deadline_s=run.op_deadline())
    threads = [threading.Thread(target=one, args=(i,), name=f"client-{i}")
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(run.op_deadline() + 5)
    for op in ops:
        if op is None:
            raise StepFailed("a concurrent add never returned")
        require_ok(op, op.args[0])


_OPS = ("add", "put", "get", "cas")


def _background(run, client, kinds, keys, stop, via_followers):
    """One background client: random operations until stopped. Adds use
    values unique to the run, so that a duplicate shows in the total."""
    rng = client.rng
    while not stop.is_set():
        kind = rng.choice(kinds)
        via = None
        if via_followers:
            lid = run.leader_now_quiet()
            pool = [n.id for n in run.members() if n.id != lid]
            via = rng.choice(pool) if pool else None
        key = f"k{rng.randrange(keys)}" if kind != "add" else None
        if kind == "add":
            args = (run.next_addend(), 0)
        elif kind == "put":
            args = (f"{client.number}-{rng.randrange(1 << 30)}",)
        elif kind == "cas":
            args = (f"{rng.randrange(1 << 30)}", f"{client.number}-{rng.randrange(1 << 30)}")
        else:
            args = ()
        try:
            client.run(kind, key, args, via=via,
                       deadline_s=max(2.0, 4 * run.et), sticky=via is not None)
        except Exception as e:  # noqa: BLE001 - the history records it
            run.note(f"client {client.number}: {e!r}")
        time.sleep(rng.uniform(0, 0.01))


@step("start {int:n} clients doing {ops:kinds} on {int:k} keys"
      "(?: via followers)?")
def start_clients(run, n, kinds, k, **_):
    via_followers = "via followers" in run.current_step_text
    kinds = tuple(kinds.split(","))
    for _ in range(int(n)):
        c = run.new_client()
        stop = threading.Event()
        t = threading.Thread(target=_background,
                             args=(run, c, kinds, int(k), stop, via_followers),
                             name=f"client-{c.number}", daemon=True)
        t.start()
        run.background.append((t, stop))
    run.note(f"{n} background clients: {','.join(kinds)} on {k} keys")


@step("stop clients")
def stop_clients(run):
    run.stop_background()
    s = run.history.summary()
    run.note(f"clients stopped: {s['ok']} ok, {s['fail']} failed, "
             f"{s['unknown']} unknown")
    if s["ok"] == 0:
        raise StepFailed("the background clients got no operation through")


# ---------------------------------------------------------------------------
# Membership and leadership


def _admin(run, method, request, what):
    """A membership or leadership call through the leader (following its
    hints), until OP_OK or the deadline."""
    end = time.monotonic() + run.op_deadline()
    last = None
    while time.monotonic() < end:
        lid = run.leader_now_quiet()
        if lid is None:
            time.sleep(POLL)
            continue
        try:
            resp = getattr(run.cluster[lid].stub(), method)(
                request, timeout=max(2.0, 4 * run.et))
        except grpc.RpcError as e:
            last = f"{e.code().name}: {e.details()}"
            time.sleep(POLL)
            continue
        if resp.status == run.pb.OP_OK and resp.success:
            return resp
        last = f"{run.pb.OpStatus.Name(resp.status)}: {resp.error}"
        if resp.status == run.pb.OP_INVALID:
            break
        time.sleep(POLL)
    raise StepFailed(f"{what}: {last}\n{run.describe()}")


@step("remove {node:n}")
def remove(run, n):
    nid = run.node(n)
    _leader_fault(run, nid)
    _admin(run, "RemoveNode", run.pb.RemoveRequest(node_id=nid),
           f"remove node {nid}")
    run.cluster[nid].removed = True
    run.note(f"removed node {nid}")


@step("transfer leadership to {node:n}")
def transfer(run, n):
    nid = run.node(n)
    run.failed_leader = run.leader_now_quiet()
    t0 = time.monotonic()
    _admin(run, "TransferLeadership", run.pb.TransferRequest(node_id=nid),
           f"transfer leadership to node {nid}")
    run.figures.setdefault("transfer_s", []).append(time.monotonic() - t0)
    run.note(f"leadership transferred to node {nid}")


@step("expect {node:n} is the leader within {dur:d}")
def is_leader(run, n, d):
    nid = run.node(n)
    run.wait(lambda: run.leader_now() == nid, run.dur(d),
             f"node {nid} the leader every running node agrees on")


@step("expect no leader among {nodes:ns} for {dur:d}")
def no_leader_among(run, ns, d):
    ids = run.nodes(ns)
    end = time.monotonic() + run.dur(d)
    while time.monotonic() < end:
        sts = run.statuses([run.cluster[i] for i in ids])
        for i, s in sts.items():
            if not isinstance(s, str) and s.state == "LEADER":
                raise StepFailed(f"node {i} leads term {s.current_term}\n"
                                 f"{run.describe()}")
        time.sleep(POLL)


@step("expect {node:n} stays out for {dur:d}")
def stays_out(run, n, d):
    """A removed node does not disturb the cluster: the others' term does
    not move while it keeps running (dissertation §4.2.3)."""
    nid = run.node(n)
    others = [x for x in run.members() if x.id != nid]
    lid = run.leader(max(5.0, 4 * run.et))
    term = run.statuses([run.cluster[lid]])[lid].current_term
    end = time.monotonic() + run.dur(d)
    while time.monotonic() < end:
        for i, s in run.statuses(others).items():
            if not isinstance(s, str) and s.current_term != term:
                raise StepFailed(f"node {i} moved to term {s.current_term} "
                                 f"(was {term}) while node {nid} was out")
        time.sleep(POLL)


# ---------------------------------------------------------------------------
# Key-value operations


def _kv(run, kind, key, args, via, expect):
    node = _via(run, via)
    op = run.client().run(kind, key, args, via=node,
                          deadline_s=run.op_deadline(), sticky=node is not None)
    if expect is not None:
        want = {"true": True, "false": False, "absent": None}.get(expect, expect)
        if kind == "incr":
            want = int(expect)
        require_ok(op, want)
    else:
        require_ok(op)


@step("put {word:key} {word:value}(?: via {node:via})?")
def put(run, key, value, via=None):
    _kv(run, "put", key, (value,), via, None)


@step("get {word:key}(?: via {node:via})?(?: expect {word:expect})?")
def get(run, key, via=None, expect=None):
    _kv(run, "get", key, (), via, expect)


@step("cas {word:key} {word:old} {word:new}(?: via {node:via})?"
      "(?: expect {word:expect})?")
def cas(run, key, old, new, via=None, expect=None):
    _kv(run, "cas", key, (old, new), via, expect)


@step("incr {word:key} {int:d}(?: via {node:via})?(?: expect {int:expect})?")
def incr(run, key, d, via=None, expect=None):
    _kv(run, "incr", key, (int(d),), via, expect)


@step("del {word:key}(?: via {node:via})?")
def delete(run, key, via=None):
    _kv(run, "del", key, (), via, None)


@step("{word:kind} {word:key} {word:value} via {node:via} expect no answer "
      "within {dur:d}")
def no_answer(run, kind, key, value, via, d):
    """A write that must not be acknowledged (no quorum, a deposed leader):
    it may fail or time out, never succeed, within d."""
    if kind not in ("put", "add"):
        raise StepFailed(f"'{kind}': only put and add here")
    nid = run.node(via)
    c = run.new_client()
    args = (int(key), int(value)) if kind == "add" else (value,)
    op = c.run(kind, None if kind == "add" else key, args, via=nid,
               deadline_s=run.dur(d), sticky=True)
    if op.outcome == "ok":
        raise StepFailed(f"{op.call_text()} via node {nid} was acknowledged: "
                         f"{op.value}\n{run.describe()}")


# ---------------------------------------------------------------------------
# Checks during the run (the final phase runs all of them again)


def _verdict(run, result):
    run.figures.setdefault("checks", []).append(str(result))
    if result.verdict == checkers.VIOLATION:
        raise StepFailed(str(result))
    run.note(str(result).splitlines()[0])


@step("check linearizable")
def check_lin(run):
    _verdict(run, checkers.check_linearizable(run.history, initial_total=0))


@step("check election safety")
def check_elect(run):
    _verdict(run, checkers.check_election_safety(run.history))


@step("check applied once")
def check_once(run):
    op = run.client().run("total", deadline_s=run.op_deadline())
    require_ok(op)
    _verdict(run, checkers.check_no_duplicates(run.history, op.value))


@step("check no lost writes")
def check_lost(run):
    op = run.client().run("total", deadline_s=run.op_deadline())
    require_ok(op)
    _verdict(run, checkers.check_no_lost_writes(run.history,
                                                final_total=op.value))


# ---------------------------------------------------------------------------
# Network faults (craft-proxy)


def _net(run):
    if run.net is None:
        raise StepFailed("this step needs craft-proxy on the peer links (the "
                         "run has --no-proxy, or no cluster yet)")
    return run.net


def _ms(run, text):
    return int(round(run.dur(text) * 1000))


@step("isolate {node:n}")
def isolate(run, n):
    nid = run.node(n)
    _leader_fault(run, nid)
    rest = [i for i in run.cluster.nodes if i != nid]
    _net(run).partition(f"components {nid}|{','.join(map(str, rest))}")
    run.note(f"isolated node {nid}")


@step("isolate {nodes:ns}")
def isolate_many(run, ns):
    ids = run.nodes(ns)
    lid = run.leader_now_quiet()
    if lid in ids:
        run.failed_leader = lid
    rest = [i for i in run.cluster.nodes if i not in ids]
    groups = [str(i) for i in ids] + ([",".join(map(str, rest))] if rest else [])
    _net(run).partition("components " + "|".join(groups))
    run.note(f"isolated nodes {ids} from each other and the rest")


@step("partition {nodes:a} | {nodes:b}")
def partition(run, a, b):
    ga = run.nodes(a)
    gb = run.nodes(b, exclude=ga)
    lid = run.leader_now_quiet()
    if lid is not None:
        side = ga if lid in ga else gb
        if len(side) <= len(set(ga) | set(gb)) // 2:
            run.failed_leader = lid
    _net(run).partition(f"components {','.join(map(str, ga))}|"
                        f"{','.join(map(str, gb))}")
    run.note(f"partition {ga} | {gb}")


@step("partition in a majorities ring")
def ring(run):
    _net(run).partition("majorities-ring " +
                        ",".join(map(str, sorted(run.cluster.nodes))))
    run.note("partition: majorities ring")


@step("partition as a bridge")
def bridge(run):
    _net(run).partition("bridge " + ",".join(map(str, sorted(run.cluster.nodes))))
    run.note("partition: bridge")


@step("cut {nodes:a} -> {nodes:b}")
def cut(run, a, b):
    ga, gb = run.nodes(a), run.nodes(b)
    _net(run).partition(f"one-way {','.join(map(str, ga))}>"
                        f"{','.join(map(str, gb))}")
    run.note(f"cut {ga} -> {gb}")


@step("heal")
def heal(run):
    _net(run).heal()
    run.note("healed")


@step("drop {pct:p} of {either:what=requests|replies}(?: on {word:method})?")
def drop(run, p, what, method=None):
    kind = "DROP_REQUEST" if what == "requests" else "DROP_RESPONSE"
    _net(run).fault(kind, probability=float(p) / 100, method=method or "")
    run.note(f"drop {p}% of {what}" + (f" on {method}" if method else ""))


@step("delay {either:what=requests|replies} {int:lo}-{int:hi}ms")
def delay(run, what, lo, hi):
    kind = "DELAY_REQUEST" if what == "requests" else "DELAY_RESPONSE"
    lo, hi = int(lo), int(hi)
    _net(run).fault(kind, delay_ms=lo, jitter_ms=max(0, hi - lo))
    run.note(f"delay {what} {lo}-{hi} ms")


@step("duplicate {pct:p} of requests")
def duplicate(run, p):
    _net(run).fault("DUPLICATE", probability=float(p) / 100)
    run.note(f"duplicate {p}% of requests")


@step("slow {node:n} by {dur:d}")
def slow(run, n, d):
    nid = run.node(n)
    net = _net(run)
    ms = _ms(run, d)
    net.fault("DELAY_REQUEST", delay_ms=ms, selectors=net.links_of(nid))
    net.fault("DELAY_RESPONSE", delay_ms=ms, selectors=net.links_of(nid))
    run.note(f"slow node {nid} by {ms} ms each way")


@step("blackhole {node:n}")
def blackhole(run, n):
    nid = run.node(n)
    _leader_fault(run, nid)
    net = _net(run)
    net.fault("BLACKHOLE", selectors=[f"{i}-{nid}" for i in net.ids if i != nid])
    run.note(f"blackhole node {nid}")


@step("drop {pct:p} of client replies")
def client_drop(run, p):
    from .proxy import CLIENTS
    _net(run).fault("DROP_RESPONSE", probability=float(p) / 100,
                    selectors=[f"{CLIENTS}-*"])
    run.note(f"drop {p}% of client replies")


@step("clear faults")
def clear_faults(run):
    _net(run).clear()
    run.note("every fault cleared")


# ---------------------------------------------------------------------------
# Operations in flight, randomized rounds


@step("send add {int:a} {int:b} via {node:via} as {var:v}")
def send_add(run, a, b, via, v):
    """An add that runs on its own thread; `expect $v ...` looks at it."""
    nid = run.node(via)
    c = run.new_client()
    box = {}

    def go():
        box["op"] = c.run("add", None, (int(a), int(b)), via=nid,
                          deadline_s=run.op_deadline(), sticky=True)
    t = threading.Thread(target=go, name=f"send-{v}", daemon=True)
    t.start()
    run.vars[v] = (t, box, time.monotonic())


@step("expect {var:v} is acknowledged within {dur:d}")
def sent_acked(run, v, d):
    t, box, _ = run.vars[v]
    t.join(run.dur(d))
    op = box.get("op")
    if op is None:
        raise StepFailed(f"{v} got no answer within {run.dur(d):.1f} s")
    require_ok(op)


@step("send {int:n} adds via {node:via} without waiting")
def send_many(run, n, via):
    """n adds sent at once to one node (each its own request), answered or
    not in the background: a leader cut off from the majority appends
    them to its log but can never commit them."""
    nid = run.node(via)
    for _ in range(int(n)):
        c = run.new_client()
        stop = threading.Event()
        t = threading.Thread(
            target=lambda c=c: c.run("add", None, (run.next_addend(), 0),
                                     via=nid, deadline_s=max(2.0, 4 * run.et),
                                     sticky=True),
            name=f"send-{c.number}", daemon=True)
        t.start()
        run.background.append((t, stop))


@step("expect {node:n} steps down within {dur:d}")
def steps_down(run, n, d):
    nid = run.node(n)

    def down():
        st = run.statuses([run.cluster[nid]])[nid]
        return not isinstance(st, str) and st.state != "LEADER"
    run.wait(down, run.dur(d), f"node {nid} no longer leader")


@step("start node {int:k} joining via {node:via} without waiting")
def start_joining_nowait(run, k, via):
    k, via = int(k), run.node(via)
    run.cluster.add_node(via, node_id=k)
    run.note(f"started node {k} joining via node {via}")


@step("partition into random halves")
def random_halves(run):
    ids = sorted(n.id for n in run.members())
    run.rng.shuffle(ids)
    half = len(ids) // 2
    a, b = sorted(ids[:half]), sorted(ids[half:])
    partition(run, ",".join(map(str, a)), ",".join(map(str, b)))


@step("sleep up to {dur:d}")
def sleep_up_to(run, d):
    time.sleep(run.rng.uniform(0, run.dur(d)))


@step("hold calls to {node:n}")
def hold(run, n):
    nid = run.node(n)
    net = _net(run)
    net.fault("HOLD", selectors=[f"{i}-{nid}" for i in net.ids if i != nid])
    run.note(f"hold calls to node {nid}")


@step("release calls to {node:n}")
def release(run, n):
    nid = run.node(n)
    net = _net(run)
    for i in net.ids:
        if i != nid:
            net.release(f"{i}-{nid}")
    run.note(f"released calls to node {nid}")


@step("drop replies from {node:n}")
def drop_replies_from(run, n):
    nid = run.node(n)
    net = _net(run)
    net.fault("DROP_RESPONSE",
              selectors=[f"{i}-{nid}" for i in net.ids if i != nid])
    run.note(f"drop every reply of node {nid}")


def _claimed_leader(run):
    """Any member that says it leads (the highest term), agreed or not."""
    sts = run.statuses()
    claims = [(s.current_term, i) for i, s in sts.items()
              if not isinstance(s, str) and s.state == "LEADER"]
    return max(claims)[1] if claims else None


@step("do a figure 8 round")
def figure8_round(run):
    """Raft §5.4.2's figure 8, as the MIT lab tests it: a write to whoever
    leads, a short random pause, that leader crashed, and a crashed node
    restarted whenever fewer than a majority run."""
    lid = _claimed_leader(run)
    if lid is not None:
        send_many(run, "1", f"node {lid}")
    time.sleep(run.rng.uniform(0, 0.3 * run.et) if run.rng.random() < 0.9
               else run.rng.uniform(0, 1.5 * run.et))
    if lid is not None and run.cluster[lid].running():
        run.cluster[lid].kill()
        run.note(f"figure 8: killed leader node {lid}")
    members = [n for n in run.cluster.nodes.values() if not n.removed]
    up = [n for n in members if n.running()]
    if len(up) <= len(members) // 2:
        down = [n for n in members if not n.running()]
        back = run.rng.choice(down)
        back.start()
        run.note(f"figure 8: restarted node {back.id}")


@step("do a churn round")
def churn_round(run):
    """One random event of the MIT churn test, then 0.7 ET: cut a node off,
    heal, crash one, or restart one."""
    members = [n for n in run.cluster.nodes.values() if not n.removed]
    up = [n for n in members if n.running()]
    r = run.rng.random()
    if r < 0.25 and run.net is not None:
        victim = run.rng.choice(members)
        isolate(run, f"node {victim.id}")
    elif r < 0.5 and run.net is not None:
        run.net.heal()
        run.note("churn: healed")
    elif r < 0.75 and len(up) > len(members) // 2 + 0:
        victim = run.rng.choice(up)
        victim.kill()
        run.note(f"churn: killed node {victim.id}")
    else:
        down = [n for n in members if not n.running()]
        if down:
            back = run.rng.choice(down)
            back.start()
            run.note(f"churn: restarted node {back.id}")
    time.sleep(0.7 * run.et)


@step("expect {node:n} installed a snapshot")
def installed_snapshot(run, n):
    nid = run.node(n)
    text = run.cluster[nid].log_text()
    if "evt=snapshot_installed" not in text:
        raise StepFailed(f"node {nid} logged no snapshot_installed "
                         f"({run.cluster[nid].log_path})")


# ---------------------------------------------------------------------------
# Efficiency, from the proxy's counters


def _peer_calls(run):
    """(calls, bytes both ways) over every peer link so far."""
    from .proxy import CLIENTS
    calls = nbytes = 0
    for c in _net(run).counters().values():
        if c.link.startswith(f"{CLIENTS}-"):
            continue
        calls += c.calls
        nbytes += c.request_bytes + c.response_bytes
    return calls, nbytes


@step("expect at most {int:k} peer calls per second while idle for {dur:d}")
def idle_traffic(run, k, d):
    run.leader()
    c0, _ = _peer_calls(run)
    secs = run.dur(d)
    time.sleep(secs)
    c1, _ = _peer_calls(run)
    rate = (c1 - c0) / secs
    run.figures["idle_calls_per_s"] = round(rate, 1)
    run.note(f"idle: {rate:.1f} peer calls/s")
    if rate > int(k):
        raise StepFailed(f"{rate:.1f} peer calls/s while idle (at most {k})")


@step("expect at most {int:k} peer calls and {int:nb} bytes per add over "
      "{int:n} adds")
def per_op_traffic(run, k, nb, n):
    c0, b0 = _peer_calls(run)
    t0 = time.monotonic()
    n_adds(run, n)
    elapsed = time.monotonic() - t0
    c1, b1 = _peer_calls(run)
    # Heartbeats would have gone out anyway; count what the adds added.
    idle = run.figures.get("idle_calls_per_s", 0) * elapsed
    calls = max(0.0, (c1 - c0) - idle) / int(n)
    nbytes = (b1 - b0) / int(n)
    run.figures["calls_per_add"] = round(calls, 2)
    run.figures["bytes_per_add"] = round(nbytes, 1)
    run.note(f"{calls:.2f} peer calls and {nbytes:.0f} bytes per add")
    if calls > int(k) or nbytes > int(nb):
        raise StepFailed(f"{calls:.2f} peer calls and {nbytes:.0f} bytes per "
                         f"add (at most {k} and {nb})")


# ---------------------------------------------------------------------------
# WIRE-01: the harness plays a peer


@step("stop every node but {node:n}")
def stop_others(run, n):
    nid = run.node(n)
    for node in run.cluster.running():
        if node.id != nid:
            node.terminate(deadline=max(10.0, 2 * run.et))
    run.note(f"stopped every node but node {nid}")


def _peer_call(run, nid, method, req):
    return getattr(run.cluster[nid].stub(), method)(req, timeout=5)


def _expect_code(run, nid, method, req, code, what):
    try:
        _peer_call(run, nid, method, req)
    except grpc.RpcError as e:
        if e.code() != code:
            raise StepFailed(f"{what}: {e.code().name} {e.details()}, "
                             f"expected {code.name}")
        if not e.details():
            raise StepFailed(f"{what}: {code.name} without a message")
        return
    raise StepFailed(f"{what}: accepted, expected {code.name}")


@step("play a peer against {node:n}")
def play_peer(run, n):
    """Raft Figure 2's receiver rules, by hand, against a node that has no
    leader (the others are stopped and its lease has run out): the harness
    plays node ids the node knows as its peers."""
    pb = run.pb
    nid = run.node(n)
    peers = sorted(i for i in run.cluster.nodes if i != nid)
    a, b = peers[0], peers[1]
    time.sleep(2 * run.et)  # the leader lease (§4.2.3) runs out
    st = run.statuses([run.cluster[nid]])[nid]
    term, last, cid = st.current_term, st.last_log_index, st.cluster_id
    last_term = term  # at least: no entry is newer than the current term

    def vote(t, cand, lli, llt, cluster=cid):
        return _peer_call(run, nid, "RequestVote", pb.RequestVoteRequest(
            term=t, candidate_id=cand, last_log_index=lli, last_log_term=llt,
            cluster_id=cluster))

    def append(t, leader, prev, prev_term, cluster=cid):
        return _peer_call(run, nid, "AppendEntries", pb.AppendEntriesRequest(
            term=t, leader_id=leader, prev_log_index=prev,
            prev_log_term=prev_term, leader_commit=0, cluster_id=cluster))

    # An append from an older term is refused, with the current term.
    r = append(term - 1, a, 0, 0)
    if r.success or r.term != term:
        raise StepFailed(f"stale append (term {term - 1}) answered "
                         f"success={r.success} term={r.term}; the node is in "
                         f"term {term}")
    # A candidate with a log at least as up to date gets the vote.
    r = vote(term + 1, a, last + 10, last_term + 1)
    if not r.vote_granted:
        raise StepFailed(f"node {a} asked for a vote in term {term + 1} with "
                         f"a longer log and was refused (term {r.term})")
    # One vote per term.
    r = vote(term + 1, b, last + 10, last_term + 1)
    if r.vote_granted:
        raise StepFailed(f"node {nid} voted twice in term {term + 1} (for "
                         f"{a} and {b})")
    # A candidate whose log is less up to date is refused (§5.4.1).
    r = vote(term + 2, b, 0, 0)
    if r.vote_granted:
        raise StepFailed(f"node {nid} voted in term {term + 2} for an empty "
                         f"log although its own has {last} entries")
    # A log that does not match at prev_log_index is refused (§5.3).
    r = append(term + 2, b, last + 100, term + 2)
    if r.success:
        raise StepFailed(f"append with prev_log_index {last + 100} (beyond "
                         f"its log) accepted")
    # Bad numbers: an answer with a message, never a crash.
    inv = grpc.StatusCode.INVALID_ARGUMENT
    _expect_code(run, nid, "RequestVote", pb.RequestVoteRequest(
        term=-1, candidate_id=a, cluster_id=cid), inv, "RequestVote term -1")
    _expect_code(run, nid, "RequestVote", pb.RequestVoteRequest(
        term=term + 3, candidate_id=0, cluster_id=cid), inv,
        "RequestVote from candidate 0")
    _expect_code(run, nid, "AppendEntries", pb.AppendEntriesRequest(
        term=term + 3, leader_id=a, prev_log_index=-5, cluster_id=cid), inv,
        "AppendEntries with prev_log_index -5")
    _expect_code(run, nid, "RequestVote", pb.RequestVoteRequest(
        term=term + 3, candidate_id=a, cluster_id=cid ^ 0x5a5a),
        grpc.StatusCode.FAILED_PRECONDITION, "RequestVote of another cluster")
    run.cluster.check_alive()
    run.note(f"node {nid} followed the vote and append rules")


@step("send the leader an append of a higher term, and expect it steps down")
def higher_term(run):
    """§5.1: a server that sees a higher term becomes a follower."""
    pb = run.pb
    lid = run.leader()
    st = run.statuses([run.cluster[lid]])[lid]
    other = next(i for i in st.config.nodes if i != lid)
    run.failed_leader = lid
    r = _peer_call(run, lid, "AppendEntries", pb.AppendEntriesRequest(
        term=st.current_term + 5, leader_id=other,
        prev_log_index=st.last_log_index + 50, prev_log_term=st.current_term + 5,
        cluster_id=st.cluster_id))
    if r.term < st.current_term + 5:
        raise StepFailed(f"answered term {r.term}, below the append's "
                         f"{st.current_term + 5}")
    after = run.statuses([run.cluster[lid]])[lid]
    if after.state == "LEADER" and after.current_term <= st.current_term:
        raise StepFailed(f"node {lid} still leads term {after.current_term}")


# Steps that inject a fault: the plugin records when each began, for the
# report's election times and unavailability windows.
for _f in (kill, stop, pause, kill_all, wipe, tear, isolate, isolate_many,
           partition, ring, bridge, cut, drop, delay, duplicate, slow,
           blackhole, client_drop, random_halves, hold, drop_replies_from,
           figure8_round, churn_round):
    _f.is_fault = True
