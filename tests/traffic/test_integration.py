"""Seed plus a tiny bounded traffic run against all six services in-process."""
import secrets

import pytest

from tests.support.suite import InProcessSuite
from tools.seed import seed
from tools.traffic import run_traffic

# The generator signs POST /track as a server-side caller, with a key made for this run.
TRACK_KEY = ("traffic-test", secrets.token_urlsafe(24))


@pytest.fixture(scope="module")
def suite(mongo_uri, amqp_uri):
    running = InProcessSuite(mongo_uri, amqp_uri, extra={"analytics": {
        "track_keys": ":".join(TRACK_KEY), "track_server_keys": TRACK_KEY[0]}}).start()
    yield running
    running.stop()


def test_seed_then_bounded_traffic_places_and_completes_orders(suite, amqp_uri):
    data = seed(amqp_uri=amqp_uri, members=10, rng_seed=7)
    assert len(data["products"]) == 30 and len(data["members"]) == 10
    assert data["coupons"] and data["experiment_key"] and data["campaign_id"]

    snapshots = []
    stats = run_traffic(rate=6, duration=6, workers=3, seed_data=data, progress=snapshots.append,
                        amqp_uri=amqp_uri, analytics_url=suite.http("analytics"), ops_grace=40,
                        rng_seed=11, progress_interval=0.2, track_key=TRACK_KEY)

    assert stats["sessions"] > 0 and stats["track_events"] > 0
    assert stats["orders_placed"] > 0, stats
    assert stats["final_status"].get("completed", 0) + stats["final_status"].get("refunded", 0) \
        + stats["final_status"].get("partially_refunded", 0) > 0, stats
    assert stats["dispatched"] > 0 and stats["delivered"] > 0, stats
    assert snapshots and snapshots[-1]["phase"] == "done"
    # the generator stops by itself: shopping time plus at most the settling grace
    assert stats["elapsed_s"] < 6 + 40 + 15
    # typed errors are counted, never raised; nothing unexpected (RemoteError = a service bug)
    assert not any(k.startswith("RemoteError") for k in stats["errors"]), stats["error_samples"]

    with suite_rpc(amqp_uri) as rpc:
        kpis = rpc.analytics.get_kpis()
        assert kpis["sessions"] > 0
        placed = rpc.order.get_order(stats["order_ids"][0])
        assert placed["member_id"] in {m["id"] for m in data["members"]}


def suite_rpc(amqp_uri):
    from tools.client import connect

    return connect(amqp_uri, timeout=15)
