"""Stock changes inside one open transaction (`tx` from the chassis store):
operator adjustments, order reservations (all lines or none), release,
commit on dispatch, restock on return, with the audit ledger and low-stock
crossings. Every counter moves with a conditional atomic update; nothing is
read and then written back."""
from __future__ import annotations

from datetime import datetime

from pymongo import ReturnDocument

from services.catalog import domain
from shared.errors import NotFound, ValidationFailed
from shared.ids import new_id

AFTER = ReturnDocument.AFTER
STOCK_FIELDS = {"stock": 1, "category": 1, "status": 1, "version": 1}


def _ledger(tx, doc: dict, kind: str, reason: str, ref: str | None, d_on_hand: int, d_reserved: int,
            now: datetime) -> None:
    stock = doc["stock"]
    tx.db.stock_ledger.insert_one({
        "_id": new_id("led"), "product_id": doc["_id"], "kind": kind, "reason": reason, "ref": ref,
        "delta_on_hand": d_on_hand, "delta_reserved": d_reserved, "on_hand": stock["on_hand"],
        "reserved": stock["reserved"], "available": stock["available"], "at": now,
    }, session=tx.session)


def _move(tx, product_id: str, d_on_hand: int, d_reserved: int, now: datetime,
          guard: dict | None = None) -> dict | None:
    """$inc the counters of one product (available = on_hand - reserved moves
    with them) and its version if `guard` holds; the product after the change, or None."""
    inc = {"stock.on_hand": d_on_hand, "stock.reserved": d_reserved,
           "stock.available": d_on_hand - d_reserved}
    return tx.db.products.find_one_and_update(
        {"_id": product_id, **(guard or {})},
        {"$inc": {**{k: v for k, v in inc.items() if v}, "version": 1}, "$set": {"updated_at": now}},
        projection=STOCK_FIELDS, return_document=AFTER, session=tx.session)


def stock_level(doc: dict) -> dict:
    """The whole stock level every stock event carries, as of the product's version."""
    stock = doc["stock"]
    return {"product_id": doc["_id"], "on_hand": stock["on_hand"],
            "available": max(stock["available"], 0), "threshold": stock["threshold"],
            "low": stock["low"], "version": doc["version"]}


def check_low_stock(tx, doc: dict) -> str | None:
    """Emit `stock_ran_low` / `stock_replenished` if this change crossed the
    threshold. The flag flips with a conditional update (and a version of its
    own), so two changes racing across the line fire the event once."""
    stock = doc["stock"]
    event = domain.low_stock_transition(stock["available"], stock["threshold"], stock["low"])
    if event is None:
        return None
    low = event == "stock_ran_low"
    flipped = tx.db.products.find_one_and_update(
        {"_id": doc["_id"], "stock.low": not low}, {"$set": {"stock.low": low}, "$inc": {"version": 1}},
        projection=STOCK_FIELDS, return_document=AFTER, session=tx.session)
    if flipped is None:
        return None
    tx.emit(event, stock_level(flipped))
    return event


def adjust(tx, product_id: str, delta: int, reason: str, now: datetime) -> tuple[dict, str | None]:
    """An operator's change of stock on hand; reserved units cannot be removed."""
    if delta == 0:
        raise ValidationFailed.field("delta", "must not be zero")
    guard = {"stock.available": {"$gte": -delta}} if delta < 0 else None
    doc = _move(tx, product_id, delta, 0, now, guard)
    if doc is None:
        if tx.db.products.count_documents({"_id": product_id}, session=tx.session) == 0:
            raise NotFound(f"no product {product_id}", {"field": "product_id", "product_id": product_id})
        raise ValidationFailed.field("delta", "would make stock negative")
    _ledger(tx, doc, "adjust", reason, None, delta, 0, now)
    tx.emit("stock_adjusted", {**stock_level(doc), "delta": delta, "reason": reason})
    return doc, check_low_stock(tx, doc)


