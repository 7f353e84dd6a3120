"""Idempotent RPC writes: a caller's `request_id` makes a repeated call return
the first call's result instead of applying the write again.

Every `@rpc` method accepts an optional `request_id` keyword (the chassis
takes it off before the method runs). The method's first transaction records
`(service, method, request_id)` together with its effect; the result is stored
on that row once the method returns. A repeat with the same id:
- finds the stored result and returns it (the write is not run again);
- finds the row without a result (the first call is still running, or died
  between its commit and its reply): waits briefly for the result, then
  answers Conflict `request_applied` — the write happened once; read the
  current state instead of writing again.
A method that writes nothing stores its result after it returns, so a read
with a request id is answered from the first call too. A method that raises
a typed error stores nothing: nothing was written, and a repeat runs again."""
from __future__ import annotations

import re
from contextvars import ContextVar

import eventlet
from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from shared.clock import utcnow
from shared.errors import Conflict, ValidationFailed

COLLECTION = "rpc_requests"
RETENTION_SECONDS = 7 * 24 * 3600
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
RESULT_WAIT_SECONDS = 5.0

INDEXES = [IndexModel([("at", ASCENDING)], expireAfterSeconds=RETENTION_SECONDS)]

# {"key": str, "method": str, "recorded": bool} while an RPC with a request id runs.
current_request: ContextVar[dict | None] = ContextVar("current_request", default=None)


class DuplicateRequest(Exception):
    """The request id was already recorded with an applied write."""


def check_request_id(value) -> str:
    if not isinstance(value, str) or not REQUEST_ID.match(value):
        raise ValidationFailed.field("request_id", "Must be 1-128 characters of letters, digits, "
                                                   "'.', '_', ':' or '-'.")
    return value


def request_key(service: str, method: str, request_id: str) -> str:
    return f"{service}.{method}:{request_id}"


def record(db, session, request: dict) -> None:
    """Inside the method's first transaction: record the request with the effect."""
    try:
        db[COLLECTION].insert_one({"_id": request["key"], "method": request["method"],
                                   "at": utcnow(), "done": False}, session=session)
    except DuplicateKeyError:
        raise DuplicateRequest(request["key"]) from None


def stored_result(db, key: str):
    row = db[COLLECTION].find_one({"_id": key})
    return row


def store_result(db, request: dict, result) -> None:
    if request["recorded"]:
        db[COLLECTION].update_one({"_id": request["key"]}, {"$set": {"done": True, "result": result}})
    else:  # nothing was written: remember the answer all the same
        db[COLLECTION].update_one({"_id": request["key"]},
                                  {"$setOnInsert": {"method": request["method"], "at": utcnow(),
                                                    "done": True, "result": result}}, upsert=True)


def replay(db, key: str):
    """The first call's result, waiting a little for a call still in flight."""
    deadline = eventlet.hubs.get_hub().clock() + RESULT_WAIT_SECONDS
    while True:
        row = stored_result(db, key)
        if row is not None and row.get("done"):
            return row.get("result")
        if eventlet.hubs.get_hub().clock() > deadline:
            raise Conflict("this request was already applied; its result is not available — "
                           "read the current state instead of repeating the write",
                           {"code": "request_applied", "request_id": key.split(":", 1)[1]})
        eventlet.sleep(0.05)


def run_once(db, service: str, method: str, request_id, call):
    """Run `call()` at most once per request id (see the module docstring)."""
    if request_id is None:
        return call()
    key = request_key(service, method, check_request_id(request_id))
    row = stored_result(db, key)
    if row is not None:
        return replay(db, key)
    request = {"key": key, "method": f"{service}.{method}", "recorded": False}
    token = current_request.set(request)
    try:
        result = call()
    except DuplicateRequest:
        return replay(db, key)
    finally:
        current_request.reset(token)
    store_result(db, request, result)
    return result
