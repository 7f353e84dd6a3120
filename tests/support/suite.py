"""The whole suite for end-to-end and crash tests.

- `InProcessSuite`: all six services as nameko containers in this process
  (fast; for flow tests).
- `ProcessSuite`: all six as real `python -m shared.run` processes, each
  killable with SIGKILL and restartable (for crash tests)."""
from __future__ import annotations

import dataclasses
import importlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

from shared.config import Settings
from tools import devstack

SERVICES = ["catalog", "member", "marketing", "order", "fulfillment", "analytics"]
ROOT = Path(__file__).resolve().parents[2]


def service_class(name: str):
    module = importlib.import_module(f"services.{name}.service")
    return next(v for v in vars(module).values() if isinstance(v, type) and getattr(v, "name", None) == name)


class InProcessSuite:
    def __init__(self, mongo_uri: str, amqp_uri: str, extra: dict[str, dict] | None = None):
        self.mongo_uri = mongo_uri
        self.amqp_uri = amqp_uri
        self.extra = extra or {}
        self.prefix = f"e2e{uuid.uuid4().hex[:6]}"
        self.containers = {}
        self.settings = {}

    def settings_for(self, name: str) -> Settings:
        return dataclasses.replace(
            Settings.from_env(name), mongo_uri=self.mongo_uri, amqp_uri=self.amqp_uri,
            database=f"{self.prefix}_{name}", http_port=devstack.free_port(),
            outbox_sweep_interval=0.5, outbox_sweep_grace=1.0, transient_backoff=0.1,
            extra=self.extra.get(name, {}))

    def start(self, names=SERVICES):
        from nameko.containers import ServiceContainer

        for name in names:
            settings = self.settings.setdefault(name, self.settings_for(name))
            container = ServiceContainer(service_class(name), settings.nameko_config())
            container.start()
            self.containers[name] = container
        return self

    def db(self, name: str):
        from tools.testing import store_of

        return store_of(self.containers[name])

    def http(self, name: str) -> str:
        return f"http://127.0.0.1:{self.settings[name].http_port}"

    def stop(self):
        for container in reversed(list(self.containers.values())):
            try:
                container.stop()
            except Exception:
                container.kill()
        self.containers.clear()


class ProcessSuite:
    def __init__(self, mongo_uri: str, amqp_uri: str, workdir: Path, env: dict[str, str] | None = None):
        self.mongo_uri = mongo_uri
        self.amqp_uri = amqp_uri
        self.workdir = Path(workdir)
        self.prefix = f"chaos{uuid.uuid4().hex[:6]}"
        self.ports = {name: devstack.free_port() for name in SERVICES}
        self.env = env or {}
        self.procs: dict[str, subprocess.Popen] = {}

    def database(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def _env(self, name: str) -> dict:
        env = dict(os.environ, PYTHONPATH=str(ROOT), MONGO_URI=self.mongo_uri, AMQP_URI=self.amqp_uri,
                   OUTBOX_SWEEP_INTERVAL="0.5", OUTBOX_SWEEP_GRACE="1", TRANSIENT_BACKOFF="0.2",
                   PYTHONUNBUFFERED="1")
        env[f"{name.upper()}_DB"] = self.database(name)
        env[f"{name.upper()}_HTTP_PORT"] = str(self.ports[name])
        env.update(self.env)
        return env

    def start(self, name: str) -> None:
        log = open(self.workdir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "shared.run", name], cwd=ROOT,
                                            env=self._env(name), stdout=log, stderr=subprocess.STDOUT)

    def start_all(self, timeout: float = 90) -> None:
        for name in SERVICES:
            self.start(name)
        for name in SERVICES:
            self.wait_ready(name, timeout)

    def ready(self, name: str) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.ports[name]}/health/ready", timeout=2).ok
        except requests.RequestException:
            return False

    def wait_ready(self, name: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready(name):
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited: {self.log(name)[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not ready: {self.log(name)[-2000:]}")
            time.sleep(0.2)

    def kill(self, name: str) -> None:
        """SIGKILL: no graceful shutdown, unacked work returns to the queues."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def restart(self, name: str, timeout: float = 90) -> None:
        self.start(name)
        self.wait_ready(name, timeout)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
