"""The shapes the member service's answers take: plain JSON-safe dicts with `id`
and ISO times, composed from stored documents (read by store.py) and the settings."""
from __future__ import annotations

from datetime import datetime

from services.member import domain
from services.member.config import MemberConfig
from shared.clock import as_utc, to_iso


def iso(value: datetime | None) -> str | None:
    return to_iso(as_utc(value)) if value is not None else None


def member_view(doc: dict, config: MemberConfig, now: datetime, window_spend: int) -> dict:
    tier = config.tiers.get(doc["tier"])
    view = {
        "id": doc["_id"],
        "member_id": doc["_id"],
        "erased": bool(doc.get("erased")),
        "tier": tier.name,
        "tier_discount_percent": tier.discount_percent,
        "tier_points_multiplier": str(tier.multiplier),
        "tier_progress": config.tiers.progress(window_spend),
        "points_balance": doc.get("points_balance", 0),
        "orders_count": doc.get("orders_count", 0),
        "version": doc.get("version", 0),
        "registered_at": iso(doc["registered_at"]),
        "updated_at": iso(doc.get("updated_at")),
        "last_order_at": iso(doc.get("last_order_at")),
        "segment": domain.segment_of(as_utc(doc["registered_at"]),
                                     as_utc(doc["last_order_at"]) if doc.get("last_order_at") else None,
                                     now, config.segments),
    }
    if doc.get("erased"):
        view["erased_at"] = iso(doc.get("erased_at"))
        return view
    view.update({
        "email": doc["email"], "name": doc["name"], "phone": doc.get("phone"),
        "birth_year": doc.get("birth_year"), "gender": doc.get("gender"),
        "region": doc.get("region"), "interests": list(doc.get("interests") or []),
        "consent": {ch: {"granted": c["granted"], "at": iso(c["at"])}
                    for ch, c in doc.get("consent", {}).items()},
    })
    return view


def consent_history_view(history: list[dict]) -> list[dict]:
    return [{"channel": h["channel"], "granted": h["granted"], "at": iso(h["at"]), "source": h["source"]}
            for h in history]


def ledger_entry_view(entry: dict) -> dict:
    return {"id": entry["_id"], "kind": entry["kind"], "points": entry["points"],
            "balance": entry["balance"], "order_id": entry.get("order_id"),
            "reason": entry.get("reason"), "request_id": entry.get("request_id"),
            "at": iso(entry["at"])}


def points_view(member: dict, entries: list[dict], expiring: list[dict]) -> dict:
    return {"id": member["_id"], "member_id": member["_id"], "balance": member.get("points_balance", 0),
            "entries": [ledger_entry_view(e) for e in entries],
            "expiring": [{"points": lot["remaining"], "expires_at": iso(lot["expires_at"]),
                          "order_id": lot.get("order_id")} for lot in expiring]}


def segment_entry(doc: dict, now: datetime, config: MemberConfig) -> dict:
    last = as_utc(doc["last_order_at"]) if doc.get("last_order_at") else None
    return {
        "id": doc["_id"], "member_id": doc["_id"],
        "segment": domain.segment_of(as_utc(doc["registered_at"]), last, now, config.segments),
        "rfm": domain.rfm_scores(last, doc.get("orders_count", 0), doc.get("net_spend", 0), now, config.rfm),
        "tier": doc["tier"], "last_order_at": iso(last), "orders_count": doc.get("orders_count", 0),
        "net_spend": doc.get("net_spend", 0), "registered_at": iso(doc["registered_at"]),
    }


def segment_page_view(name: str, page: int, page_size: int, total: int, docs: list[dict],
                      now: datetime, config: MemberConfig) -> dict:
    return {"segment": name, "page": page, "page_size": page_size, "total": total, "as_of": to_iso(now),
            "items": [segment_entry(doc, now, config) for doc in docs]}
