"""The scripted history through the real broker and /track: every KPI equals the
oracle, rebuild equals live, two consumers equal one (the dashboard: test_dashboard.py)."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest
import requests

from services.analytics.service import AnalyticsService
from tests.analytics.conftest import TRACK_SETTINGS, envelope, post_track
from tests.analytics.integration import history
from tools import devstack
from tools.testing import store_of, wait_for

FULL = (datetime(2026, 11, 20, tzinfo=timezone.utc), datetime(2026, 11, 25, tzinfo=timezone.utc))
DAY1 = (history.T0, history.at(24))
ISO = "%Y-%m-%dT%H:%M:%SZ"


def iso(moment):
    return moment.strftime(ISO)


def start(start_service, settings_for, replicas=1):
    settings = settings_for("analytics", extra={"experiment_min_exposures": 1, **TRACK_SETTINGS})
    containers = [start_service(AnalyticsService, settings=settings)]
    for _ in range(replicas - 1):
        containers.append(start_service(AnalyticsService, settings=dataclasses.replace(
            settings, http_port=devstack.free_port())))
    return settings, containers


def feed(settings_list, containers, publish):
    broker, track = history.build()
    invalid = envelope("order", "order_confirmed", {"not_an_order": True}, history.at(3))
    sent_broker, sent_track = history.delivery_order(broker, track)
    for env in sent_broker + [invalid, invalid]:
        publish(env)
    ports = [c.config["SHOP_SETTINGS"].http_port for c in containers]
    for i in range(0, len(sent_track), 5):
        port = ports[(i // 5) % len(ports)]
        reply = post_track(f"http://127.0.0.1:{port}/track", {"events": sent_track[i:i + 5]})
        assert reply.status_code == 202, reply.text
    db = store_of(containers[0])
    expected = len(broker) + len(track) + 1
    wait_for(lambda: db.raw.count_documents({}) == expected, timeout=30, what="every event stored")
    return broker, track, db


def snapshot(rpc, db):
    f = (iso(FULL[0]), iso(FULL[1]))
    return {
        "full": rpc.analytics.get_kpis(*f), "day1": rpc.analytics.get_kpis(iso(DAY1[0]), iso(DAY1[1])),
        "top": rpc.analytics.top_products(10, *f), "slow": rpc.analytics.slow_products(10, *f),
        "roi": rpc.analytics.campaign_roi(*f), "exp": rpc.analytics.experiment_results("exp1"),
        "cohorts": rpc.analytics.retention_cohorts("month"),
        "agg": sorted(db.agg.find({}), key=lambda d: d["_id"]),
    }


@pytest.mark.parametrize("replicas", [1, 2])
def test_scripted_history_matches_the_oracle(start_service, settings_for, rpc, publish, replicas):
    settings, containers = start(start_service, settings_for, replicas)
    broker, track, db = feed([settings], containers, publish)

    for rng in (FULL, DAY1):
        kpis = rpc.analytics.get_kpis(iso(rng[0]), iso(rng[1]))
        assert history.served(kpis) == history.oracle(broker, track, *rng), rng
    full = rpc.analytics.get_kpis(iso(FULL[0]), iso(FULL[1]))
    # spot checks of the scripted story against hand-computed values
    assert (full["orders"], full["gmv"], full["refunded"], full["sessions"]) == (3, 28000, 25000, 6)
    assert full["repurchase_rate"] == 0.5 and full["conversion_rate"] == 0.666667  # s1, s3, s4, s5

    top = rpc.analytics.top_products(10, iso(FULL[0]), iso(FULL[1]))
    assert [(r["product_id"], r["units"], r["revenue"]) for r in top] == [
        ("p1", 1, 10000), ("p2", 1, 10000), ("p3", 1, 8000), ("p4", 0, 0)]
    assert top[0]["low_stock"] is True and top[0]["stock"] == 3 and top[1]["stock"] == 48
    slow = rpc.analytics.slow_products(2, iso(FULL[0]), iso(FULL[1]))
    assert [r["product_id"] for r in slow] == ["p4", "p3"]

    roi = {r["campaign_id"]: r for r in rpc.analytics.campaign_roi(iso(FULL[0]), iso(FULL[1]))["campaigns"]}
    assert (roi["c1"]["revenue"], roi["c1"]["cost"], roi["c1"]["orders"]) == (28000, 20003, 2)
    assert roi["c1"]["roi"] == round((28000 - 20003) / 20003, 6)
    assert {c["channel"]: (c["revenue"], c["cost"]) for c in roi["c1"]["channels"]} == {
        "douyin": (0, 20000), "email": (28000, 3)}
    assert (roi["c2"]["revenue"], roi["c2"]["cost"], roi["c2"]["roi"]) == (0, 5, -1.0)

    exp = {v["variant"]: v for v in rpc.analytics.experiment_results("exp1")["variants"]}
    assert (exp["control"]["exposures"], exp["control"]["conversions"]) == (2, 1)
    assert (exp["orange"]["exposures"], exp["orange"]["conversions"], exp["orange"]["lift"]) == (2, 1, 0.0)
    assert exp["orange"]["p_value"] == 1.0 and "no significant difference" in exp["orange"]["verdict"]

    cohorts = rpc.analytics.retention_cohorts("month")["cohorts"]
    assert [(c["cohort"], c["size"]) for c in cohorts] == [("2026-11", 2)]

    # the invalid event is kept and counted, never folded
    assert rpc.analytics.unfolded_events() == [
        {"status": "invalid", "source": "order", "event_type": "order_confirmed", "count": 1}]
    # personal data never lands in the raw store: the address shrinks to its region
    paid = db.raw.find_one({"event_type": "order_paid"})
    assert paid["data"]["shipping_address"] == {"region": "Shanghai"}

    # HTTP and Prometheus serve the same numbers
    port = containers[-1].config["SHOP_SETTINGS"].http_port
    http = requests.get(f"http://127.0.0.1:{port}/kpis",
                        params={"start": iso(FULL[0]), "end": iso(FULL[1])}, timeout=15).json()
    assert http == full
    exposition = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=15).text
    assert 'shop_kpi_gmv{window="today"}' in exposition and "shop_low_stock_products 1.0" in exposition
    assert 'shop_dead_lettered_events{queue_service="analytics"}' in exposition

    # rebuild from the raw store equals live ingestion
    live = snapshot(rpc, db)
    assert rpc.analytics.rebuild()["folded"] == len(broker) + len(track)
    assert snapshot(rpc, db) == live
    if replicas == 1:
        env = {**os.environ, "MONGO_URI": settings.mongo_uri, "ANALYTICS_DB": settings.database,
               "SHOP_TIMEZONE": settings.timezone}
        done = subprocess.run([sys.executable, "-m", "services.analytics.rebuild"], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert snapshot(rpc, db) == live

