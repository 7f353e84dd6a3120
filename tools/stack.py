"""The local stack behind `make up` / `make down`.

`up`: a single-node replica-set mongod under .run/mongo; the broker at
AMQP_URI, or else a private RabbitMQ node under .run/rabbit when
`rabbitmq-server` exists (installed first with apt-get when it does not and we
are root on a Debian-like machine; otherwise the one command to run is
printed); the broker topology; then every service that exists under
services/, each as `python -m shared.run <name>` in the background, returning
once each /health/ready answers. `down` stops exactly what `up` started
(recorded in .run/stack.json). Keys the services need (HTTP token, tracking
key) are generated into .run/secrets.json and passed in the environment.

`SHOP_CLUSTER=1` (or `up --cluster`): instead, a three-member mongod replica
set (.run/mongo-cluster, ports 27031-27033) and a three-node RabbitMQ cluster
(.run/rabbit-cluster, ports 5691-5693, quorum queues on all three), the
services connecting to every member and node."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from shared.config import DEFAULT_PORTS, Settings
from tools import devstack

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / ".run"
STATE = RUN / "stack.json"
SECRETS = RUN / "secrets.json"
SERVICE_ORDER = ["catalog", "member", "marketing", "order", "fulfillment", "analytics"]
CLUSTER_MONGO_PORTS = [27031, 27032, 27033]
CLUSTER_RABBIT_PORTS = [5691, 5692, 5693]
INSTALL_COMMAND = "sudo apt-get install -y rabbitmq-server"


def existing_services() -> list[str]:
    found = {p.parent.name for p in (ROOT / "services").glob("*/service.py")}
    return [name for name in SERVICE_ORDER if name in found] + sorted(found - set(SERVICE_ORDER))


def load_state() -> dict:
    try:
        return json.loads(STATE.read_text())
    except (OSError, ValueError):
        return {}


def save_state(state: dict) -> None:
    RUN.mkdir(parents=True, exist_ok=True)
    STATE.write_text(json.dumps(state, indent=2))


def say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def ensure_mongo(state: dict) -> str:
    uri = os.environ.get("MONGO_URI")
    if uri and "127.0.0.1:27017" not in uri and "localhost:27017" not in uri:
        say("using MongoDB at MONGO_URI")
        return uri
    mongod = devstack.Mongod(RUN / "mongo", 27017)
    if mongod.running():
        say("mongod already running (.run/mongo)")
    elif devstack.port_open("127.0.0.1", 27017):
        say("something else listens on 27017: using it as MongoDB")
        return "mongodb://127.0.0.1:27017/?replicaSet=rs0"
    else:
        say("starting mongod (single-node replica set rs0) in .run/mongo")
        mongod.start()
        state["mongod"] = {"dbpath": str(mongod.dbpath), "port": 27017}
        save_state(state)
    return mongod.uri


def missing_broker_action(is_root: bool, has_apt: bool) -> str:
    """What `up` does when no broker answers and rabbitmq-server is not installed:
    "install" (root with apt-get: Debian's package, then a private node) or "tell"
    (print the one command to run)."""
    return "install" if is_root and has_apt else "tell"


def install_rabbitmq() -> None:
    say("installing Debian's rabbitmq-server (apt-get install rabbitmq-server) ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "rabbitmq-server"]):
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"`{' '.join(command)}` failed:\n{result.stderr.strip()[-1500:]}\n"
                     f"Install RabbitMQ yourself ({INSTALL_COMMAND}) or point AMQP_URI at a broker.")
    say("rabbitmq-server installed")


def ensure_rabbitmq_installed() -> None:
    if devstack.PrivateRabbit.available():
        return
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if missing_broker_action(is_root, shutil.which("apt-get") is not None) == "install":
        install_rabbitmq()
        return
    sys.exit("No RabbitMQ broker answers at AMQP_URI and rabbitmq-server is not installed.\n"
             f"Run:\n\n    {INSTALL_COMMAND}\n\n(or point AMQP_URI at a running broker), "
             "then run the command again.")


def ensure_broker(state: dict) -> str:
    uri = os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")
    if devstack.broker_answers(uri):
        say("using the RabbitMQ broker at AMQP_URI")
        return uri
    if state.get("rabbit"):
        rabbit = devstack.PrivateRabbit(RUN / "rabbit", state["rabbit"]["port"])
        if devstack.broker_answers(rabbit.uri):
            return rabbit.uri
    ensure_rabbitmq_installed()
    if devstack.broker_answers(uri):  # the package's own service may have started one
        say("using the RabbitMQ broker the package started at AMQP_URI")
        return uri
    rabbit = devstack.PrivateRabbit(RUN / "rabbit", 5682)
    say("starting a private RabbitMQ node on 127.0.0.1:5682 (.run/rabbit)")
    rabbit.start()
    state["rabbit"] = {"port": 5682}
    save_state(state)
    return rabbit.uri


def rabbit_cluster() -> devstack.RabbitCluster:
    return devstack.RabbitCluster(RUN / "rabbit-cluster", CLUSTER_RABBIT_PORTS, prefix="shopc")


def mongo_cluster() -> devstack.MongoReplicaSet:
    return devstack.MongoReplicaSet(RUN / "mongo-cluster", CLUSTER_MONGO_PORTS, replset="rs-shop")


def ensure_cluster(state: dict) -> tuple[str, str]:
    """The three-member replica set and the three-node RabbitMQ cluster."""
    ensure_rabbitmq_installed()
    mongo = mongo_cluster()
    say(f"mongod replica set rs-shop on ports {CLUSTER_MONGO_PORTS} (.run/mongo-cluster)")
    mongo.start()
    state["mongo_cluster"] = True
    save_state(state)
    rabbit = rabbit_cluster()
    if all(devstack.broker_answers(node.uri, 1) for node in rabbit.nodes):
        say("RabbitMQ cluster already running (.run/rabbit-cluster)")
    else:
        # the nodes run as the `rabbitmq` user: their directories must be reachable by it
        RUN.mkdir(parents=True, exist_ok=True)
        os.chmod(RUN, 0o755)
        say(f"starting a three-node RabbitMQ cluster on ports {CLUSTER_RABBIT_PORTS} (.run/rabbit-cluster)")
        rabbit.start()
    state["rabbit_cluster"] = True
    save_state(state)
    return mongo.uri, rabbit.uri


def ready(port: int) -> bool:
    return devstack.health_ready(f"http://127.0.0.1:{port}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def local_secrets() -> dict:
    """The local stack's keys, made at random on first use into .run/secrets.json
    (owner-only): the operators' bearer token, a server-side tracking key (the
    traffic generator's) and the member-session secret. Never in the repo."""
    import json
    import secrets

    if SECRETS.exists():
        return json.loads(SECRETS.read_text())
    RUN.mkdir(parents=True, exist_ok=True)
    made = {"http_token": secrets.token_urlsafe(32), "track_key_id": "local-backend",
            "track_secret": secrets.token_urlsafe(32), "session_secret": secrets.token_urlsafe(32)}
    fd = os.open(SECRETS, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(made, handle)
    return made


def secret_env(keys: dict) -> dict:
    """The environment a service reads those keys from (a Secret's keys in Kubernetes)."""
    return {"HTTP_TOKEN": keys["http_token"],
            "ANALYTICS_TRACK_KEYS": f"{keys['track_key_id']}:{keys['track_secret']}",
            "ANALYTICS_TRACK_SERVER_KEYS": keys["track_key_id"],
            "ANALYTICS_SESSION_SECRET": keys["session_secret"]}


def up(timeout: float, cluster: bool = False) -> None:
    state = load_state()
    if cluster:
        mongo_uri, amqp_uri = ensure_cluster(state)
    else:
        mongo_uri = ensure_mongo(state)
        amqp_uri = ensure_broker(state)
    env = dict(os.environ, MONGO_URI=mongo_uri, AMQP_URI=amqp_uri, PYTHONUNBUFFERED="1",
               **secret_env(local_secrets()))
    subprocess.run([sys.executable, "-m", "tools.admin", "declare"], env=env, check=True,
                   cwd=ROOT, stdout=subprocess.DEVNULL)
    (RUN / "logs").mkdir(parents=True, exist_ok=True)
    services = state.setdefault("services", {})
    names = existing_services()
    if not names:
        say("no services under services/ yet: infrastructure only")
    for name in names:
        known = services.get(name)
        if known and pid_alive(known["pid"]):
            continue
        port = Settings.from_env(name).http_port
        log = open(RUN / "logs" / f"{name}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "shared.run", name], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        services[name] = {"pid": proc.pid, "port": port}
        save_state(state)
        say(f"started {name} (pid {proc.pid}, http 127.0.0.1:{port}, log .run/logs/{name}.log)")
    deadline = time.monotonic() + timeout
    for name in names:
        port = services[name]["port"]
        while not ready(port):
            if not pid_alive(services[name]["pid"]):
                sys.exit(f"{name} exited during start-up: see .run/logs/{name}.log")
            if time.monotonic() > deadline:
                sys.exit(f"{name} not ready after {timeout}s: see .run/logs/{name}.log")
            time.sleep(0.3)
        say(f"{name} ready")
    say("stack is up: `make down` stops it")


def down() -> None:
    state = load_state()
    for name, info in state.get("services", {}).items():
        pid = info["pid"]
        if pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            say(f"stopping {name} (pid {pid})")
    for info in state.get("services", {}).values():
        deadline = time.monotonic() + 30
        while pid_alive(info["pid"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(info["pid"]):
            os.kill(info["pid"], signal.SIGKILL)
    if state.get("mongod"):
        say("stopping mongod")
        devstack.Mongod(Path(state["mongod"]["dbpath"]), state["mongod"]["port"]).stop()
    if state.get("rabbit"):
        say("stopping the private RabbitMQ node")
        devstack.PrivateRabbit(RUN / "rabbit", state["rabbit"]["port"]).stop()
    if state.get("rabbit_cluster"):
        say("stopping the RabbitMQ cluster")
        rabbit_cluster().stop()
    if state.get("mongo_cluster"):
        say("stopping the mongod replica set")
        mongo_cluster().stop()
    STATE.unlink(missing_ok=True)
    say("stack is down")


def status() -> None:
    for name in existing_services():
        port = DEFAULT_PORTS.get(name, 0)
        print(f"{name:<12} {'ready' if ready(port) else 'down'}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--cluster", action="store_true",
                        default=os.environ.get("SHOP_CLUSTER", "") not in ("", "0"),
                        help="three-member replica set and three-node RabbitMQ cluster (SHOP_CLUSTER=1)")
    args = parser.parse_args(argv)
    {"up": lambda: up(args.timeout, args.cluster), "down": down, "status": status}[args.command]()


if __name__ == "__main__":
    main()