def reserve_order(tx, order_id: str, lines: list[dict], now: datetime, ttl_seconds: int,
                  member_id: str | None = None) -> tuple[str, list[str]]:
    """Reserve every line of an order, or none of them.

    Each line is a conditional `$inc` guarded by `available >= quantity` (and
    the product being published); if any line is short, the lines already
    taken are given back inside the same transaction, so the commit holds
    nothing for the order. Returns (outcome, low-stock events fired)."""
    existing = tx.db.reservations.find_one({"_id": order_id}, {"state": 1}, session=tx.session)
    action = domain.on_order_placed(existing and existing["state"])
    if action == "skip_cancelled":
        return "skipped_cancelled", []
    if action == "skip":
        return "duplicate", []
    wanted = domain.merge_lines(lines)
    taken: list[tuple[str, int, dict]] = []
    short: list[tuple[str, int]] = []
    for product_id, quantity in wanted:
        doc = _move(tx, product_id, 0, quantity, now,
                    {"status": domain.PUBLISHED, "stock.available": {"$gte": quantity}})
        if doc is None:
            short.append((product_id, quantity))
        else:
            taken.append((product_id, quantity, doc))
    record = {"_id": order_id, "member_id": member_id, "created_at": now, "paid": False,
              "lines": [{"product_id": pid, "quantity": qty} for pid, qty in wanted]}
    if short:
        for product_id, quantity, _ in taken:
            _move(tx, product_id, 0, -quantity, now)
        ids = [pid for pid, _ in short]
        available = {d["_id"]: (d["stock"]["available"] if d["status"] == domain.PUBLISHED else 0)
                     for d in tx.db.products.find({"_id": {"$in": ids}}, STOCK_FIELDS, session=tx.session)}
        short_lines = domain.short_lines(short, available)
        tx.db.reservations.insert_one({**record, "state": domain.FAILED, "short_lines": short_lines},
                                      session=tx.session)
        tx.emit("stock_reservation_failed", {"order_id": order_id, "short_lines": short_lines})
        return "failed", []
    fired = []
    for _product_id, quantity, doc in taken:
        _ledger(tx, doc, "reserve", "order_placed", order_id, 0, quantity, now)
        event = check_low_stock(tx, doc)
        if event:
            fired.append(event)
    tx.db.reservations.insert_one({
        **record, "state": domain.RESERVED,
        "expires_at": domain.reservation_expires_at(now, ttl_seconds)}, session=tx.session)
    tx.emit("stock_reserved", {"order_id": order_id, "lines": record["lines"]})
    return "reserved", fired


def release(tx, order_id: str, new_state: str, reason: str, now: datetime,
            expect: dict | None = None) -> list[str] | None:
    """Give an order's held stock back, once: the reservation is claimed with
    a conditional update on its `reserved` state. None if nothing was held."""
    claimed = tx.db.reservations.find_one_and_update(
        {"_id": order_id, "state": domain.RESERVED, **(expect or {})},
        {"$set": {"state": new_state, "released_at": now, "release_reason": reason}},
        session=tx.session)
    if claimed is None:
        return None
    fired = []
    for line in claimed["lines"]:
        doc = _move(tx, line["product_id"], 0, -line["quantity"], now)
        if doc is None:
            continue
        _ledger(tx, doc, "release", reason, order_id, 0, -line["quantity"], now)
        event = check_low_stock(tx, doc)
        if event:
            fired.append(event)
    tx.emit("stock_released", {"order_id": order_id, "lines": claimed["lines"], "reason": reason})
    return fired


