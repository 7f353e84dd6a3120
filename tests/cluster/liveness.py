"""The kubelet's part for the broker on one machine: the production liveness
probe of the RabbitMQ pods (deploy/k8s/base/engines/rabbitmq.yaml), read from
the manifest and run against each node of a test cluster with the manifest's
period and failure threshold; a node failing it that many times in a row is
restarted, as the kubelet restarts the container.

The probe fails only on a node left unable to serve after a partition heals:
stranded (its broker runs but its metadata store sees a minority of the cluster
and never re-merges by itself; pause_minority acts only while the cut lasts) or
hung in the boot pause_minority started on the heal (not booted, yet connected
to a majority of its peers)."""
from __future__ import annotations

import subprocess
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import eventlet
import yaml

from tests.chaos.harness import log
from tools import devstack

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base" / "engines" / "rabbitmq.yaml"


@dataclass(frozen=True)
class Probe:
    expression: str  # the Erlang expression the probe's `rabbitmqctl eval` runs
    period: float
    timeout: float
    failure_threshold: int

    @classmethod
    def from_manifest(cls, path: Path = MANIFEST) -> Probe:
        docs = yaml.safe_load_all(path.read_text())
        cluster = next(d for d in docs if d and d["kind"] == "RabbitmqCluster")
        containers = cluster["spec"]["override"]["statefulSet"]["spec"]["template"]["spec"]["containers"]
        probe = next(c for c in containers if c["name"] == "rabbitmq")["livenessProbe"]
        command = probe["exec"]["command"]
        if command[:2] != ["rabbitmqctl", "eval"] or len(command) != 3:
            raise ValueError(f"{path}: the broker's liveness probe is not `rabbitmqctl eval EXPR`: {command}")
        return cls(command[2], probe["periodSeconds"], probe["timeoutSeconds"], probe["failureThreshold"])

    def passes(self, node: devstack.PrivateRabbit) -> tuple[bool, str]:
        """Run the probe on `node`: (passed, what it printed)."""
        try:
            out = node.ctl("eval", self.expression, timeout=self.timeout)
        except subprocess.TimeoutExpired:  # the kubelet counts a timeout as a failure
            return False, f"no answer within {self.timeout:.0f}s"
        except RuntimeError as exc:  # "rabbitmqctl ... failed: <what it said>"
            return False, " ".join(str(exc).split(" failed: ", 1)[-1].split())[:300]
        return True, out.strip()


@dataclass
class Liveness:
    """Probes every running node of `rabbit` in a green thread until stopped."""
    rabbit: devstack.RabbitCluster
    probe: Probe = field(default_factory=Probe.from_manifest)
    restarts: list[str] = field(default_factory=list)

    def __post_init__(self):
        self._failures = {node.nodename: 0 for node in self.rabbit.nodes}
        self._thread = None

    def start(self) -> Liveness:
        self._thread = eventlet.spawn(self._run)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.kill()
            self._thread = None

    def _run(self) -> None:
        while True:
            for node in self.rabbit.nodes:
                with suppress(Exception):  # a probe round never ends the watch
                    self.check(node)
            eventlet.sleep(self.probe.period)

    def check(self, node: devstack.PrivateRabbit) -> None:
        """One probe of `node`; restarts it after `failure_threshold` failures in a row.
        A node whose VM is not running (killed by a test, booting) is not probed: no
        container, no probe."""
        if not node.running():
            self._failures[node.nodename] = 0
            return
        passed, said = self.probe.passes(node)
        if passed:
            self._failures[node.nodename] = 0
            return
        self._failures[node.nodename] += 1
        log(f"liveness: {node.nodename} failed the probe "
            f"({self._failures[node.nodename]}/{self.probe.failure_threshold}): {said}")
        if self._failures[node.nodename] >= self.probe.failure_threshold:
            self.restart(node)

    def restart(self, node: devstack.PrivateRabbit) -> None:
        """What the kubelet does with a failing container: stop it, start it again."""
        log(f"liveness: restarting {node.nodename}")
        try:
            node.stop()
        except Exception:
            node.kill()
        node.start()
        self._failures[node.nodename] = 0
        self.restarts.append(node.nodename)
        log(f"liveness: {node.nodename} restarted ({len(self.restarts)} so far)")
