"""Payment provider adapters. A provider authorises and captures a whole order total in one
`charge` (idempotent by key: the order id) and pays refunds back (idempotent by refund id).

The built-in `SandboxProvider` keeps its books in a ledger (a MongoDB collection playing
the provider's own database, shared by every replica; a dict in unit tests):
- tokens starting with `tok_decline` are declined;
- tokens starting with `tok_timeout` time out before the provider processes anything on
  the first N attempts for that key, then are approved: `tok_timeout` → N = 1,
  `tok_timeout_3` → N = 3 (a large N exercises "retries exhausted → cancelled");
- every other token is approved.
A repeated `charge` with the same key returns the first capture: never charged twice.
"""
from __future__ import annotations

import re
from typing import Protocol

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.order.domain.payment import APPROVED, DECLINED, TIMEOUT, ChargeResult
from shared.clock import to_iso, utcnow
from shared.ids import new_id


class PaymentProvider(Protocol):
    name: str

    def charge(self, key: str, amount: int, currency: str, token: str) -> ChargeResult: ...

    def refund(self, key: str, payment_ref: str | None, amount: int, currency: str) -> dict: ...


class ProviderTimeout(Exception):
    """The provider did not answer in time (state unknown until retried by key)."""


class Ledger(Protocol):
    def find(self, key: str) -> dict | None: ...

    def put_if_absent(self, key: str, doc: dict) -> dict: ...

    def bump(self, key: str) -> int: ...


class MemoryLedger:
    """The sandbox's books in memory (unit tests)."""

    def __init__(self):
        self.docs: dict[str, dict] = {}

    def find(self, key):
        return self.docs.get(key)

    def put_if_absent(self, key, doc):
        return self.docs.setdefault(key, doc)

    def bump(self, key):
        counter = self.docs.setdefault(f"attempts:{key}", {"n": 0})
        counter["n"] += 1
        return counter["n"]


class MongoLedger:
    """The sandbox's books in a collection: atomic, shared by every replica."""

    def __init__(self, collection):
        self.collection = collection

    def find(self, key):
        return self.collection.find_one({"_id": key}, {"_id": 0})

    def put_if_absent(self, key, doc):
        try:
            self.collection.insert_one({"_id": key, **doc})
            return doc
        except DuplicateKeyError:
            return self.find(key)

    def bump(self, key):
        doc = self.collection.find_one_and_update({"_id": f"attempts:{key}"}, {"$inc": {"n": 1}},
                                                  upsert=True, return_document=ReturnDocument.AFTER)
        return doc["n"]


_TIMEOUT_TOKEN = re.compile(r"^tok_timeout(?:_(\d+))?")


class SandboxProvider:
    name = "sandbox"

    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def charge(self, key: str, amount: int, currency: str, token: str) -> ChargeResult:
        done = self.ledger.find(f"charge:{key}")
        if done is not None:
            return ChargeResult(done["outcome"], done.get("reason"), list(done["records"]))
        at = to_iso(utcnow())
        if token.startswith("tok_decline"):
            record = {"kind": "authorization", "status": "declined", "ref": new_id("auth"),
                      "amount": amount, "currency": currency, "at": at, "provider": self.name,
                      "idempotency_key": key}
            done = self.ledger.put_if_absent(f"charge:{key}", {
                "outcome": DECLINED, "reason": "card_declined", "records": [record]})
            return ChargeResult(done["outcome"], done.get("reason"), list(done["records"]))
        match = _TIMEOUT_TOKEN.match(token)
        if match:
            fails = int(match.group(1) or 1)
            if self.ledger.bump(f"charge:{key}") <= fails:
                return ChargeResult(TIMEOUT, "provider_timeout")
        auth = new_id("auth")
        records = [
            {"kind": "authorization", "status": "approved", "ref": auth, "amount": amount,
             "currency": currency, "at": at, "provider": self.name, "idempotency_key": key},
            {"kind": "capture", "status": "succeeded", "ref": new_id("pay_sandbox"),
             "authorization_ref": auth, "amount": amount, "currency": currency, "at": at,
             "provider": self.name, "idempotency_key": key},
        ]
        done = self.ledger.put_if_absent(f"charge:{key}", {"outcome": APPROVED, "records": records})
        return ChargeResult(done["outcome"], done.get("reason"), list(done["records"]))

    def refund(self, key: str, payment_ref: str | None, amount: int, currency: str) -> dict:
        record = {"kind": "refund", "status": "succeeded", "ref": new_id("rfnd_sandbox"),
                  "payment_ref": payment_ref, "amount": amount, "currency": currency,
                  "at": to_iso(utcnow()), "provider": self.name, "idempotency_key": key}
        return self.ledger.put_if_absent(f"refund:{key}", record)


def build_provider(name: str, db) -> PaymentProvider:
    """The composition root for providers: `ORDER_PAYMENT_PROVIDER` picks one."""
    if name == "sandbox":
        return SandboxProvider(MongoLedger(db["sandbox_provider"]))
    raise ValueError(f"unknown payment provider {name!r}")