def cancel_order(tx, order_id: str, now: datetime) -> tuple[str, list[str]]:
    """`order_cancelled`: release what is held, or leave a tombstone when the
    cancellation arrives before the placement."""
    existing = tx.db.reservations.find_one({"_id": order_id}, {"state": 1}, session=tx.session)
    action = domain.on_order_cancelled(existing and existing["state"])
    if action == "tombstone":
        tx.db.reservations.insert_one({"_id": order_id, "state": domain.CANCELLED, "lines": [],
                                       "created_at": now, "paid": False}, session=tx.session)
        return "tombstone", []
    if action == "release":
        fired = release(tx, order_id, domain.RELEASED, "order_cancelled", now)
        return ("released", fired) if fired is not None else ("skip", [])
    if action == "close":
        tx.db.reservations.update_one({"_id": order_id, "state": domain.FAILED},
                                      {"$set": {"cancelled_at": now}}, session=tx.session)
    return "skip", []


def commit_shipment(tx, order_id: str, shipped_lines: list[dict], now: datetime) -> str:
    """`shipment_dispatched`: the reserved units leave (on_hand and reserved
    drop). If the reservation had already been given back, the goods still
    left, so on_hand (and available) drop instead."""
    existing = tx.db.reservations.find_one({"_id": order_id}, session=tx.session)
    action = domain.on_shipment_dispatched(existing and existing["state"])
    if action == "skip":
        return "skip"
    claimed = tx.db.reservations.find_one_and_update(
        {"_id": order_id, "state": existing["state"]},
        {"$set": {"state": domain.COMMITTED, "committed_at": now}}, session=tx.session)
    if claimed is None:
        return "skip"
    if action == "commit":
        moves = [(line["product_id"], line["quantity"], line["quantity"]) for line in claimed["lines"]]
    else:
        moves = [(pid, qty, 0) for pid, qty in domain.merge_lines(shipped_lines)]
    for product_id, quantity, reserved in moves:
        doc = _move(tx, product_id, -quantity, -reserved, now)
        if doc is None:
            continue
        _ledger(tx, doc, "commit", "shipment_dispatched", order_id, -quantity, -reserved, now)
        if not reserved:
            check_low_stock(tx, doc)
    return action


def restock_return(tx, return_id: str, order_id: str, lines: list[dict], now: datetime) -> bool:
    """`return_received`: resellable units go back on hand; every returned
    unit comes off the product's sales counter. Once per return."""
    if tx.db.returns_received.find_one({"_id": return_id}, session=tx.session):
        return False
    tx.db.returns_received.insert_one({"_id": return_id, "order_id": order_id, "at": now},
                                      session=tx.session)
    for line in lines:
        quantity = int(line["quantity"])
        tx.db.products.update_one({"_id": line["product_id"]}, {"$inc": {"sales": -quantity}},
                                  session=tx.session)
        if line.get("condition") != "resellable":
            continue
        doc = _move(tx, line["product_id"], quantity, 0, now)
        if doc is None:
            continue
        _ledger(tx, doc, "restock", "return_received", return_id, quantity, 0, now)
        check_low_stock(tx, doc)
    return True


def record_paid(tx, order_id: str, lines: list[dict], now: datetime) -> None:
    """`order_paid`: the units count as sold, and the reservation reached its
    verdict (the TTL backstop no longer applies)."""
    for product_id, quantity in domain.merge_lines(lines):
        tx.db.products.update_one({"_id": product_id}, {"$inc": {"sales": quantity}}, session=tx.session)
    tx.db.reservations.update_one({"_id": order_id}, {"$set": {"paid": True, "paid_at": now}},
                                  session=tx.session)


def expiry_candidates(db, now: datetime, limit: int = 200) -> list[str]:
    return [d["_id"] for d in db.reservations.find(
        {"state": domain.RESERVED, "paid": False, "expires_at": {"$lte": now}}, {"_id": 1}).limit(limit)]


def expire(tx, order_id: str, now: datetime) -> bool:
    """Release one reservation whose order never reached a verdict in time.
    The claim's filter repeats the expiry rule, so replicas racing on the
    same reservation release it once."""
    fired = release(tx, order_id, domain.EXPIRED, "reservation_expired", now,
                    expect={"paid": False, "expires_at": {"$lte": now}})
    return fired is not None
