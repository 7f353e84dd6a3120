"""The member service's use cases: each validates its payload, runs one transaction
(state + outbox) through the store's queries and atomic updates, and returns a plain dict
(views.py). service.py's entrypoints only call these."""
from __future__ import annotations

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

from services.member import domain, metrics, schemas, views
from services.member import store as st
from shared.clock import parse_iso, utcnow
from shared.errors import Conflict
from shared.ids import new_id
from shared.observability.logs import get_logger
from shared.retry import is_transient
from shared.validation import load

log = get_logger(__name__)

MAX_BATCHES = 20


def _now(value: str | None):
    return parse_iso(value) if value else utcnow()


def register_member(store, config, member):
    data = load(schemas.Register(), member)
    email_norm = domain.normalise_email(data["email"])
    if st.email_taken(store.db, email_norm):
        raise st.duplicate_email()
    now = utcnow()
    doc = st.new_member_doc(data, new_id("mem"), now, config.tiers.tiers[0].name)
    try:
        with store.transaction() as tx:
            tx.db.members.insert_one(doc, session=tx.session)
            tx.emit("member_registered", domain.registered_event(doc, config.tiers.get(doc["tier"])))
            for channel, granted in sorted(data["consent"].items()):
                st.record_consent(tx, doc["_id"], channel, granted, now, "registration")
                tx.emit("member_consent_changed", {"member_id": doc["_id"], "channel": channel,
                                                   "granted": granted, "version": doc["version"]})
    except DuplicateKeyError:
        raise st.duplicate_email() from None
    metrics.REGISTRATIONS.inc()
    log.info("member_registered", member_id=doc["_id"])
    return views.member_view(doc, config, now, 0)


def get_member(store, config, member_id, now=None):
    data = load(schemas.MemberRef(), {"member_id": member_id, "now": now})
    at = _now(data["now"])
    doc = st.get_member_doc(store.db, data["member_id"])
    orders = st.window_orders(store.db, doc["_id"], at, config)
    return views.member_view(doc, config, at,
                             domain.window_spend(orders, at, config.tiers.window))


def update_profile(store, config, member_id, changes):
    data = load(schemas.UpdateProfile(), {"member_id": member_id, "changes": changes})
    changes = dict(data["changes"])
    if "email" in changes:
        changes["email_norm"] = domain.normalise_email(changes["email"])
        if st.email_taken(store.db, changes["email_norm"], except_id=data["member_id"]):
            raise st.duplicate_email()
    if "interests" in changes:
        changes["interests"] = domain.normalise_interests(changes["interests"])
    now = utcnow()
    try:
        with store.transaction() as tx:
            st.live_member_doc(tx.db, data["member_id"], tx.session)
            tx.db.members.update_one({"_id": data["member_id"]},
                                     {"$set": {**changes, "updated_at": now}, "$inc": st.BUMP},
                                     session=tx.session)
    except DuplicateKeyError:
        raise st.duplicate_email() from None
    log.info("member_profile_updated", member_id=data["member_id"], fields=sorted(data["changes"]))
    return get_member(store, config, data["member_id"])


def erase_member(store, member_id):
    data = load(schemas.MemberRef(), {"member_id": member_id})
    now = utcnow()
    with store.transaction() as tx:
        st.get_member_doc(tx.db, data["member_id"], tx.session)
        version = st.erase(tx, data["member_id"], now)
        erased_now = version is not None
        if erased_now:
            tx.emit("member_erased", {"member_id": data["member_id"], "version": version})
    doc = st.get_member_doc(store.db, data["member_id"])
    if erased_now:
        metrics.ERASURES.inc()
        log.info("member_erased", member_id=data["member_id"])
    return {"id": doc["_id"], "member_id": doc["_id"], "erased": True,
            "erased_at": views.iso(doc["erased_at"]), "already_erased": not erased_now}


