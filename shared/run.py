"""Start one service: `python -m shared.run catalog`.

Loads `services/<name>/service.py`, runs it in a nameko container and stops
gracefully on SIGTERM/SIGINT: consumers are cancelled first, in-flight
workers finish, and anything unacknowledged returns to its queue. SIGUSR1
writes every green thread's stack to a file (shared/green.py) and logs its path."""
from __future__ import annotations

from shared.green import patch

patch()  # before every other import

import argparse  # noqa: E402
import importlib  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import eventlet  # noqa: E402
from nameko.runners import ServiceRunner  # noqa: E402

from shared.config import Settings  # noqa: E402
from shared.green import dump_on_signal  # noqa: E402
from shared.observability import logs  # noqa: E402


def service_class(name: str, module_name: str | None = None):
    module = importlib.import_module(module_name or f"services.{name}.service")
    for value in vars(module).values():
        if isinstance(value, type) and getattr(value, "name", None) == name:
            return value
    raise SystemExit(f"{module.__name__} defines no service class with name = {name!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", help="catalog, order, fulfillment, member, marketing or analytics")
    parser.add_argument("--module", help="import the service class from this module instead "
                                             "of services.<service>.service")
    args = parser.parse_args(argv)
    settings = Settings.from_env(args.service)
    logs.configure(args.service, settings.log_level)
    log = logs.get_logger("shop.run")
    runner = ServiceRunner(settings.nameko_config())
    runner.add_service(service_class(args.service, args.module))

    def shutdown(signum, frame):
        log.info("service_stopping", signal=signum)
        eventlet.spawn_n(runner.stop)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    dump_on_signal(lambda path: log.warning("green_threads_dumped", path=path))
    for container in runner.containers:
        container.shop_started = False  # /health/ready: not before every extension started
    runner.start()
    for container in runner.containers:
        container.shop_started = True
    log.info("service_started", http=f"{settings.http_host}:{settings.http_port}",
             database=settings.database)
    try:
        runner.wait()
    except Exception:
        log.exception("service_crashed")
        runner.kill()
        sys.exit(1)
    log.info("service_stopped")


if __name__ == "__main__":
    main()
