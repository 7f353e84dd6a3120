"""Pure parts of the traffic generator, seed data and demo output: no broker, no mongod."""
import random
from collections import Counter

import pytest

from shared.errors import Conflict, ServiceTimeout, ValidationFailed
from tools import demo, seed, traffic
from tools.traffic import (
    Caller,
    CallFailed,
    Fate,
    Pacer,
    Stats,
    TrackBatcher,
    choose_fate,
    choose_scenario,
    render_progress,
    scenario_weights,
)

# --- scenario choice -------------------------------------------------------------------

def test_anonymous_visitors_never_buy():
    rng = random.Random(1)
    picks = {choose_scenario(rng, signed_in=False) for _ in range(500)}
    assert picks <= {"bounce", "browse"} and picks == {"bounce", "browse"}


def test_signed_in_sessions_reach_every_scenario_in_rough_proportion():
    rng = random.Random(2)
    counts = Counter(choose_scenario(rng, signed_in=True) for _ in range(4000))
    assert set(counts) == set(traffic.SCENARIOS)
    assert 0.40 < counts["buy"] / 4000 < 0.50


def test_treatment_variant_buys_more_than_control():
    control = scenario_weights(True, "control")
    treated = scenario_weights(True, "one_click")
    assert treated["buy"] == pytest.approx(control["buy"] * traffic.TREATMENT_LIFT)
    assert scenario_weights(True, None) == control
    rng_a, rng_b = random.Random(3), random.Random(3)
    buys_c = sum(choose_scenario(rng_a, True, "control") == "buy" for _ in range(3000))
    buys_t = sum(choose_scenario(rng_b, True, "one_click") == "buy" for _ in range(3000))
    assert buys_t > buys_c


def test_same_seed_same_choices():
    a = [choose_scenario(random.Random(9), True) for _ in range(5)]
    b = [choose_scenario(random.Random(9), True) for _ in range(5)]
    assert a == b


def test_fates_are_consistent():
    rng = random.Random(4)
    fates = [choose_fate(rng) for _ in range(3000)]
    for fate in fates:
        if fate.decline:
            assert fate.cancel is None and fate.ret is None
        if fate.cancel:
            assert fate.ret is None and fate.cancel in ("early", "after_payment")
        if fate.damaged:
            assert fate.ret
    assert any(f.decline for f in fates) and any(f.cancel for f in fates)
    assert any(f.ret == "partial" for f in fates) and any(f.ret == "full" for f in fates)
    assert any(f.ticket for f in fates)
    assert sum(f.decline for f in fates) < 0.15 * len(fates)


# --- pacing and batching ---------------------------------------------------------------

def test_pacer_spaces_slots_by_the_rate_across_workers():
    now = [100.0]
    pacer = Pacer(4, clock=lambda: now[0])
    assert [pacer.claim() for _ in range(4)] == [0.0, 0.25, 0.5, 0.75]
    now[0] = 110.0  # idle for a while: no burst of catch-up slots
    assert pacer.claim() == 0.0
    assert pacer.claim() == 0.25


def test_pacer_rejects_a_zero_rate():
    with pytest.raises(ValueError):
        Pacer(0)


def test_batcher_sends_full_batches_and_the_rest_on_flush():
    sent = []
    batcher = TrackBatcher(sent.append, max_batch=3)
    for i in range(7):
        batcher.add({"n": i})
    assert [len(b) for b in sent] == [3, 3]
    batcher.flush()
    assert [len(b) for b in sent] == [3, 3, 1]
    batcher.flush()
    assert len(sent) == 3
    assert [e["n"] for b in sent for e in b] == list(range(7))


def test_batcher_needs_a_positive_size():
    with pytest.raises(ValueError):
        TrackBatcher(lambda batch: None, max_batch=0)


# --- stats and error tolerance ---------------------------------------------------------

def test_stats_count_errors_by_type_with_one_sample_each():
    stats = Stats()
    stats.inc("sessions")
    stats.inc("sessions", 2)
    stats.error("order.place_order", ValidationFailed.field("lines", "bad"))
    stats.error("order.place_order", ValidationFailed.field("lines", "worse"))
    stats.error("order.quote", ServiceTimeout("slow"))
    stats.error("analytics.POST /track", "HTTP 400")
    out = stats.as_dict()
    assert out["sessions"] == 3
    assert out["errors"] == {"ValidationFailed": 2, "ServiceTimeout": 1, "HTTP 400": 1}
    assert out["errors_total"] == 4
    assert "bad" in out["error_samples"]["order.place_order ValidationFailed"]


class _Boom:
    def __init__(self, exc):
        self.exc = exc

    def __getattr__(self, name):
        def method(*args, **kwargs):
            raise self.exc
        return method


class _FakeClient:
    def __init__(self, exc=None, value=None):
        self.exc, self.value = exc, value

    def __getattr__(self, service):
        if self.exc:
            return _Boom(self.exc)
        value = self.value

        class Service:
            def __getattr__(self, method):
                return lambda *a, **k: value
        return Service()


def test_caller_counts_typed_errors_and_timeouts_without_crashing():
    stats = Stats()
    for exc in (Conflict("taken"), ServiceTimeout("late")):
        with pytest.raises(CallFailed):
            Caller(_FakeClient(exc), stats)("order", "cancel_order", "ord_1", "member")
    assert stats.errors == Counter({"Conflict": 1, "ServiceTimeout": 1})
    assert stats.counts["rpc_calls"] == 2