def update_consent(store, member_id, channel, granted):
    data = load(schemas.UpdateConsent(), {"member_id": member_id, "channel": channel, "granted": granted})
    member_id, channel, granted = data["member_id"], data["channel"], data["granted"]
    now = utcnow()
    with store.transaction() as tx:
        doc = st.live_member_doc(tx.db, member_id, tx.session)
        current = doc["consent"][channel]
        changed = current["granted"] != granted
        if changed:
            after = tx.db.members.find_one_and_update(
                {"_id": member_id},
                {"$set": {f"consent.{channel}": {"granted": granted, "at": now}, "updated_at": now},
                 "$inc": st.BUMP},
                projection={"version": 1}, return_document=ReturnDocument.AFTER, session=tx.session)
            st.record_consent(tx, member_id, channel, granted, now, "member")
            tx.emit("member_consent_changed", {"member_id": member_id, "channel": channel,
                                               "granted": granted, "version": after["version"]})
    if changed:
        metrics.CONSENT_CHANGES.labels(channel, str(granted).lower()).inc()
    return {"id": member_id, "member_id": member_id, "channel": channel, "granted": granted,
            "changed": changed, "at": views.iso(now if changed else current["at"]),
            "version": after["version"] if changed else doc.get("version", 0)}


def get_consent(store, member_id):
    data = load(schemas.MemberRef(), {"member_id": member_id})
    doc = st.get_member_doc(store.db, data["member_id"])
    return {"id": doc["_id"], "member_id": doc["_id"],
            "consent": {ch: {"granted": c["granted"], "at": views.iso(c["at"])}
                        for ch, c in doc["consent"].items()},
            "history": views.consent_history_view(st.consent_history(store.db, doc["_id"]))}


def list_contactable(store, channel, member_ids=None, page=1, page_size=100):
    data = load(schemas.ListContactable(), {"channel": channel, "member_ids": member_ids,
                                            "page": page, "page_size": page_size})
    return st.list_contactable(store.db, data["channel"], data["member_ids"], data["page"],
                               data["page_size"])


def get_contact(store, member_id, channel):
    data = load(schemas.ContactRef(), {"member_id": member_id, "channel": channel})
    doc = st.live_member_doc(store.db, data["member_id"])
    if not doc["consent"][data["channel"]]["granted"]:
        raise Conflict("no consent on this channel", {"fields": {"channel": ["no consent"]}})
    address = doc["email"] if data["channel"] == "email" else doc.get("phone")
    if not address:
        raise Conflict("no address for this channel", {"fields": {"channel": ["no address"]}})
    return {"id": doc["_id"], "member_id": doc["_id"], "channel": data["channel"], "address": address}


def get_points(store, member_id, limit=20):
    data = load(schemas.GetPoints(), {"member_id": member_id, "limit": limit})
    member = st.get_member_doc(store.db, data["member_id"])
    entries = st.latest_ledger_entries(store.db, member["_id"], data["limit"])
    return views.points_view(member, entries, st.expiring_lots(store.db, member["_id"], utcnow()))


def redeem_points(store, member_id, points, reason, request_id=None):
    data = load(schemas.RedeemPoints(), {"member_id": member_id, "points": points, "reason": reason,
                                         "request_id": request_id})
    member_id, request_id = data["member_id"], data["request_id"]
    replay = None
    try:
        with store.transaction() as tx:
            if request_id:
                replay = st.find_redeem(tx.db, member_id, request_id, tx.session)
            entry = replay or st.redeem(tx, member_id, data["points"], data["reason"], request_id,
                                        utcnow())
    except DuplicateKeyError:
        replay = entry = st.find_redeem(store.db, member_id, request_id)
    if replay is not None and -replay["points"] != data["points"]:
        raise Conflict("request_id was already used for another amount",
                       {"fields": {"request_id": ["already used with another amount"]}})
    return {**views.ledger_entry_view(entry), "member_id": member_id, "points": -entry["points"],
            "replayed": replay is not None}


def get_segment(store, config, member_id, now=None):
    data = load(schemas.MemberRef(), {"member_id": member_id, "now": now})
    doc = st.get_member_doc(store.db, data["member_id"])
    return {**views.segment_entry(doc, _now(data["now"]), config), "erased": bool(doc.get("erased"))}


def list_segment(store, config, name, page=1, page_size=50, now=None):
    data = load(schemas.ListSegment(), {"name": name, "page": page, "page_size": page_size, "now": now})
    at = _now(data["now"])
    docs, total = st.segment_page(store.db, data["name"], data["page"], data["page_size"], at,
                                  config)
    return views.segment_page_view(data["name"], data["page"], data["page_size"], total, docs, at,
                                   config)


