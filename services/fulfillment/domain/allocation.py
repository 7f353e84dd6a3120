"""Which warehouse ships a paid order: a pluggable strategy.

A strategy is any callable `(warehouses, shipping_address) -> Allocation | None`
over the *active* warehouses. The default, `region_then_priority`, prefers a
warehouse in the shipping region and then the lowest `priority` number; ties
are broken by warehouse code so every replica picks the same one."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Allocation:
    warehouse_id: str
    warehouse_code: str | None
    rule: str  # "region" (same region), "priority" (another region), "fallback" (none active)


Strategy = Callable[[list[dict], dict], Allocation | None]


def _norm(text: str | None) -> str:
    return (text or "").strip().casefold()


def _rank(warehouse: dict) -> tuple:
    return (warehouse.get("priority", 0), warehouse.get("code", ""), warehouse["_id"])


def _active(warehouses: Iterable[dict]) -> list[dict]:
    return [w for w in warehouses if w.get("active", True)]


def region_then_priority(warehouses: list[dict], address: dict) -> Allocation | None:
    """Same region first, then the lowest priority number; None when nothing is active."""
    active = _active(warehouses)
    if not active:
        return None
    region = _norm((address or {}).get("region"))
    local = [w for w in active if region and _norm(w.get("region")) == region]
    if local:
        best = min(local, key=_rank)
        return Allocation(best["_id"], best.get("code"), "region")
    best = min(active, key=_rank)
    return Allocation(best["_id"], best.get("code"), "priority")


def priority_only(warehouses: list[dict], address: dict) -> Allocation | None:
    """The lowest priority number wherever it is (one central warehouse setups)."""
    active = _active(warehouses)
    if not active:
        return None
    best = min(active, key=_rank)
    return Allocation(best["_id"], best.get("code"), "priority")


STRATEGIES: dict[str, Strategy] = {
    "region_then_priority": region_then_priority,
    "priority_only": priority_only,
}


def strategy_named(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown allocation strategy {name!r}; "
                         f"known: {', '.join(sorted(STRATEGIES))}") from None


def allocate(strategy: Strategy, warehouses: list[dict], address: dict,
             fallback_warehouse_id: str) -> Allocation:
    """The strategy's choice, or the configured fallback warehouse when no
    warehouse is active, so a paid order is never stuck without a shipment."""
    chosen = strategy(warehouses, address)
    if chosen is None:
        return Allocation(fallback_warehouse_id, None, "fallback")
    return chosen
