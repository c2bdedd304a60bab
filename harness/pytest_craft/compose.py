"""--cluster compose: the scenarios against the running docker compose
cluster of docker-compose.yml, from inside the tester container.

What the tester has there (docker-compose.yml):
  - the network namespace of the proxy service (network_mode:
    service:proxy): craft-proxy's control API on 127.0.0.1:7000, and the
    nodes by name, node<ID>:50051;
  - the Docker Engine API on /var/run/docker.sock (mounted): process faults
    are container kill (SIGKILL), stop (SIGTERM, then its exit status),
    pause / unpause (the cgroup freezer) and start, on the containers that
    carry the compose labels of this project (com.docker.compose.project,
    com.docker.compose.service), which compose v1 and v2 both set;
  - the data volume of every node, at /craft-data/node<ID>.

Every scenario starts from a clean cluster: every node container is
killed, its data wiped, and node1..node5 start again, so they elect a
leader from nothing as a local run does. A scenario of N < 5 nodes then
removes nodes N+1..5 from the configuration (RemoveNode through the leader)
and stops them. `start N nodes` returns once every node follows one leader:
containers take seconds to start, so the first election happens during it. A node that joins (`start node K joining via NODE`) runs in
a container the harness creates from the nodes' image on the cluster's
network, with the alias node<K> and --join: compose's own containers have
a fixed command. Those containers carry the label craft.harness and are
removed at the next reset and at the end of the session, which leaves
node1..node5 running on fresh data, as `docker compose up` did.

Scenarios that need what the compose cluster does not have (more than 5
nodes to start with, craftd flags, the slow timing profile) are skipped,
with the reason: see unsupported().

Everything here talks to dockerd with the standard library: HTTP/1.1 over
the unix socket.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import grpc

from . import cluster as cl
from . import craft_proxy as cp
from .proxy import CLIENTS, ProxyNet

DOCKER_SOCK = "/var/run/docker.sock"
DATA_ROOT = Path("/craft-data")   # node<ID>/ is the volume of node ID
CONTROL = "127.0.0.1:7000"        # craft-proxy's control API
PORT = 50051
NODES = 5                         # node1..node5 start with the cluster
IDS = 6                           # docker/proxy-links.conf: nodes 1..6
LABEL = "craft.harness"           # containers the harness made
P_LABEL = "com.docker.compose.project"
S_LABEL = "com.docker.compose.service"


class DockerError(cl.HarnessError):
    """dockerd refused or failed a request; the message says which."""


# ---------------------------------------------------------------------------
# The Docker Engine API


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


class Docker:
    """The few calls of the Engine API the harness needs. One connection per
    request: they are cheap on a unix socket, and threads never share one."""

    def __init__(self, path=DOCKER_SOCK):
        self.path = path

    def request(self, method, path, query=None, body=None, timeout=30.0,
                ok=(200, 201, 204, 304)):
        """(status, body bytes); DockerError unless the status is in ok."""
        if query:
            path += "?" + urllib.parse.urlencode(query)
        conn = _UnixConnection(self.path, timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data else {}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            out = resp.read()
        except OSError as e:
            raise DockerError(f"dockerd ({self.path}): {method} {path}: "
                              f"{e}") from None
        finally:
            conn.close()
        if resp.status not in ok:
            msg = out.decode(errors="replace").strip()
            raise DockerError(f"dockerd: {method} {path}: {resp.status} {msg}")
        return resp.status, out

    def json(self, method, path, query=None, body=None, timeout=30.0):
        _, out = self.request(method, path, query, body, timeout)
        return json.loads(out) if out else None

    def containers(self, labels):
        """Every container (running or not) with all these labels
        ("key" or "key=value")."""
        f = json.dumps({"label": list(labels)})
        return self.json("GET", "/containers/json", {"all": "1", "filters": f})

    def inspect(self, cid):
        return self.json("GET", f"/containers/{cid}/json")

    def signal(self, cid, sig):
        """Sends sig; False if the container was not running."""
        st, _ = self.request("POST", f"/containers/{cid}/kill",
                             {"signal": sig}, ok=(204, 409))
        return st == 204

    def wait(self, cid, timeout):
        """The exit status once the container stopped; None if it still
        ran after timeout seconds."""
        try:
            r = self.json("POST", f"/containers/{cid}/wait",
                          {"condition": "not-running"}, timeout=timeout)
        except DockerError as e:
            if "timed out" in str(e):
                return None
            raise
        return r.get("StatusCode")

    def start(self, cid):
        self.request("POST", f"/containers/{cid}/start")

    def pause(self, cid):
        self.request("POST", f"/containers/{cid}/pause")

    def unpause(self, cid):
        """False if it was not paused (dockerd answers that with 409 or
        500, depending on its version)."""
        st, out = self.request("POST", f"/containers/{cid}/unpause",
                               ok=(204, 409, 500))
        if st == 500 and b"not paused" not in out:
            raise DockerError(f"dockerd: unpause {cid[:12]}: {out.decode()}")
        return st == 204

    def remove(self, cid):
        """Removes a container, running or not, with its anonymous volumes."""
        self.request("DELETE", f"/containers/{cid}",
                     {"force": "1", "v": "1"}, ok=(204, 404))

    def create(self, name, body):
        return self.json("POST", "/containers/create", {"name": name},
                         body)["Id"]

    def logs(self, cid, since=None):
        """(time, line) of the container's stdout and stderr since the unix
        time `since` (exactly: the API's own filter is by whole seconds)."""
        q = {"stdout": "1", "stderr": "1", "timestamps": "1"}
        if since is not None:
            q["since"] = str(int(since))
        st, raw = self.request("GET", f"/containers/{cid}/logs", q,
                               ok=(200, 404))
        if st == 404:
            return []
        out = []
        for line in _demux(raw).splitlines():
            stamp, _, text = line.partition(" ")
            t = _unix_time(stamp)
            if since is None or t is None or t >= since:
                out.append((t, text))
        return out


def _demux(raw):
    """The text of a log stream without a TTY: frames of an 8-byte header
    (stream, 0, 0, 0, size as 4 bytes big-endian) and the payload."""
    if raw[:1] not in (b"\x00", b"\x01", b"\x02") or raw[1:4] != b"\0\0\0":
        return raw.decode(errors="replace")
    parts = []
    pos = 0
    while pos + 8 <= len(raw):
        size = int.from_bytes(raw[pos + 4:pos + 8], "big")
        parts.append(raw[pos + 8:pos + 8 + size])
        pos += 8 + size
    return b"".join(parts).decode(errors="replace")


def _unix_time(stamp):
    """2024-05-01T10:00:00.123456789Z -> unix seconds (microseconds kept)."""
    try:
        day, _, frac = stamp.rstrip("Z").partition(".")
        t = datetime.strptime(day, "%Y-%m-%dT%H:%M:%S")
        base = (t - datetime(1970, 1, 1)).total_seconds()
        return base + (float("0." + frac) if frac else 0.0)
    except ValueError:
        return None


# ---------------------------------------------------------------------------
# The compose project


def unsupported(scenario, timing, node_cmd):
    """Why the scenario cannot run on the compose cluster, or None."""
    from . import run as runmod
    if timing != "fast":
        return (f"--timing {timing}: the compose nodes run craftd's default "
                f"timing; run it with --cluster local")
    if node_cmd:
        return "--node-cmd starts processes: run it with --cluster local"

    def walk(steps):
        for st in steps:
            if st.block:
                yield from walk(st.block)
            else:
                yield st
    for st in walk(scenario.steps):
        if st.func is runmod.start_nodes:
            n = int(st.args["n"])
            if n > NODES:
                return (f"starts {n} nodes; the compose cluster has {NODES} "
                        f"(line {st.lineno})")
            if st.args.get("every"):
                return (f"needs craftd --snapshot-every; the compose nodes "
                        f"run with the defaults (line {st.lineno})")
        if st.func in (runmod.start_joining, runmod.start_joining_nowait):
            k = int(st.args["k"])
            if k > IDS:
                return (f"node {k} joins; craft-proxy's compose links serve "
                        f"nodes 1-{IDS} (line {st.lineno})")
    return None


class ComposeEnv:
    """The compose project the tester belongs to, found once a session."""

    def __init__(self, project=None, docker=None, data_root=DATA_ROOT):
        self.docker = docker or Docker()
        if not os.path.exists(self.docker.path):
            raise cl.HarnessError(
                f"--cluster compose: no Docker socket at {self.docker.path}; "
                f"run the suite with `docker-compose run --rm tester`, which "
                f"mounts it")
        self.data_root = Path(data_root)
        self.project = project or self._find_project()
        node1 = self.compose_container(1)
        if node1 is None:
            raise cl.HarnessError(
                f"compose project {self.project!r} has no node1 container: "
                f"start the cluster with `docker-compose up -d`")
        info = self.docker.inspect(node1)
        self.image = info["Image"]
        nets = list(info["NetworkSettings"]["Networks"])
        if not nets:
            raise cl.HarnessError("node1 is on no network")
        self.network = nets[0]
        # docker-compose.yml gives node K the fixed address <subnet>.<10+K>.
        ipam = info["NetworkSettings"]["Networks"][self.network].get(
            "IPAMConfig") or {}
        self.node1_ip = ipam.get("IPv4Address") or None

    def _find_project(self):
        """Ours: the label of this container (its hostname is its id), or
        the one project that has a proxy and a node1."""
        env = os.environ.get("COMPOSE_PROJECT_NAME")
        if env:
            return env
        try:
            own = self.docker.inspect(socket.gethostname())
            p = own["Config"]["Labels"].get(P_LABEL)
            if p:
                return p
        except DockerError:
            pass
        found = {c["Labels"].get(P_LABEL) for c in
                 self.docker.containers([P_LABEL, f"{S_LABEL}=proxy"])}
        found.discard(None)
        if len(found) != 1:
            raise cl.HarnessError(
                f"cannot tell which compose project to test (projects with a "
                f"proxy: {sorted(found) or 'none'}); set COMPOSE_PROJECT_NAME")
        return found.pop()

    def compose_container(self, i):
        """The id of compose's container of service node<i>, or None."""
        cs = [c for c in self.docker.containers(
            [f"{P_LABEL}={self.project}", f"{S_LABEL}=node{i}"])
            if c["Labels"].get("com.docker.compose.oneoff") != "True"]
        return cs[0]["Id"] if cs else None

    def harness_containers(self):
        return [c["Id"] for c in
                self.docker.containers([f"{LABEL}={self.project}"])]

    def wipe(self, i):
        """Removes the data of compose's node<i> (not running)."""
        vol = self.data_root / f"node{i}"
        if not vol.is_dir():
            raise cl.HarnessError(
                f"the volume of node{i} is not mounted at {vol} (see the "
                f"tester service in docker-compose.yml)")
        shutil.rmtree(vol / "data", ignore_errors=True)

    def halt(self, cid):
        """Unpaused and killed; returns once it is not running."""
        self.docker.unpause(cid)
        if self.docker.signal(cid, "SIGKILL"):
            self.docker.wait(cid, 20)

    def reset(self):
        """Every node container gone or stopped, every volume wiped. Returns
        {id: compose container} of nodes 1..IDS that compose has."""
        for cid in self.harness_containers():
            self.docker.remove(cid)
        have = {i: self.compose_container(i) for i in range(1, IDS + 1)}
        with ThreadPoolExecutor(max_workers=IDS) as ex:
            list(ex.map(self.halt, [c for c in have.values() if c]))
        for i, cid in have.items():
            if cid:
                self.wipe(i)
        return {i: c for i, c in have.items() if c}

    def node_ip(self, k):
        """The fixed address of node k on the cluster's network (that of
        compose's node<k>, else by docker-compose.yml's rule), or None."""
        cid = self.compose_container(k)
        if cid:
            nets = self.docker.inspect(cid)["NetworkSettings"]["Networks"]
            ipam = (nets.get(self.network) or {}).get("IPAMConfig") or {}
            if ipam.get("IPv4Address"):
                return ipam["IPv4Address"]
        if self.node1_ip and self.node1_ip.endswith(".11"):
            return self.node1_ip.rsplit(".", 1)[0] + f".{10 + k}"
        return None

    def create_node(self, k, join, routes):
        """A container of node k that joins through `join`: the nodes'
        image, on the cluster's network as node<k>."""
        name = f"{self.project}-harness-node{k}"
        self.docker.remove(name)
        cmd = ["--listen", f"0.0.0.0:{PORT}", "--advertise",
               f"node{k}:{PORT}"]
        for j, addr in routes:
            cmd += ["--route", f"{j}={addr}"]
        endpoint = {"Aliases": [f"node{k}"]}
        ip = self.node_ip(k)
        if ip:
            endpoint["IPAMConfig"] = {"IPv4Address": ip}
        body = {
            "Image": self.image,
            "Env": [f"NODE_ID={k}", f"JOIN={join}"],
            "Cmd": cmd,
            "Labels": {LABEL: self.project},
            "HostConfig": {"NetworkMode": self.network},
            "NetworkingConfig": {"EndpointsConfig": {self.network: endpoint}},
        }
        return self.docker.create(name, body)

    def restore(self):
        """What `docker-compose up -d` left: node1..node5 on fresh data."""
        have = self.reset()
        for i in range(1, NODES + 1):
            if i in have:
                self.docker.start(have[i])


# ---------------------------------------------------------------------------
# Nodes and the cluster


class ComposeNode(cl.Node):
    """A node in a container: compose's node<ID>, or one the harness made."""

    STATE_TTL = 0.2  # seconds a container state is trusted

    def __init__(self, cluster, node_id, container=None):
        super().__init__(cluster, node_id, PORT)
        self.address = f"node{node_id}:{PORT}"
        self.data_dir = cluster.env.data_root / f"node{node_id}" / "data"
        self.log_path = f"docker logs of node{node_id}"
        self.container = container
        self.made = False        # the harness created the container
        self.containers = []     # every container this node ran in
        if container:
            self.containers.append(container)
        self._state = None
        self._state_t = 0.0

    def _note(self, text):
        """The run's timeline has it; a container's log is its own."""

    @property
    def docker(self):
        return self.cluster.env.docker

    def _fresh(self):
        self._state = None

    def state(self):
        """The container's State (cached for STATE_TTL), or None."""
        if self.container is None:
            return None
        now = time.monotonic()
        if self._state is None or now - self._state_t > self.STATE_TTL:
            try:
                self._state = self.docker.inspect(self.container)["State"]
            except DockerError:
                self._state = {"Running": False, "Paused": False,
                               "ExitCode": None, "Status": "removed"}
            self._state_t = now
        return self._state

    def running(self):
        st = self.state()
        return bool(st and st["Running"])

    def start(self):
        if self.running():
            raise cl.HarnessError(f"node {self.id} is already running")
        if self.container is None:
            if self.join is None:
                raise cl.HarnessError(f"node {self.id} has no container")
            self.container = self.cluster.env.create_node(
                self.id, self.join, self.cluster.routes(self.id))
            self.made = True
            self.containers.append(self.container)
        self.docker.start(self.container)
        self.expected_exit = False
        self._fresh()
        self._close_channel()
        return self

    def kill(self):
        if not self.running():
            raise cl.HarnessError(f"node {self.id} is not running")
        self.expected_exit = True
        self.docker.signal(self.container, "SIGKILL")
        rc = self.docker.wait(self.container, 20)
        self.exits.append(("kill -9", rc))
        self._fresh()
        self._close_channel()

    def terminate(self, deadline=5.0):
        if not self.running():
            raise cl.HarnessError(f"node {self.id} is not running")
        self.expected_exit = True
        self.docker.signal(self.container, "SIGTERM")
        rc = self.docker.wait(self.container, deadline)
        if rc is not None:
            self.exits.append(("SIGTERM", rc))
        self._fresh()
        self._close_channel()
        return rc

    def pause(self):
        if not self.running():
            raise cl.HarnessError(f"node {self.id} is not running")
        self.docker.pause(self.container)
        self._fresh()

    def resume(self):
        if not self.running():
            raise cl.HarnessError(f"node {self.id} is not running")
        self.docker.unpause(self.container)
        self._fresh()

    def wipe(self):
        if self.running():
            raise cl.HarnessError(f"node {self.id} runs: stop it before a wipe")
        if self.made:
            # Its data is in the container's own volume: a new one.
            self.docker.remove(self.container)
            self.container = None
            self.made = False
        else:
            self.cluster.env.wipe(self.id)

    def tear_last_write(self):
        if self.made:
            raise cl.HarnessError(f"node {self.id} runs in a container the "
                                  f"harness made: its data is not mounted")
        return super().tear_last_write()

    def unexpected_exit(self):
        if self.container is None or self.expected_exit:
            return None
        st = self.state()
        if st is None or st["Running"]:
            return None
        return st.get("ExitCode")

    def cleanup(self):
        """The next scenario's reset stops it; only a pause is undone now."""
        if self.container is not None and self.running():
            try:
                self.docker.unpause(self.container)
            except DockerError:
                pass
        self._close_channel()

    def log_text(self):
        parts = []
        for cid in self.containers:
            try:
                lines = self.docker.logs(cid, since=self.cluster.since)
            except DockerError as e:
                lines = [(None, f"(no logs: {e})")]
            parts += [text for _, text in lines]
        return "\n".join(parts) + ("\n" if parts else "")

    def log_tail(self, lines=40):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def describe_state(self):
        st = self.state()
        if st is None:
            return "no container"
        if st.get("Paused"):
            return "paused"
        if st["Running"]:
            return "running"
        return f"{st.get('Status')}, exit status {st.get('ExitCode')}"

    def __repr__(self):
        return f"ComposeNode({self.id}, {self.container and self.container[:12]})"


class ComposeCluster(cl.Cluster):
    """The compose cluster, reset for one scenario of n nodes (n <= 5)."""

    def __init__(self, env, root, n, network):
        self.env = env
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.network = network
        self.node_cmd = None
        self.wrapper = []
        self.extra_args = []
        # Node.tear_last_write runs the craftctl next to craftd.
        self.craftd = Path(shutil.which("craftctl") or
                           "/usr/local/bin/craftctl").parent / "craftd"
        self.capacity = IDS
        self.ports = {i: PORT for i in range(1, IDS + 1)}
        self.n = n
        self.nodes = {}
        self.since = time.time()
        if network is not None:
            network.setup(self.ports)

    def address(self, i):
        return f"node{i}:{PORT}"

    def start(self):
        """Kills and wipes every node, starts node1..node5, and for fewer
        nodes removes the others from the configuration and stops them."""
        self.since = time.time()
        have = self.env.reset()
        missing = [i for i in range(1, NODES + 1) if i not in have]
        if missing:
            raise cl.HarnessError(
                f"compose project {self.env.project!r} has no container for "
                f"node(s) {missing}: `docker-compose up -d` first")
        boot = {i: ComposeNode(self, i, have[i]) for i in range(1, NODES + 1)}
        with ThreadPoolExecutor(max_workers=NODES) as ex:
            list(ex.map(lambda nd: nd.start(), boot.values()))
        self.nodes = boot
        # Containers take seconds to start, and craft-proxy reconnects to a
        # restarted target within its backoff (1 s): the cluster is up once
        # every node follows one leader.
        self.wait_for_leader(15.0)
        if self.n < NODES:
            self._shrink()
        return self

    def _shrink(self):
        """Nodes n+1..5 leave the configuration (one change at a time, each
        through the leader), then stop: a cluster of n voters."""
        pb = cl.pb

        def call(method, req):
            lid = self.leader()
            if lid is None:
                return "no leader"
            r = self.nodes[lid].call(method, req, 5.0)
            if r.status == pb.OP_OK and r.success:
                return lid
            return f"node {lid}: {pb.OpStatus.Name(r.status)} {r.error}"

        def kept_leader():
            """A leader among nodes 1..n; one that is to go hands over to
            node 1 first."""
            lid = self.leader()
            if lid is not None and lid > self.n:
                call("TransferLeadership", pb.TransferRequest(node_id=1))
                return False
            return lid is not None
        cl.wait_until(kept_leader, 15.0, f"a leader among nodes 1-{self.n}")
        for k in range(NODES, self.n, -1):
            cl.wait_until(lambda: isinstance(call(
                "RemoveNode", pb.RemoveRequest(node_id=k)), int), 10.0,
                f"node {k} removed from the configuration of the compose "
                f"cluster")
        for k in range(self.n + 1, NODES + 1):
            node = self.nodes.pop(k)
            node.kill()
            self.env.wipe(k)
        keep = list(self.nodes.values())
        cl.wait_until(lambda: all(
            not isinstance(s, str) and len(s.config.nodes) == self.n
            for s in self.statuses(keep).values()), 10.0,
            f"{self.n} voters in every configuration")
        self.wait_for_leader(10.0)

    def add_node(self, join_via, node_id=None):
        node_id = node_id or max(self.nodes) + 1
        if node_id in self.nodes:
            raise cl.HarnessError(f"node {node_id} exists already")
        if node_id > IDS:
            raise cl.HarnessError(f"node {node_id}: the compose proxy links "
                                  f"serve nodes 1-{IDS}")
        # compose's own container of that id stays stopped
        other = self.env.compose_container(node_id)
        if other:
            self.env.halt(other)
        node = ComposeNode(self, node_id)
        node.join = self.address(join_via)
        self.nodes[node_id] = node
        return node.start()

    def log_tails(self, lines=40):
        parts = []
        for n in self.nodes.values():
            name = n.container[:12] if n.container else "-"
            parts.append(f"==== node {n.id} ({n.address}, container {name}, "
                         f"{n.describe_state()})")
            parts.append(n.log_tail(lines))
        return "\n".join(parts)


class ComposeNet(ProxyNet):
    """The compose cluster's craft-proxy (the proxy service): its peer links
    are fixed (docker/proxy-links.conf); the harness adds a client link per
    node (127.0.0.1, in the network namespace it shares with the proxy)."""

    def __init__(self, stubs_dir, control=CONTROL):
        cp.generate_stubs(stubs_dir)
        self.pb = cp.pb
        self.root = None
        self.proxy = cp.Proxy([], Path(stubs_dir) / "compose-proxy")
        try:
            self.proxy.attach(control)
            self.proxy.links()
        except (grpc.RpcError, cp.ProxyError) as e:
            msg = e.details() if isinstance(e, grpc.RpcError) else str(e)
            raise cl.HarnessError(
                f"craft-proxy's control API at {control}: {msg} (the tester "
                f"shares the proxy service's network: network_mode "
                f"service:proxy)") from None
        self.log_path = None
        self.routes = {}
        self.clients = {}
        self.ids = []
        self._base = {}

    def setup(self, ports):
        self.ids = sorted(ports)
        links = self.proxy.links()
        for j in self.ids:
            for i in self.ids:
                if i == j:
                    continue
                name = f"{i}-{j}"
                if name not in links:
                    raise cl.HarnessError(
                        f"craft-proxy has no link {name} (its --cluster "
                        f"file is docker/proxy-links.conf)")
                self.routes[(i, j)] = f"proxy:70{i}{j}"
            name = f"{CLIENTS}-{j}"
            if name in links:
                self.clients[j] = links[name].listen
            else:
                self.clients[j] = self.proxy.add_link(
                    name, f"node{j}:{PORT}").listen
        self.clear()
        self._base = self.proxy.counters()

    def counters(self):
        """{(link, method): Counters} since setup(): the proxy outlives
        scenarios, its own counts start when it did."""
        out = {}
        for key, c in self.proxy.counters().items():
            base = self._base.get(key)
            if base is not None:
                for f, v in c.ListFields():
                    if isinstance(v, int):
                        setattr(c, f.name, max(0, v - getattr(base, f.name)))
            out[key] = c
        return out

    def log_tail(self, lines=20):
        return "(craft-proxy: docker-compose logs proxy)"

    def close(self):
        """Leaves the proxy running, without faults."""
        try:
            self.clear()
        except grpc.RpcError:
            pass
        self.proxy.stop()
        return None