def test_caller_records_expected_refusals_apart_from_errors():
    stats = Stats()
    with pytest.raises(CallFailed):
        Caller(_FakeClient(ValidationFailed("coupon")), stats)("order", "quote", expected=(ValidationFailed,))
    assert not stats.errors and stats.expected["order.quote"] == 1
    assert Caller(_FakeClient(value={"id": "x"}), stats)("order", "get_order", "x") == {"id": "x"}


def test_caller_lets_connection_failures_through_for_a_reconnect():
    with pytest.raises(ConnectionResetError):
        Caller(_FakeClient(ConnectionResetError()), Stats())("order", "get_order", "x")


# --- operations decisions --------------------------------------------------------------

def _track(fate, status):
    track = traffic.OrderTrack("ord_1", "mem_1", [{"product_id": "p", "quantity": 2}], fate)
    track.status = status
    return track


def test_an_order_is_done_only_when_its_fate_is_played_out():
    gen = traffic.Traffic.__new__(traffic.Traffic)
    plain = _track(Fate(), "completed")
    gen._maybe_done(plain, "completed")
    assert plain.done
    returning = _track(Fate(ret="full"), "completed")
    gen._maybe_done(returning, "completed")
    assert not returning.done
    returning.return_received = True
    gen._maybe_done(returning, "completed")
    assert not returning.done  # received, the refund is still to come
    gen._maybe_done(returning, "refunded")
    assert returning.done
    refused = _track(Fate(ret="partial"), "completed")
    refused.extra["return_refused"] = True
    gen._maybe_done(refused, "completed")
    assert refused.done
    ticketed = _track(Fate(decline=True, ticket="payment"), "cancelled")
    gen._maybe_done(ticketed, "cancelled")
    assert not ticketed.done
    ticketed.ticket_stage = "resolved"
    gen._maybe_done(ticketed, "cancelled")
    assert ticketed.done
    moving = _track(Fate(), "shipped")
    gen._maybe_done(moving, "shipped")
    assert not moving.done


# --- progress bar ----------------------------------------------------------------------

def test_progress_bar_renders_fraction_and_counters():
    line = render_progress({"phase": "shopping", "elapsed": 15, "duration": 60, "sessions": 40,
                            "orders": 12, "completed": 3, "errors": 1}, width=20)
    assert line.startswith("[#####---------------]  25%")
    assert "15/60s" in line and "sessions 40" in line and "orders 12" in line and "errors 1" in line


def test_progress_bar_is_full_and_clamped_after_the_shopping_time():
    line = render_progress({"phase": "settling", "elapsed": 75, "duration": 60, "open_orders": 4}, width=10)
    assert line.startswith("[##########] 100%") and "60/60s" in line and "settling 4 open orders" in line
    assert render_progress({"phase": "done", "elapsed": 0, "duration": 0}).count("#") == 0


def test_progress_printer_on_a_pipe_prints_whole_lines():
    import io

    stream = io.StringIO()
    printer = traffic.ProgressPrinter(stream, every=1000)
    printer({"phase": "shopping", "elapsed": 1, "duration": 10})
    printer({"phase": "shopping", "elapsed": 2, "duration": 10})  # throttled
    printer({"phase": "done", "elapsed": 10, "duration": 10})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in stream.getvalue() and lines[-1].endswith(
        "errors 0") and "done" in lines[-1]


# --- seed data and demo output ---------------------------------------------------------

def test_seed_catalog_is_bilingual_with_some_low_stock_items():
    titles = [p[0] for p in seed.PRODUCTS]
    assert len(titles) >= 30 and len(set(titles)) == len(titles)
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in t) for t in titles)
    assert any(t.isascii() for t in titles)
    low = [p for p in seed.PRODUCTS if p[5] is not None]
    assert 3 <= len(low) and all(stock > threshold for *_, stock, threshold in low)
    assert all(isinstance(p[3], int) and p[3] > 0 for p in seed.PRODUCTS)


def test_member_profiles_are_synthetic_and_valid():
    rng = random.Random(5)
    profiles = [seed.member_profile("abc123", i, rng) for i in range(50)]
    assert len({p["email"] for p in profiles}) == 50
    assert all(p["email"].endswith("@example.com") for p in profiles)
    assert all(p["gender"] in seed.GENDERS and p["region"] in seed.REGIONS for p in profiles)
    assert all(isinstance(v, bool) for p in profiles for v in p["consent"].values())
    assert all(1900 <= p["birth_year"] <= 2026 for p in profiles)


def test_demo_tables_align_and_format_money_and_rates():
    kpis = {"sessions": 120, "orders": 30, "gmv": 1234567, "conversion_rate": 0.25,
            "funnel": {"steps": [{"step": "sessions", "sessions": 120}, {"step": "ordered", "sessions": 30}]}}
    out = demo.kpi_table(kpis, "CNY")
    assert "CNY 12,345.67" in out and "25.0%" in out and "120 → 30" in out
    widths = {len(line) for line in out.splitlines() if line.startswith("+")}
    assert len(widths) == 1
    assert demo.money(-150) == "-CNY 1.50"


def test_demo_table_counts_chinese_as_double_width():
    out = demo.table(["Product", "Units"], [["羽绒服", "3"], ["Scarf", "10"]])
    rows = [line for line in out.splitlines() if line.startswith("|")]
    assert rows[1].index("|", 1) == rows[2].index("|", 1) - 3  # 3 CJK chars = 6 columns
