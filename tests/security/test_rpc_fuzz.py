"""Every RPC entrypoint of every service, called with hostile values for every
parameter against the real services (nameko containers, real mongod and broker).

Each call must end in a success or a typed error (a ShopError subclass; an
untyped RemoteError is a failure), a ValidationFailed must leave the service's
store unchanged (its document count), and the service must still be ready
afterwards. Entrypoints are found from nameko's registrations: a new one is
fuzzed with no change here, and one without an argument schema fails.

The six services run at once, each alone on its own virtual host: no other
service's events arrive mid-call, so a count that moves during a refused call
was moved by that call; and the services are fuzzed in parallel (the calls
mostly wait on the broker)."""
from __future__ import annotations

import uuid

import eventlet
import requests
from hypothesis import HealthCheck, given, settings

from shared import devstack
from shared.client import connect
from shared.errors import ShopError, ValidationFailed
from shared.testing import store_of
from tests.security import strategies
from tests.security.conftest import ALL_SERVICES, EXAMPLES, TRACK_SETTINGS, parameters, rpc_entrypoints

FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck), print_blob=True)


def test_every_rpc_entrypoint_has_an_argument_schema():
    missing = [f"{service}.{name}" for service, cls in ALL_SERVICES.items()
               for name, fn in rpc_entrypoints(cls).items() if not hasattr(fn, "__shop_arguments__")]
    assert not missing, f"RPC entrypoints without an argument schema: {missing}"
    assert sum(len(rpc_entrypoints(cls)) for cls in ALL_SERVICES.values()) >= 99


def test_hostile_arguments_get_a_typed_answer_and_write_nothing(start_service, settings_for,
                                                                base_amqp_uri):
    vhosts = {name: f"shop-fuzz-{name}-{uuid.uuid4().hex[:6]}" for name in ALL_SERVICES}
    for vhost in vhosts.values():
        devstack.create_vhost(vhost)
    try:
        targets = {}
        for name, cls in ALL_SERVICES.items():
            uri = devstack.with_vhost(base_amqp_uri, vhosts[name])
            # A peer it calls (order -> catalog) is absent: a fast ServiceTimeout, typed.
            settings = settings_for(name, amqp_uri=uri, rpc_timeout=1.0,
                                    extra=TRACK_SETTINGS if name == "analytics" else {})
            targets[name] = (start_service(cls, settings=settings), settings, uri)
        pool = eventlet.GreenPool(len(targets))
        results = pool.imap(lambda item: fuzz_service(item[0], *item[1]), targets.items())
        failures = [line for lines in results for line in lines]
    finally:
        for vhost in vhosts.values():
            devstack.delete_vhost(vhost)
    assert not failures, "\n".join(failures)


def fuzz_service(service: str, container, settings, uri) -> list[str]:
    db = store_of(container)
    failures = []
    with connect(uri, timeout=15) as rpc:
        client = getattr(rpc, service)
        for name, function in sorted(rpc_entrypoints(ALL_SERVICES[service]).items()):
            try:
                fuzz(f"{service}.{name}", getattr(client, name), parameters(function), db)
            except AssertionError as exc:
                failures.append(str(exc).splitlines()[0][:800])
            ready = requests.get(f"http://127.0.0.1:{settings.http_port}/health/ready", timeout=10)
            if ready.status_code != 200:
                failures.append(f"{service} not ready after fuzzing {name}: {ready.text}")
    return failures


def documents(db) -> int:
    return db.command("dbStats")["objects"]


def fuzz(entrypoint: str, method, params, db) -> None:
    @FUZZ
    @given(kwargs=strategies.arguments(params))
    def call(kwargs):
        before = documents(db)
        try:
            method(**kwargs)
        except ValidationFailed as exc:
            assert exc.field_errors, f"{entrypoint}: a refusal names no field: {exc!r}"
            assert documents(db) == before, f"{entrypoint} refused {kwargs!r} but wrote"
        except ShopError:
            pass
        except Exception as exc:  # untyped: RemoteError(OverflowError ...) and the like
            raise AssertionError(f"{entrypoint}(**{kwargs!r}) -> untyped {exc!r}") from None

    call()
