"""The OpenAPI fragments of analytics' HTTP endpoints (tools.openapi builds
docs/openapi.json from them and from the endpoints' registrations)."""
from __future__ import annotations

from services.analytics.schemas import TRACKING_TYPES

_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_OBJECT = {"content": {"application/json": {"schema": {"type": "object"}}}}
_RANGE = [
    {"name": "start", "in": "query", "required": False, "schema": {"type": "string", "format": "date-time"},
     "description": "ISO 8601; default end minus 30 days"},
    {"name": "end", "in": "query", "required": False, "schema": {"type": "string", "format": "date-time"},
     "description": "ISO 8601; default now"},
]
_EVENT = {
    "type": "object", "required": ["event_type", "session_id", "occurred_at"],
    "additionalProperties": True,
    "properties": {
        "event_type": {"type": "string", "enum": list(TRACKING_TYPES)},
        "event_id": {"type": "string", "maxLength": 200,
                     "description": "a client retrying a batch is counted once"},
        "session_id": {"type": "string"},
        "occurred_at": {"type": "string", "description": "ISO 8601; clamped to [now - window, now]"},
        "member_id": {"type": "string", "description": "server-side keys only"},
        "member_token": {"type": "string", "description": "names the member for a browser key"},
    }}

TRACK = {
    "summary": "Collect tracking events (one, a list, or {events: [...]}), signed with a tracking key.",
    "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
        _EVENT, {"type": "array", "items": _EVENT, "minItems": 1},
        {"type": "object", "required": ["events"],
         "properties": {"events": {"type": "array", "items": _EVENT, "minItems": 1}}}]}}}},
    "responses": {"202": {"description": "accepted (and duplicates)", **_OBJECT},
                  "400": {"description": "invalid events, naming each field", **_ERROR},
                  "401": {"description": "no valid key or signature", **_ERROR},
                  "429": {"description": "over the key's rate limit", **_ERROR}},
}
KPIS = {"summary": "The KPIs over a range.", "parameters": _RANGE,
        "responses": {"200": {"description": "the KPIs", **_OBJECT},
                      "400": {"description": "a bad range, naming the field", **_ERROR}}}
_DASHBOARD_RANGE = _RANGE + [
    {"name": "preset", "in": "query", "required": False,
     "schema": {"type": "string", "enum": ["today", "7d", "30d"]}, "description": "a preset range"},
    {"name": "from", "in": "query", "required": False, "schema": {"type": "string", "format": "date"},
     "description": "custom range: first local day (SHOP_TIMEZONE)"},
    {"name": "to", "in": "query", "required": False, "schema": {"type": "string", "format": "date"},
     "description": "custom range: last local day"},
]
DASHBOARD = {"summary": "The HTML dashboard.", "parameters": _DASHBOARD_RANGE,
             "responses": {"200": {"description": "the page",
                                   "content": {"text/html": {"schema": {"type": "string"}}}},
                           "400": {"description": "a bad range, naming the field", **_ERROR}}}
DASHBOARD_DATA = {"summary": "The dashboard's data.", "parameters": _DASHBOARD_RANGE,
                  "responses": {"200": {"description": "series, KPIs, tops, cohorts", **_OBJECT},
                                "400": {"description": "a bad range, naming the field", **_ERROR}}}
SCRIPT = {"summary": "The dashboard's script.", "responses": {"200": {
    "description": "JavaScript", "content": {"application/javascript": {"schema": {"type": "string"}}}}}}
CHART_SCRIPT = {"summary": "Chart.js, served locally (the dashboard works with no network).",
                "responses": {"200": {"description": "JavaScript", "content": {
                    "application/javascript": {"schema": {"type": "string"}}}}}}
