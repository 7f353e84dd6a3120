"""The shape marketing's documents take when they leave the service: JSON-safe
dicts with `id` (datetimes as ISO strings)."""
from __future__ import annotations

from datetime import datetime

from shared.clock import to_iso


def public(doc: dict | None) -> dict | None:
    """A stored document as a JSON-safe dict with `id` (datetimes as ISO strings)."""
    if doc is None:
        return None
    out = {"id": doc["_id"]}
    for key, value in doc.items():
        if key == "_id":
            continue
        out[key] = to_iso(value) if isinstance(value, datetime) else value
    return out
