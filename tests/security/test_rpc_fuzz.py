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
import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings

from shared.errors import ShopError, ValidationFailed
from tests.security import strategies
from tests.security.conftest import ALL_SERVICES, EXAMPLES, TRACK_SETTINGS, parameters, rpc_entrypoints
from tools import devstack
from tools.client import connect
from tools.testing import store_of

# No shrinking: a failure is reported with the example that found it, and the
# run stays within its budget (shrinking would re-call the service hundreds of times).
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                suppress_health_check=list(HealthCheck))


def test_every_rpc_entrypoint_has_an_argument_schema():
    missing = [f"{service}.{name}" for service, cls in ALL_SERVICES.items()
               for name, fn in rpc_entrypoints(cls).items() if not hasattr(fn, "__shop_arguments__")]
    assert not missing, f"RPC entrypoints without an argument schema: {missing}"
    assert sum(len(rpc_entrypoints(cls)) for cls in ALL_SERVICES.values()) >= 99


@pytest.fixture
def vhosts(base_amqp_uri):
    """A virtual host per service; set up before `start_service`, so deleted after
    the containers have stopped."""
    made = {name: f"shop-fuzz-{name}-{uuid.uuid4().hex[:6]}" for name in ALL_SERVICES}
    for vhost in made.values():
        devstack.create_vhost(vhost)
    yield {name: devstack.with_vhost(base_amqp_uri, vhost) for name, vhost in made.items()}
    for vhost in made.values():
        devstack.delete_vhost(vhost)


def test_hostile_arguments_get_a_typed_answer_and_write_nothing(vhosts, start_service, settings_for):
    targets = {}
    for name, cls in ALL_SERVICES.items():
        # A peer it calls (order -> catalog) is absent: a fast ServiceTimeout, typed.
        settings = settings_for(name, amqp_uri=vhosts[name], rpc_timeout=1.0,
                                extra=TRACK_SETTINGS if name == "analytics" else {})
        targets[name] = (start_service(cls, settings=settings), settings, vhosts[name])
    pool = eventlet.GreenPool(len(targets))
    results = pool.imap(lambda item: fuzz_service(item[0], *item[1]), targets.items())
    failures = [line for lines in results for line in lines]
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
    # Nothing else writes to this store, so the count after one call is the count
    # before the next: one dbStats per call.
    seen = {"documents": documents(db)}

    @FUZZ
    @given(kwargs=strategies.arguments(params))
    def call(kwargs):
        before = seen["documents"]
        try:
            method(**kwargs)
        except ValidationFailed as exc:
            assert exc.field_errors, f"{entrypoint}: a refusal names no field: {exc!r}"
            after = seen["documents"] = documents(db)
            assert after == before, f"{entrypoint} refused {_short(kwargs)} but wrote"
            return
        except ShopError:
            pass
        except Exception as exc:  # untyped: RemoteError(OverflowError ...) and the like
            raise AssertionError(f"{entrypoint}(**{_short(kwargs)}) -> untyped {exc!r}"[:800]) from None
        seen["documents"] = documents(db)

    call()


def _short(kwargs) -> str:
    text = repr(kwargs)
    return text if len(text) < 300 else text[:300] + "..."
