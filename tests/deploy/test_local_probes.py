"""Start each service as its Deployment would, locally, and probe it.

The environment is resolved from the rendered prod Deployment and its
ConfigMap exactly as the kubelet would (envFrom, configMapKeyRef,
secretKeyRef, `$(VAR)` expansion). Only what cannot exist here is replaced:
hostnames (the broker and MongoDB services), the operator-generated
credentials, the broker vhost (the test's own, for isolation) and the HTTP
port (8080 may be taken on a shared machine; the probes follow it)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.deploy.conftest import ROOT, SERVICES, by_name, of_kind
from tools import devstack


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' dependent-variable expansion: $(VAR) if defined, $$ escapes."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def container_env(docs, deployment: dict, container: dict, secrets: dict) -> dict[str, str]:
    configmaps = {d["metadata"]["name"]: d["data"] for d in of_kind(docs, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
            continue
        ref = item["valueFrom"]
        if "configMapKeyRef" in ref:
            env[item["name"]] = configmaps[ref["configMapKeyRef"]["name"]][ref["configMapKeyRef"]["key"]]
        else:
            env[item["name"]] = secrets[(ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])]
    return env


def local_environment(docs, service: str, amqp_uri: str, mongo_uri: str, port: int):
    deployment = by_name(docs, "Deployment")[service]
    spec = deployment["spec"]["template"]["spec"]
    local = urlsplit(amqp_uri)
    # Stand-ins for the operator-generated Secrets.
    secrets = {(f"shop-{service}-user-credentials", "username"): local.username or "guest",
               (f"shop-{service}-user-credentials", "password"): local.password or "guest",
               (f"shop-{service}-mongo-uri", "connectionString.standard"): mongo_uri,
               ("shop-http-token", "token"): "local-probe-token",
               ("shop-tracking-keys", "track-keys"): "probe:local-probe-secret",
               ("shop-tracking-keys", "server-keys"): "probe",
               ("shop-tracking-keys", "session-secret"): "local-probe-session"}
    main = next(c for c in spec["containers"] if c["name"] == service)
    envs = {}
    for container in [main, *spec.get("initContainers", [])]:
        env = container_env(docs, deployment, container, secrets)
        remote = urlsplit(env["AMQP_URI"])
        # The URI the pod builds points at the in-cluster broker and vhost...
        assert remote.hostname == env["AMQP_HOST"] and remote.path == "/" + env["AMQP_VHOST"]
        # ...which become the local broker and the test's own vhost.
        env["AMQP_URI"] = urlunsplit((remote.scheme, f"{remote.username}:{remote.password}@{local.hostname}:"
                                      f"{local.port or 5672}", local.path, "", ""))
        env["AMQP_HOST"] = local.hostname
        assert int(env["HTTP_PORT"]) == main["ports"][0]["containerPort"]
        env["HTTP_PORT"] = str(port)
        envs[container["name"]] = env
    return deployment, main, spec, envs


def process_env(env: dict[str, str], pythonpath: str) -> dict[str, str]:
    # The container's environment plus what the image sets (PATH, PYTHONPATH).
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": pythonpath,
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "HOME": str(ROOT / ".run"), **env}


def get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def run_like_the_deployment(docs, service: str, amqp_uri: str, mongo_uri: str, cwd: Path,
                            pythonpath: str, log_path: Path) -> None:
    port = devstack.free_port()
    deployment, main, spec, envs = local_environment(docs, service, amqp_uri, mongo_uri, port)
    python = [sys.executable]  # the image's `python`: the project's interpreter here
    for init in spec.get("initContainers", []):
        assert init["command"][0] == "python"
        done = subprocess.run(python + init["command"][1:], cwd=cwd, capture_output=True, text=True,
                              env=process_env(envs[init["name"]], pythonpath), timeout=120)
        assert done.returncode == 0, f"init container {init['name']} failed:\n{done.stderr[-3000:]}"
    command = main["command"] + main.get("args", [])
    assert command[0] == "python"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(python + command[1:], cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                env=process_env(envs[service], pythonpath))
    try:
        def wait(path: str, seconds: float) -> None:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                assert proc.poll() is None, f"{service} exited:\n{log_path.read_text()[-3000:]}"
                if get(port, path) == 200:
                    return
                time.sleep(0.3)
            pytest.fail(f"{service}: {path} never answered 200:\n{log_path.read_text()[-3000:]}")

        startup = main["startupProbe"]
        wait(startup["httpGet"]["path"], startup["periodSeconds"] * startup["failureThreshold"])
        wait(main["readinessProbe"]["httpGet"]["path"], 60)
        assert get(port, main["livenessProbe"]["httpGet"]["path"]) == 200
        assert get(port, "/metrics") == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        try:
            code = proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"{service} did not stop within its {grace}s grace period")
    assert code == 0, f"{service} exited {code} on SIGTERM:\n{log_path.read_text()[-3000:]}"


@pytest.mark.parametrize("service", SERVICES)
def test_service_starts_with_its_deployment_environment(rendered, service, amqp_uri, mongo_uri, tmp_path):
    if not (ROOT / "services" / service / "service.py").exists():
        pytest.skip(f"services/{service}/service.py does not exist yet")
    run_like_the_deployment(rendered["prod"], service, amqp_uri, mongo_uri, ROOT, str(ROOT),
                            tmp_path / f"{service}.log")


def test_probe_harness_with_the_chassis_example(rendered, amqp_uri, mongo_uri, tmp_path):
    """The harness itself, on tests/chassis/example.py playing catalog (so it
    is exercised even before a real service exists)."""
    package = tmp_path / "app" / "services" / "catalog"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "service.py").write_text("from tests.chassis.example import ExampleInventory  # noqa: F401\n")
    run_like_the_deployment(rendered["prod"], "catalog", amqp_uri, mongo_uri, tmp_path / "app",
                            f"{tmp_path / 'app'}{os.pathsep}{ROOT}", tmp_path / "example.log")


def test_expansion_follows_kubernetes_rules():
    env = {"A": "x", "B": "y"}
    assert expand("$(A):$(B)@$(C)", env) == "x:y@$(C)"
    assert expand("$$(A)", env) == "$(A)"
