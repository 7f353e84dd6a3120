"""Transactional notifications (order confirmed, shipped, delivered, cancelled, refunded): sent
once per fact, parked until the order's member is known; and the log of all messages sent."""
from __future__ import annotations

from datetime import datetime

from services.marketing import domain
from services.marketing.channels import ChannelAdapter
from services.marketing.config import MarketingConfig
from services.marketing.store import deliver
from services.marketing.views import public


def notify(tx, config: MarketingConfig, channels: ChannelAdapter, template: str, order_id: str,
           member_id: str | None, values: dict, dedupe_key: str, now: datetime) -> None:
    """Send a transactional message once per `dedupe_key`; park it when the order's member is
    not known yet (order_placed not seen), to send when it arrives."""
    if member_id is None:
        order = tx.db.orders.find_one({"_id": order_id}, session=tx.session)
        member_id = order and order.get("member_id")
    if member_id is None:
        tx.db.parked_notifications.update_one(
            {"_id": dedupe_key},
            {"$setOnInsert": {"order_id": order_id, "template": template, "values": values}},
            upsert=True, session=tx.session)
        return
    member = tx.db.members.find_one({"_id": member_id}, {"erased": 1}, session=tx.session)
    if member and member.get("erased"):
        return
    content = domain.render(domain.TRANSACTIONAL[template], {"order_id": order_id, **values})
    deliver(tx, channels, member_id=member_id, channel=config.transactional_channel,
            kind="transactional", campaign_id=None, content=content, dedupe_key=dedupe_key,
            now=now)


def remember_order(tx, config: MarketingConfig, channels: ChannelAdapter, order_id: str,
                   member_id: str, now: datetime) -> None:
    """Record the order's member and send what was parked waiting for it."""
    tx.db.orders.update_one({"_id": order_id}, {"$set": {"member_id": member_id}}, upsert=True,
                            session=tx.session)
    for parked in list(tx.db.parked_notifications.find({"order_id": order_id}, session=tx.session)):
        tx.db.parked_notifications.delete_one({"_id": parked["_id"]}, session=tx.session)
        notify(tx, config, channels, parked["template"], order_id, member_id, parked["values"],
               parked["_id"], now)


def list_messages(store, member_id=None, campaign_id=None, kind=None) -> list[dict]:
    query = {k: v for k, v in (("member_id", member_id), ("campaign_id", campaign_id),
                               ("kind", kind)) if v is not None}
    return [public(d) for d in store.db.messages.find(query).sort("sent_at", 1).limit(1000)]
