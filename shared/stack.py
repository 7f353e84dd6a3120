"""The local stack behind `make up` / `make down`.

`up`: a single-node replica-set mongod under .run/mongo; the broker at
AMQP_URI, or else a private RabbitMQ node under .run/rabbit when
`rabbitmq-server` exists; the broker topology; then every service that exists
under services/, each as `python -m shared.run <name>` in the background,
returning once each /health/ready answers. `down` stops exactly what `up`
started (recorded in .run/stack.json). Keys the services need (HTTP token,
tracking key) are generated into .run/secrets.json and passed in the environment."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shared import devstack
from shared.config import DEFAULT_PORTS, Settings

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / ".run"
STATE = RUN / "stack.json"
SECRETS = RUN / "secrets.json"
SERVICE_ORDER = ["catalog", "member", "marketing", "order", "fulfillment", "analytics"]


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


def ensure_broker(state: dict) -> str:
    uri = os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")
    if devstack.broker_answers(uri):
        say("using the RabbitMQ broker at AMQP_URI")
        return uri
    if state.get("rabbit"):
        rabbit = devstack.PrivateRabbit(RUN / "rabbit", state["rabbit"]["port"])
        if devstack.broker_answers(rabbit.uri):
            return rabbit.uri
    if not devstack.PrivateRabbit.available():
        sys.exit("No RabbitMQ broker answers at AMQP_URI and rabbitmq-server is not installed.\n"
                 "Install it (Debian/Ubuntu: sudo apt-get install rabbitmq-server) or point "
                 "AMQP_URI at a running broker, then run the command again.")
    rabbit = devstack.PrivateRabbit(RUN / "rabbit", 5682)
    say("starting a private RabbitMQ node on 127.0.0.1:5682 (.run/rabbit)")
    rabbit.start()
    state["rabbit"] = {"port": 5682}
    save_state(state)
    return rabbit.uri


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


def up(timeout: float) -> None:
    state = load_state()
    mongo_uri = ensure_mongo(state)
    amqp_uri = ensure_broker(state)
    env = dict(os.environ, MONGO_URI=mongo_uri, AMQP_URI=amqp_uri, PYTHONUNBUFFERED="1",
               **secret_env(local_secrets()))
    subprocess.run([sys.executable, "-m", "shared.admin", "declare"], env=env, check=True,
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
    STATE.unlink(missing_ok=True)
    say("stack is down")


def status() -> None:
    for name in existing_services():
        port = DEFAULT_PORTS.get(name, 0)
        print(f"{name:<12} {'ready' if ready(port) else 'down'}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args(argv)
    {"up": lambda: up(args.timeout), "down": down, "status": status}[args.command]()


if __name__ == "__main__":
    main()