def get_tiers(config):
    """The tier ladder and its benefits (for marketing's pricing and for display)."""
    return {"window_days": config.tiers.window.days,
            "tiers": [{"id": t.name, "name": t.name, "threshold": t.threshold, **t.benefits()}
                      for t in config.tiers.tiers]}


def run_expiry(store, config, now=None):
    data = load(schemas.RunAt(), {"now": now})
    return expire_points(store, config, _now(data["now"]))


def run_tier_review(store, config, now=None):
    data = load(schemas.RunAt(), {"now": now})
    return review_tiers(store, config, _now(data["now"]))


def _each(store, ids, work) -> int:
    """Run `work(tx, id)` in its own transaction per id. A replica racing us
    on the same item loses a write conflict: skip it, the other did it."""
    done = 0
    for item in ids:
        try:
            with store.transaction() as tx:
                if work(tx, item):
                    done += 1
        except PyMongoError as exc:
            if not is_transient(exc):
                raise
            log.warning("maintenance_item_skipped", item_id=item, error=type(exc).__name__)
    return done


def expire_points(store, config, now) -> dict:
    total = {"lots": 0, "points": 0}

    def work(tx, lot_id):
        points = st.expire_lot(tx, lot_id, now)
        total["points"] += points
        return points > 0

    for _ in range(MAX_BATCHES):
        due = st.due_lots(store.db, now, config.batch)
        if not due:
            break
        done = _each(store, due, work)
        total["lots"] += done
        if done == 0:
            break
    return total


def review_tiers(store, config, now) -> dict:
    seen: set[str] = set()
    changed = 0
    for _ in range(MAX_BATCHES):
        due = [m for m in st.members_due_for_review(store.db, now, config.batch)
               if m not in seen]
        if not due:
            break
        seen.update(due)
        changed += _each(store, due, lambda tx, mid: st.refresh_tier(tx, mid, now, config))
    return {"reviewed": len(seen), "changed": changed}


def count_paid(store, config, order_id, member_id, total, merchandise, at, completed: bool) -> None:
    """order_paid counts the spend; order_completed counts it too if order_paid
    never arrived (whichever comes first, once), then earns the points."""
    now = utcnow()
    with store.transaction() as tx:
        order = st.upsert_order(tx, order_id, member_id)
        order = st.mark_paid(tx, order, total, merchandise, at)
        member = tx.db.members.find_one({"_id": member_id}, session=tx.session)
        order = st.sync_counters(tx, order, member)
        if member is None:
            log.warning("order_for_unknown_member", order_id=order_id, member_id=member_id)
            return
        st.refresh_tier(tx, member_id, now, config)
        if completed and order["earned"] is None:
            member = tx.db.members.find_one({"_id": member_id}, session=tx.session)
            points = 0
            if not member.get("erased"):
                points = config.points.earn(domain.points_base(order),
                                                 config.tiers.get(member["tier"]).multiplier)
            if points > 0:
                st.earn(tx, member_id, points, order_id, now, config)
            order = tx.db.orders.find_one_and_update(
                {"_id": order_id, "earned": None}, {"$set": {"earned": points, "completed_at": at}},
                return_document=ReturnDocument.AFTER, session=tx.session)
            _reverse_due(tx, order, now)


def count_refund(store, config, data):
    now = utcnow()
    with store.transaction() as tx:
        order = st.upsert_order(tx, data["order_id"], data["member_id"])
        order = st.add_refund(tx, order, data["refund_id"], data["amount"])
        if order is None:
            return  # this refund was already counted (re-published under a new event id)
        member = tx.db.members.find_one({"_id": data["member_id"]}, session=tx.session)
        order = st.sync_counters(tx, order, member)
        if member is None:
            return
        st.refresh_tier(tx, data["member_id"], now, config)
        _reverse_due(tx, order, now)


def _reverse_due(tx, order, now) -> None:
    if not order.get("earned"):
        return
    due = domain.reversal_due(order["earned"], order["reversed"], domain.points_base(order),
                              order["refunded"])
    if due <= 0:
        return
    sequence = order["reversals"] + 1
    st.reverse(tx, order["member_id"], due, order["_id"], sequence, now)
    tx.db.orders.update_one({"_id": order["_id"]}, {"$inc": {"reversed": due, "reversals": 1}},
                            session=tx.session)
