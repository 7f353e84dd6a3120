"""Stand-ins for marketing's neighbours (real nameko services on the test broker) and helpers."""
from __future__ import annotations

import os

os.environ.setdefault("MARKETING_SWEEP_INTERVAL", "3600")  # tests drive expiry with run_expiry(now)

import pytest  # noqa: E402
from pymongo import ReturnDocument  # noqa: E402

from shared.errors import ValidationFailed  # noqa: E402
from shared.messaging.rpc import rpc  # noqa: E402
from shared.security.guard import Bool, Id, Page, Payload, Text
from shared.service import ShopService  # noqa: E402
from shared.storage.store import Store  # noqa: E402


class FakeMember(ShopService):
    """Plays member: serves `list_segment` pages and `update_consent`, and publishes member events."""

    name = "member"
    store = Store()
    SEGMENTS: dict[str, list[str]] = {}
    PAGE_SIZE = 2

    @rpc(schema={"name": Text(64), "page": Page()})
    def list_segment(self, name, page=1):
        if name not in self.SEGMENTS:
            raise ValidationFailed.field("name", "unknown segment")
        ids = self.SEGMENTS[name]
        start = (page - 1) * self.PAGE_SIZE
        return {"segment": name, "page": page, "page_size": self.PAGE_SIZE, "total": len(ids),
                "items": [{"id": m, "member_id": m} for m in ids[start:start + self.PAGE_SIZE]]}

    @rpc(schema={"member_id": Id(), "channel": Text(32), "granted": Bool()})
    def update_consent(self, member_id, channel, granted):
        envelope = self.emit("member_consent_changed", {"member_id": member_id, "channel": channel,
                                                        "granted": granted})
        return {"member_id": member_id, "channel": channel, "granted": granted,
                "version": envelope["data"]["version"]}

    @rpc(schema={"event_type": Id(), "data": Payload()})
    def emit(self, event_type, data):
        """Publish a member event; like the real owner, each one moves the member's version
        by one (unless the test gives the version itself)."""
        with self.store.transaction() as tx:
            if "version" not in data and "member_id" in data:
                counter = tx.db.versions.find_one_and_update(
                    {"_id": data["member_id"]}, {"$inc": {"version": 1}}, upsert=True,
                    return_document=ReturnDocument.AFTER, session=tx.session)
                data = {**data, "version": counter["version"]}
            envelope = tx.emit(event_type, data)
        return envelope


class FakeOrder(ShopService):
    """Plays order: publishes order events."""

    name = "order"
    store = Store()

    @rpc(schema={"event_type": Id(), "data": Payload()})
    def emit(self, event_type, data):
        with self.store.transaction() as tx:
            envelope = tx.emit(event_type, data)
        return envelope


@pytest.fixture
def marketing(start_service):
    from services.marketing.service import MarketingService

    def start(**extra):
        values = {"MARKETING_QUIET_HOURS": "", **extra}
        return start_service(MarketingService, extra=values)

    return start
