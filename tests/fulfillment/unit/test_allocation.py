import pytest

from services.fulfillment.domain import allocation


def wh(wid, region, priority, active=True, code=None):
    return {"_id": wid, "code": code or wid.upper(), "region": region, "priority": priority,
            "active": active}


WAREHOUSES = [wh("bj1", "Beijing", 1), wh("sh2", "Shanghai", 5), wh("sh1", "Shanghai", 2),
              wh("gz1", "Guangdong", 0, active=False)]


def test_same_region_wins_over_better_priority_elsewhere():
    chosen = allocation.region_then_priority(WAREHOUSES, {"region": "Shanghai"})
    assert (chosen.warehouse_id, chosen.rule) == ("sh1", "region")


def test_region_match_ignores_case_and_spaces():
    assert allocation.region_then_priority(WAREHOUSES, {"region": " shanghai "}).warehouse_id == "sh1"


def test_no_warehouse_in_region_falls_back_to_best_priority():
    chosen = allocation.region_then_priority(WAREHOUSES, {"region": "Sichuan"})
    assert (chosen.warehouse_id, chosen.rule) == ("bj1", "priority")


def test_inactive_warehouses_are_never_chosen_even_in_region():
    chosen = allocation.region_then_priority(WAREHOUSES, {"region": "Guangdong"})
    assert chosen.warehouse_id == "bj1"


def test_ties_break_by_code_deterministically():
    ws = [wh("b", "X", 1, code="B"), wh("a", "X", 1, code="A")]
    assert allocation.region_then_priority(ws, {"region": "X"}).warehouse_id == "a"
    assert allocation.region_then_priority(list(reversed(ws)), {"region": "X"}).warehouse_id == "a"


def test_missing_region_uses_priority():
    assert allocation.region_then_priority(WAREHOUSES, {}).warehouse_id == "bj1"


def test_priority_only_ignores_region():
    assert allocation.priority_only(WAREHOUSES, {"region": "Shanghai"}).warehouse_id == "bj1"


def test_nothing_active_gives_the_fallback():
    chosen = allocation.allocate(allocation.region_then_priority, [wh("x", "A", 1, active=False)],
                                 {"region": "A"}, "wh_unassigned")
    assert (chosen.warehouse_id, chosen.rule) == ("wh_unassigned", "fallback")


def test_a_custom_strategy_plugs_in():
    def first_listed(warehouses, address):
        return allocation.Allocation(warehouses[0]["_id"], None, "custom") if warehouses else None

    assert allocation.allocate(first_listed, WAREHOUSES, {}, "fb").rule == "custom"


def test_unknown_strategy_name_is_refused():
    with pytest.raises(ValueError, match="unknown allocation strategy"):
        allocation.strategy_named("cheapest")
    assert allocation.strategy_named("priority_only") is allocation.priority_only
