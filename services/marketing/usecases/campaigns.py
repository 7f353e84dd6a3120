"""Campaigns: creating one for a member segment, launching it (the audience is the segment's
members with consent for the channel), and sending in bounded batches (quiet hours, frequency
cap and budget per recipient, one transaction each); unsubscribing from marketing."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from services.marketing import domain, metrics, readmodels, schemas
from services.marketing.channels import ChannelAdapter
from services.marketing.config import MarketingConfig
from services.marketing.store import deliver, get_doc
from services.marketing.views import public
from shared.clock import parse_iso, to_iso
from shared.errors import NotFound, ValidationFailed
from shared.ids import new_id
from shared.storage.readmodel import version_of
from shared.validation import load

DISPATCH_BATCH = 500


def create_campaign(store, config: MarketingConfig, campaign: dict, now: datetime) -> dict:
    data = load(schemas.Campaign(), campaign)
    if data["segment"] not in config.segments:
        raise ValidationFailed.field("segment", f"Unknown segment; one of {sorted(config.segments)}.")
    doc = {"_id": new_id("cmp"), **data, "status": "draft", "created_at": to_iso(now),
           "audience_size": 0, "sent": 0, "spent": 0, "skipped": {}, "next_dispatch_at": None}
    with store.transaction() as tx:
        tx.db.campaigns.insert_one(doc, session=tx.session)
    return public(doc)


def get_campaign(store, campaign_id: str) -> dict:
    return public(get_doc(store.db, "campaigns", campaign_id, f"no campaign {campaign_id}",
                          {"campaign_id": campaign_id}))


def launch_campaign(store, config: MarketingConfig, channels: ChannelAdapter, member,
                    campaign_id: str, now: datetime) -> dict:
    """Launch now, or mark `scheduled` when `scheduled_at` is still ahead (the sweep launches
    it); launching again sends nothing."""
    camp = get_campaign(store, campaign_id)
    if camp["status"] in ("draft", "scheduled"):
        if camp.get("scheduled_at") and parse_iso(camp["scheduled_at"]) > now:
            store.db.campaigns.update_one({"_id": campaign_id, "status": "draft"},
                                          {"$set": {"status": "scheduled"}})
        else:
            launch(store, config, channels, member, campaign_id, now)
    return get_campaign(store, campaign_id)


def dispatch_due(store, config: MarketingConfig, channels: ChannelAdapter, member,
                 now: datetime) -> int:
    """Launch the scheduled campaigns that are due and send the next batch of sending ones."""
    dispatched = 0
    due = store.db.campaigns.find(
        {"$or": [{"status": "sending", "next_dispatch_at": {"$lte": to_iso(now)}},
                 {"status": "scheduled", "scheduled_at": {"$lte": to_iso(now)}}]},
        {"_id": 1, "status": 1})
    for camp in list(due):
        if camp["status"] == "scheduled":
            launch(store, config, channels, member, camp["_id"], now)
        else:
            dispatch(store, config, channels, camp["_id"], now)
        dispatched += 1
    return dispatched


def page_items(result, page: int) -> tuple[list[str], bool]:
    """Member ids of one `member.list_segment` page, read tolerantly (list or paged dict)."""
    if isinstance(result, list):
        items, more = result, bool(result)
    elif isinstance(result, dict):
        items = (result.get("members") or result.get("items") or result.get("member_ids")
                 or result.get("results") or [])
        if "has_more" in result:
            more = bool(result["has_more"])
        elif "next_page" in result:
            more = result["next_page"] is not None
        elif "pages" in result:
            more = page < int(result["pages"] or 0)
        elif "total" in result and result.get("page_size"):
            more = page * int(result["page_size"]) < int(result["total"] or 0)
        else:
            more = bool(items)
    else:
        items, more = [], False
    ids = [i if isinstance(i, str) else (i.get("member_id") or i.get("id")) for i in items]
    return [i for i in ids if i], more


def segment_members(config: MarketingConfig, member, segment: str) -> list[str]:
    """Every member of `segment`, page by page from member (at most the configured pages)."""
    ids: list[str] = []
    for page in range(1, config.segment_page_limit + 1):
        try:
            result = member.list_segment(segment, page)
        except (NotFound, ValidationFailed):
            raise ValidationFailed.field("segment", "member knows no such segment") from None
        items, more = page_items(result, page)
        ids.extend(items)
        if not items or not more:
            break
    return list(dict.fromkeys(ids))


def launch(store, config: MarketingConfig, channels: ChannelAdapter, member, campaign_id: str,
           now: datetime) -> None:
    """Claim the campaign (draft/scheduled → sending, once), record its consenting recipients,
    emit `campaign_launched`, then send the first batch."""
    camp = store.db.campaigns.find_one({"_id": campaign_id})
    members = segment_members(config, member, camp["segment"])
    with store.transaction() as tx:
        claimed = tx.db.campaigns.find_one_and_update(
            {"_id": campaign_id, "status": {"$in": ["draft", "scheduled"]}},
            {"$set": {"status": "sending", "launched_at": to_iso(now),
                      "next_dispatch_at": to_iso(now)}}, session=tx.session)
        if claimed is None:
            return
        known = {m["_id"]: m for m in tx.db.members.find({"_id": {"$in": members}},
                                                        session=tx.session)}
        eligible = [m for m in members if domain.has_consent(known.get(m), camp["channel"])]
        if eligible:
            tx.db.recipients.insert_many(
                [{"_id": f"{campaign_id}|{m}", "campaign_id": campaign_id, "member_id": m,
                  "status": "pending"} for m in eligible], session=tx.session)
        no_consent = len(members) - len(eligible)
        tx.db.campaigns.update_one(
            {"_id": campaign_id},
            {"$set": {"audience_size": len(eligible), "segment_size": len(members),
                      "skipped.no_consent": no_consent}}, session=tx.session)
        tx.emit("campaign_launched", {"campaign_id": campaign_id, "channel": camp["channel"],
                                      "segment": camp["segment"], "audience_size": len(eligible)})
    metrics.CAMPAIGN_SKIPS.labels("no_consent").inc(no_consent)
    dispatch(store, config, channels, campaign_id, now)


def dispatch(store, config: MarketingConfig, channels: ChannelAdapter, campaign_id: str,
             now: datetime) -> None:
    """Send to one batch of pending recipients (nothing during quiet hours: resume at their
    end); the campaign completes when no recipient is left."""
    cfg, db = config, store.db
    camp = db.campaigns.find_one({"_id": campaign_id})
    if camp is None or camp["status"] != "sending":
        return
    if cfg.quiet_hours and cfg.quiet_hours.contains(now, cfg.zone):
        resume = cfg.quiet_hours.ends_after(now, cfg.zone)
        db.campaigns.update_one({"_id": campaign_id, "status": "sending"},
                                {"$set": {"next_dispatch_at": to_iso(resume)}})
        return
    cost = channels.cost(camp["channel"])
    # A bounded batch per round keeps the call short; the timer sends the rest.
    batch = db.recipients.find({"campaign_id": campaign_id, "status": "pending"}).limit(DISPATCH_BATCH)
    for rec in list(batch):
        with store.transaction() as tx:
            _send_one(tx, cfg, channels, camp, rec, cost, now)
    open_ = {"campaign_id": campaign_id, "status": {"$in": ["pending", "sending"]}}
    if not db.recipients.find_one(open_):
        db.campaigns.update_one({"_id": campaign_id, "status": "sending"},
                                {"$set": {"status": "completed", "completed_at": to_iso(now),
                                          "next_dispatch_at": None}})


def _send_one(tx, cfg: MarketingConfig, channels: ChannelAdapter, camp: dict, rec: dict,
              cost: int, now: datetime) -> None:
    """One recipient, inside its transaction: claim it, re-check consent and the frequency cap
    (the member's send log is written here too), pay from the budget, send — or record a skip."""
    campaign_id = camp["_id"]
    if tx.db.recipients.find_one_and_update(
            {"_id": rec["_id"], "status": "pending"}, {"$set": {"status": "sending"}},
            session=tx.session) is None:
        return
    member = tx.db.members.find_one({"_id": rec["member_id"]}, session=tx.session)
    sends = (member or {}).get("marketing_sends") or []
    decision = domain.send_decision(member, camp["channel"], sends, now,
                                    cfg.frequency_cap, cfg.frequency_window)
    if decision == "send":
        guard = {} if camp.get("budget") is None else {"spent": {"$lte": camp["budget"] - cost}}
        paid = tx.db.campaigns.update_one({"_id": campaign_id, **guard},
                                          {"$inc": {"spent": cost, "sent": 1}}, session=tx.session)
        if not paid.matched_count:
            decision = "budget"
    if decision != "send":
        tx.db.recipients.update_one({"_id": rec["_id"]},
                                    {"$set": {"status": "skipped", "reason": decision}},
                                    session=tx.session)
        tx.db.campaigns.update_one({"_id": campaign_id},
                                   {"$inc": {f"skipped.{decision}": 1}}, session=tx.session)
        metrics.CAMPAIGN_SKIPS.labels(decision).inc()
        return
    tx.db.members.update_one(
        {"_id": rec["member_id"]},
        {"$set": {"marketing_sends": domain.record_send(sends, now, cfg.frequency_window)}},
        session=tx.session)
    content = domain.render(camp["template"], {"member_id": rec["member_id"],
                                               "campaign_id": campaign_id})
    message = deliver(tx, channels, member_id=rec["member_id"], channel=camp["channel"],
                      kind="marketing", campaign_id=campaign_id, content=content,
                      dedupe_key=f"campaign:{campaign_id}:{rec['member_id']}", now=now)
    tx.db.recipients.update_one(
        {"_id": rec["_id"]}, {"$set": {"status": "sent", "message_id": message and message["id"]}},
        session=tx.session)


def unsubscribe(store, member, member_id, channel, clock: Callable[[], datetime]) -> dict:
    """Withdraw marketing consent through member (the owner); recorded here at once too,
    at the member's version member answers with, so the `member_consent_changed` it emits
    (the same version) changes nothing and only a later change of consent does."""
    data = load(schemas.Unsubscribe(), {"member_id": member_id, "channel": channel})
    answer = member.update_consent(data["member_id"], data["channel"], False)
    at = to_iso(clock())
    with store.transaction() as tx:
        readmodels.member_update(tx, data["member_id"], readmodels.consent_section(data["channel"]),
                                 {f"consents.{data['channel']}": {"granted": False, "at": at}},
                                 version_of(answer))
    return {"id": data["member_id"], "channel": data["channel"], "granted": False}
