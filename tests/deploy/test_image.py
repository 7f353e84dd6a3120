"""Build the image from the Dockerfile (deploy/tools/image.sh: buildah, a
host-built wheelhouse, a debootstrap base where no registry answers) and run
every service from it as its Deployment does: the image's own non-root user,
a read-only root filesystem with only /tmp writable, all capabilities
dropped; the init container's command first, then the service's, against the
local broker and mongod; `/health/ready` must answer 200 and SIGTERM must
stop it cleanly.

Slow (a build and six containers: minutes), so only with RUN_IMAGE_TESTS=1
(`make test-image`); the last result is recorded in deploy/k8s/README.md."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

import pytest

from tests.deploy.conftest import DEPLOY, ROOT, SERVICES, by_name
from tests.deploy.test_local_probes import get
from tools import devstack

pytestmark = pytest.mark.skipif(
    os.environ.get("RUN_IMAGE_TESTS") != "1",
    reason="image build and run take minutes: RUN_IMAGE_TESTS=1 (make test-image)")

CONTAINERS_CONF = str(DEPLOY / "tools" / "containers.conf")
UID = "10001"


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "CONTAINERS_CONF": CONTAINERS_CONF})
    if check and done.returncode != 0:
        pytest.fail(f"podman {' '.join(args[:3])} … failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module")
def image():
    missing = [tool for tool in ("buildah", "podman", "runc") if not shutil.which(tool)
               and not os.path.exists(f"/usr/sbin/{tool}")]
    if missing or os.geteuid() != 0:
        pytest.skip(f"no image builder here (missing: {', '.join(missing) or 'root'}): "
                    "apt-get install buildah podman runc debootstrap, as root")
    tag = f"localhost/shop:test-{uuid.uuid4().hex[:8]}"
    done = subprocess.run([str(DEPLOY / "tools" / "image.sh")], capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "IMAGE": tag})
    assert done.returncode == 0, f"image build failed:\n{done.stderr[-4000:]}"
    yield tag
    podman("rmi", "-f", tag, check=False)


def ready(port: int) -> int:
    return get(port, "/health/ready")


def test_image_runs_as_its_non_root_user(image):
    user = podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()
    assert user.split(":")[0] == UID
    # The Deployment's runAsNonRoot needs a numeric user, and nothing of the build is left.
    listing = podman("run", "--rm", "--network", "none", "--read-only", image,
                     "python", "-c", "import os, shutil; print(os.getuid(), os.path.exists('/wheels'), "
                     "shutil.which('pip') is None or 'venv' in shutil.which('pip'))").stdout.split()
    assert listing == [UID, "False", "True"]


@pytest.mark.parametrize("service", SERVICES)
def test_service_starts_from_the_image(image, rendered, service, amqp_uri, mongo_uri):
    if not (ROOT / "services" / service / "service.py").exists():
        pytest.skip(f"services/{service}/service.py does not exist yet")
    spec = by_name(rendered["prod"], "Deployment")[service]["spec"]["template"]["spec"]
    main = next(c for c in spec["containers"] if c["name"] == service)
    init = spec["initContainers"][0]
    port = devstack.free_port()
    env = {"AMQP_URI": amqp_uri, "MONGO_URI": mongo_uri, "HTTP_PORT": str(port),
           f"{service.upper()}_DB": f"test_image_{service}_{uuid.uuid4().hex[:6]}"}
    # What the pod's securityContext enforces; /tmp is the pod's emptyDir.
    confined = ["--network", "host", "--read-only", "--tmpfs", "/tmp:rw,size=64m", "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges", *[f"--env={k}={v}" for k, v in env.items()]]
    done = podman("run", "--rm", *confined, image, *init["command"], timeout=180, check=False)
    assert done.returncode == 0, f"init {init['command']} failed:\n{done.stderr[-3000:]}"
    name = f"shop-{service}-{uuid.uuid4().hex[:6]}"
    podman("run", "-d", "--name", name, *confined, image, *main["command"], *main.get("args", []))
    try:
        deadline = time.monotonic() + 90
        while ready(port) != 200:
            state = podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
            assert state == "true", f"{service} exited:\n{podman('logs', name, check=False).stderr[-3000:]}"
            if time.monotonic() > deadline:
                pytest.fail(f"{service}: /health/ready never answered 200:\n"
                            f"{podman('logs', name, check=False).stderr[-3000:]}")
            time.sleep(0.5)
        grace = spec["terminationGracePeriodSeconds"]
        podman("stop", "-t", str(grace), name, timeout=grace + 30)
        code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        logs = podman("logs", name, check=False).stderr[-3000:]
        assert code == "0", f"{service} exited {code} on SIGTERM:\n{logs}"
    finally:
        podman("rm", "-f", name, check=False)
