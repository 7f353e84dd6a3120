"""What marketing does when an order changes: each handler is one transaction composing the
coupon life (`store.py`), transactional notifications, attribution and the purchase read model."""
from __future__ import annotations

from datetime import datetime

from services.marketing import readmodels
from services.marketing.channels import ChannelAdapter
from services.marketing.config import MarketingConfig
from services.marketing.store import close_order, redeem_reservation
from services.marketing.usecases import attribution
from services.marketing.usecases.notifications import notify, remember_order


def on_order_placed(store, config: MarketingConfig, channels: ChannelAdapter, data: dict,
                    now: datetime) -> None:
    with store.transaction() as tx:
        remember_order(tx, config, channels, data["order_id"], data["member_id"], now)
        attribution.count_referral(tx, data)


def on_order_paid(store, config: MarketingConfig, channels: ChannelAdapter, data: dict,
                  now: datetime) -> None:
    with store.transaction() as tx:
        remember_order(tx, config, channels, data["order_id"], data["member_id"], now)
        redeem_reservation(tx, data["order_id"], now)
        notify(tx, config, channels, "order_confirmed", data["order_id"], data["member_id"],
               {"total": data.get("total")}, f"order_confirmed:{data['order_id']}", now)
        readmodels.count_purchase(tx, data)


def on_order_rejected(store, data: dict, now: datetime) -> None:
    with store.transaction() as tx:
        close_order(tx, data["order_id"], "rejected", now)


def on_order_cancelled(store, config: MarketingConfig, channels: ChannelAdapter, data: dict,
                       now: datetime) -> None:
    with store.transaction() as tx:
        close_order(tx, data["order_id"], "cancelled", now)
        notify(tx, config, channels, "order_cancelled", data["order_id"], data.get("member_id"),
               {"reason": data.get("reason")}, f"order_cancelled:{data['order_id']}", now)


def on_order_completed(store, config: MarketingConfig, channels: ChannelAdapter, data: dict,
                       now: datetime) -> None:
    """Order completes at once on delivery: the "order delivered" notification."""
    with store.transaction() as tx:
        notify(tx, config, channels, "order_delivered", data["order_id"], data["member_id"], {},
               f"order_delivered:{data['order_id']}", now)


def on_order_shipped(store, config: MarketingConfig, channels: ChannelAdapter, data: dict,
                     now: datetime) -> None:
    """`order_shipped` names no member: the notification waits for `order_placed` if need be."""
    with store.transaction() as tx:
        notify(tx, config, channels, "order_shipped", data["order_id"], None, {},
               f"order_shipped:{data['order_id']}", now)


def on_order_refunded(store, config: MarketingConfig, channels: ChannelAdapter, data: dict,
                      now: datetime) -> None:
    """One notification per refund (an order may be refunded more than once)."""
    with store.transaction() as tx:
        notify(tx, config, channels, "order_refunded", data["order_id"], data["member_id"],
               {"amount": data.get("amount"), "currency": data.get("currency")},
               f"order_refunded:{data['refund_id']}", now)
