"""Documents → the plain JSON-safe dicts RPC returns (`id`, ISO times)."""
from __future__ import annotations

from datetime import datetime

from services.fulfillment.domain.shipments import sorted_timeline
from shared.clock import to_iso


def _plain(value):
    if isinstance(value, datetime):
        return to_iso(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _with_id(doc: dict, drop: tuple[str, ...] = ()) -> dict:
    out = {"id": doc["_id"]}
    out.update({k: _plain(v) for k, v in doc.items() if k != "_id" and k not in drop})
    return out


def warehouse(doc: dict) -> dict:
    return _with_id(doc)


def shipment(doc: dict) -> dict:
    out = _with_id(doc, drop=("timeline",))
    out["timeline"] = [_plain({k: v for k, v in e.items() if k != "key"})
                       for e in sorted_timeline(doc.get("timeline", []))]
    return out


def return_record(doc: dict) -> dict:
    return _with_id(doc)


def ticket(doc: dict) -> dict:
    return _with_id(doc)
