"""Fulfillment's pure business rules: no I/O, `now` always passed in.

Each rule takes the current document (a plain dict) and returns what changes
and which events to emit, as `(event_type, data)` pairs; the service layer
applies them in one transaction with a filter on the state it read."""
from __future__ import annotations

Event = tuple[str, dict]
