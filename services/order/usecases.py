"""The order service layer: each use case validates, calls the pure domain through the
store in one transaction (state + outbox), and returns a plain dict.

Payment and refunds talk to an external provider, so they never run inside a MongoDB
transaction. Both are two-step and crash-safe:
1. the transaction that makes money due commits first (`confirmed` with the payment
   due now; or a `pending` refund row);
2. an attempt claims a lease with a conditional update (one replica wins), calls the
   provider with an idempotency key (the order id; the refund id), then records the
   result in a second transaction, conditional on still holding that attempt.
A crash between the provider call and the record leaves the order `confirmed` (the
refund `pending`) with a lease that expires; the retry timer then claims it again and
the provider answers the same capture/refund for the same key: recorded once, never
charged twice."""
from __future__ import annotations

import hashlib
from datetime import datetime

from pymongo.errors import DuplicateKeyError

from services.order import metrics, schemas
from services.order.config import OrderSettings
from services.order.domain import order as domain
from services.order.domain import payment as payment_rules
from services.order.domain import pricing, returns, states
from services.order.domain.payment import ChargeResult
from services.order.readmodels import PUBLISHED, ReadModels
from services.order.store import OrderRepo, RefundRepo
from shared.clock import to_iso
from shared.errors import Conflict, NotFound, ServiceTimeout, ServiceUnavailable, ShopError, ValidationFailed
from shared.ids import new_id
from shared.observability.logs import get_logger
from shared.validation import load

log = get_logger(__name__)


def order_id_for(member_id: str, idempotency_key: str | None) -> str:
    """A retried place_order with the same key gets the same order id, so its pricing call
    reserves the coupon for that one order and its insert collides on the unique index."""
    if not idempotency_key:
        return new_id("ord")
    digest = hashlib.sha256(f"{member_id}\x00{idempotency_key}".encode()).hexdigest()
    return f"ord_k{digest[:25]}"


class OrderWorkflow:
    def __init__(self, store, *, catalog, member, marketing, provider, settings: OrderSettings,
                 currency: str):
        self.store = store
        self.db = store.db
        self.marketing = marketing
        self.provider = provider
        self.settings = settings
        self.currency = currency
        self.read = ReadModels(self.db, catalog, member)

    # -- pricing ----------------------------------------------------------------------
    def _price(self, member_id: str, lines: list[dict], coupon_code: str | None, now: datetime,
               order_id: str | None = None) -> dict:
        products = self.read.products([line["product_id"] for line in lines], now)
        problems: dict = {}
        requested = []
        for index, line in enumerate(lines):
            product = products.get(line["product_id"])
            if product is None:
                problems[str(index)] = {"product_id": ["unknown product"]}
            elif product.get("status") != PUBLISHED:
                problems[str(index)] = {"product_id": ["product is not on sale"]}
            elif product.get("currency", self.currency) != self.currency:
                problems[str(index)] = {"product_id": [f"product is not priced in {self.currency}"]}
            else:
                requested.append({"product_id": line["product_id"], "category": product["category"],
                                  "unit_price": product["price"], "quantity": line["quantity"]})
        if problems:
            raise ValidationFailed.fields({"lines": problems}, "Some lines cannot be ordered.")
        tier = self.read.tier(member_id, now)
        try:
            answer = self.marketing.price_cart(member_id, requested, coupon_code=coupon_code, tier=tier,
                                               order_id=order_id)
        except ServiceTimeout:
            raise ServiceUnavailable("marketing did not price the cart in time; try again",
                                     {"service": "marketing"}) from None
        except (Conflict, NotFound) as exc:
            if coupon_code:
                raise ValidationFailed.field("coupon_code", exc.message or "coupon does not apply") from None
            raise
        coupon = answer.get("coupon") if isinstance(answer, dict) else None
        if coupon_code and isinstance(coupon, dict) and (coupon.get("valid") is False
                                                         or coupon.get("applied") is False):
            raise ValidationFailed.field("coupon_code", coupon.get("reason") or "coupon does not apply")
        if coupon_code and isinstance(answer, dict) and answer.get("coupon_applied") is False:
            raise ValidationFailed.field("coupon_code",
                                         answer.get("coupon_reason") or "coupon does not apply")
        try:
            return pricing.price_lines(requested, answer, self.settings.shipping)
        except pricing.PricingError as exc:
            log.error("marketing_price_inconsistent", error=str(exc))
            raise ServiceUnavailable("the cart could not be priced consistently",
                                     {"service": "marketing"}) from None

    def quote(self, payload: dict, now: datetime) -> dict:
        data = load(schemas.Quote(), payload)
        priced = self._price(data["member_id"], data["lines"], data["coupon_code"], now)
        return {"id": None, "member_id": data["member_id"], "coupon_code": data["coupon_code"],
                "currency": self.currency, **priced}

    # -- placing ----------------------------------------------------------------------
    def place_order(self, payload: dict, now: datetime) -> dict:
        data = load(schemas.PlaceOrder(), payload)
        repo = OrderRepo(self.db)
        key = data["idempotency_key"]
        if key:
            existing = repo.by_idempotency_key(data["member_id"], key)
            if existing is not None:
                return self.view(existing)
        order_id = order_id_for(data["member_id"], key)
        if not key and repo.find(order_id):  # pragma: no cover - random ids do not collide
            raise Conflict("order id collision; retry")
        try:
            priced = self._price(data["member_id"], data["lines"], data["coupon_code"], now, order_id)
            order = domain.new_order(order_id, data["member_id"], priced, currency=self.currency,
                                     shipping_address=data["shipping_address"], payment=data["payment"],
                                     coupon_code=data["coupon_code"], idempotency_key=key,
                                     attribution=data["attribution"], now=now)
            with self.store.transaction() as tx:
                OrderRepo(tx.db, tx.session).insert(order)
                tx.emit("order_placed", domain.placed_event(order))
        except (ShopError, DuplicateKeyError):
            # The same call running twice at once (a caller's retry, or a request the broker
            # redelivered while its first delivery still ran): the other run placed the order
            # after our check above. Its order is the answer, whatever has become of it since;
            # a coupon already released with that closed order must not fail the repeat.
            existing = repo.by_idempotency_key(data["member_id"], key) if key else None
            if existing is None:
                raise
            metrics.PLACE_ORDER_REPEATS.inc()
            return self.view(existing)
        metrics.ORDERS_PLACED.inc()
        log.info("order_placed", order_id=order_id, total=order["total"])
        return self.view(order)

    # -- saga -------------------------------------------------------------------------
    def on_stock_reserved(self, data: dict, now: datetime) -> None:
        with self.store.transaction() as tx:
            repo = OrderRepo(tx.db, tx.session)
            order = repo.find(data["order_id"])
            if order is None:
                log.warning("stock_reserved_unknown_order", order_id=data["order_id"])
                return
            events = domain.confirm(order, now)
            if events:
                self._save(tx, repo, order, events)
        # After the confirm committed, outside its transaction (see module docstring); also
        # on a re-run whose confirm was applied before: claiming the capture is conditional,
        # so only a capture that is due now is attempted, once.
        self.attempt_payment(order["id"], now)

    def on_stock_reservation_failed(self, data: dict, now: datetime) -> None:
        with self.store.transaction() as tx:
            repo = OrderRepo(tx.db, tx.session)
            order = repo.find(data["order_id"])
            if order is None:
                return
            events = domain.reject(order, data["short_lines"], now)
            if events:
                self._save(tx, repo, order, events)

    def on_shipment(self, event_type: str, data: dict, now: datetime) -> None:
        with self.store.transaction() as tx:
            repo = OrderRepo(tx.db, tx.session)
            order = repo.find(data["order_id"])
            if order is None:
                return
            shipment = {"shipment_id": data.get("shipment_id"), "warehouse_id": data.get("warehouse_id"),
                        "carrier": data.get("carrier"), "tracking_number": data.get("tracking_number")}
            before = order["status"]
            events = domain.shipment_progress(order, event_type, now, shipment)
            if order["status"] != before:
                self._save(tx, repo, order, events)
            elif before in (states.CANCELLED, states.REJECTED):
                log.warning("shipment_event_for_closed_order", order_id=order["id"], event_type=event_type)

    # -- payment ----------------------------------------------------------------------
    def attempt_payment(self, order_id: str, now: datetime) -> str | None:
        """One capture attempt if one is due; returns the outcome, None if nothing was due."""
        repo = OrderRepo(self.db)
        claimed = repo.claim_payment(order_id, now, now + self.settings.lease)
        if claimed is None:
            return None
        attempt = claimed["payment"]["attempts"]
        try:
            result = self.provider.charge(order_id, claimed["total"], claimed["currency"],
                                          claimed["payment"]["token"])
        except Exception as exc:  # an adapter failure counts as a provider error
            log.warning("payment_provider_error", order_id=order_id, error=type(exc).__name__)
            result = ChargeResult(payment_rules.ERROR, type(exc).__name__)
        metrics.PAYMENT_ATTEMPTS.labels(result.outcome).inc()
        with self.store.transaction() as tx:
            repo = OrderRepo(tx.db, tx.session)
            order = repo.get(order_id)
            if order["status"] != states.CONFIRMED or order["payment"]["attempts"] != attempt:
                return None  # another attempt took over after our lease ran out
            events = payment_rules.apply_charge(order, result, now, self.settings.retry)
            self._save(tx, repo, order, events)
        log.info("payment_attempted", order_id=order_id, outcome=result.outcome, attempt=attempt)
        return result.outcome

    def run_payment_retries(self, now: datetime) -> dict:
        outcomes: dict[str, int] = {}
        for order_id in OrderRepo(self.db).payments_due(now):
            outcome = self.attempt_payment(order_id, now)
            if outcome:
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
        return outcomes

    # -- cancellation and expiry ------------------------------------------------------
    def cancel_order(self, payload: dict, now: datetime) -> dict:
        data = load(schemas.CancelOrder(), payload)
        reason = data["reason"] if data["reason"] in ("member", "operator") else "member"
        with self.store.transaction() as tx:
            repo = OrderRepo(tx.db, tx.session)
            order = repo.get(data["order_id"])
            try:
                events, refund = domain.cancel(order, reason, now)
            except domain.OrderRuleBroken as exc:
                raise Conflict(str(exc), {"order_id": order["id"], "status": order["status"]}) from None
            if data["reason"] != reason:
                order["cancel_note"] = data["reason"]
            refund_id = self._stage_refund(tx, order, refund, now) if refund else None
            self._save(tx, repo, order, events)
        metrics.ORDERS_CANCELLED.labels(reason).inc()
        if refund_id:
            self.process_refund(refund_id, now)
        return self.get_order(order["id"])

    def run_expiry(self, now: datetime) -> int:
        cutoff = to_iso(now - self.settings.expiry)
        expired = 0
        for order_id in OrderRepo(self.db).expiry_candidates(cutoff):
            with self.store.transaction() as tx:
                repo = OrderRepo(tx.db, tx.session)
                order = repo.get(order_id)
                if not domain.expired(order, now, self.settings.expiry):
                    continue
                events, _ = domain.cancel(order, "expired", now)
                self._save(tx, repo, order, events)
            expired += 1
            metrics.ORDERS_CANCELLED.labels("expired").inc()
            log.info("order_expired", order_id=order_id)
        return expired

    # -- returns and refunds ----------------------------------------------------------
    def request_return(self, payload: dict, now: datetime) -> dict:
        data = load(schemas.RequestReturn(), payload)
        return_id = new_id("ret")
        with self.store.transaction() as tx:
            repo = OrderRepo(tx.db, tx.session)
            order = repo.get(data["order_id"])
            try:
                events = returns.request_return(order, return_id, data["lines"], data["reason"], now,
                                                self.settings.return_window)
            except domain.OrderRuleBroken as exc:
                if exc.field and exc.field.startswith("lines"):
                    raise ValidationFailed.field(exc.field, str(exc)) from None
                raise Conflict(str(exc), {"order_id": order["id"], "status": order["status"]}) from None
            self._save(tx, repo, order, events)
        metrics.RETURNS_REQUESTED.inc()
        ret = next(r for r in order["returns"] if r["id"] == return_id)
        return {"order_id": order["id"], **ret}

    def on_return_received(self, data: dict, now: datetime) -> None:
        wanted_id = order_refund_id(data["return_id"])
        with self.store.transaction() as tx:
            repo = OrderRepo(tx.db, tx.session)
            order = repo.find(data["order_id"])
            if order is None:
                return
            refund = returns.receive_return(order, data["return_id"], data["lines"], wanted_id, now)
            known = any(r["id"] == data["return_id"] for r in order["returns"])
            if refund:
                self._stage_refund(tx, order, refund, now, refund_id=wanted_id)
            if known:
                repo.save(order)
        # Also on a re-run whose first step was applied before: claiming the refund is
        # conditional, so a pending refund is paid out once and a settled one is left alone.
        self.process_refund(wanted_id, now)

    def _stage_refund(self, tx, order: dict, refund: dict, now: datetime,
                      refund_id: str | None = None) -> str:
        refund_id = refund_id or new_id("rfd")
        RefundRepo(tx.db, tx.session).insert({
            "id": refund_id, "order_id": order["id"], "member_id": order["member_id"],
            "return_id": refund["return_id"], "reason": refund["reason"], "amount": refund["amount"],
            "currency": order["currency"], "lines": refund["lines"], "payment_ref": order["payment"]["ref"],
            "state": "pending", "attempts": 0, "next_attempt_at": now, "lease_until": None,
            "requested_at": to_iso(now)})
        return refund_id

    def process_refund(self, refund_id: str, now: datetime) -> bool:
        refunds = RefundRepo(self.db)
        claimed = refunds.claim(refund_id, now, now + self.settings.lease)
        if claimed is None:
            return False
        try:
            record = self.provider.refund(refund_id, claimed["payment_ref"], claimed["amount"],
                                          claimed["currency"])
        except Exception as exc:
            log.warning("refund_provider_error", refund_id=refund_id, error=type(exc).__name__)
            self.db.refunds.update_one(
                {"_id": refund_id, "state": "pending"},
                {"$set": {"lease_until": None,
                          "next_attempt_at": now + self.settings.retry.delay(claimed["attempts"])}})
            return False
        with self.store.transaction() as tx:
            if not RefundRepo(tx.db, tx.session).mark_done(refund_id, record, now):
                return False
            repo = OrderRepo(tx.db, tx.session)
            order = repo.get(claimed["order_id"])
            order.setdefault("payments", []).append(record)
            events = returns.complete_refund(order, claimed, now)
            self._save(tx, repo, order, events)
        metrics.REFUNDS.labels(claimed["reason"]).inc()
        log.info("order_refunded", order_id=claimed["order_id"], refund_id=refund_id,
                 amount=claimed["amount"])
        return True

    def run_refunds(self, now: datetime) -> int:
        return sum(1 for refund_id in RefundRepo(self.db).due(now) if self.process_refund(refund_id, now))

    # -- members ----------------------------------------------------------------------
    def on_member_erased(self, data: dict, now: datetime) -> None:
        with self.store.transaction() as tx:
            redacted = OrderRepo(tx.db, tx.session).redact_member(data["member_id"])
            tx.db.members.update_one({"_id": data["member_id"]},
                                     {"$set": {"erased": True, "erased_at": to_iso(now)}},
                                     upsert=True, session=tx.session)
        log.info("member_orders_redacted", member_id=data["member_id"], orders=redacted)

    # -- reads ------------------------------------------------------------------------
    def get_order(self, order_id: str) -> dict:
        order = OrderRepo(self.db).get(order_id)
        return self.view(order, RefundRepo(self.db).of_order(order_id))

    def list_orders(self, payload: dict) -> dict:
        data = load(schemas.ListOrders(), payload)
        orders, total = OrderRepo(self.db).list(**data)
        return {"items": [self.view(o) for o in orders], "total": total, "page": data["page"],
                "page_size": data["page_size"]}

    def view(self, order: dict, refunds: list[dict] | None = None) -> dict:
        out = {k: v for k, v in order.items() if k not in ("version", "payment")}
        pay = order["payment"]
        out["payment"] = {"method": pay.get("method"), "state": pay.get("state"),
                          "attempts": pay.get("attempts"), "ref": pay.get("ref"),
                          "last_error": pay.get("last_error"),
                          "next_attempt_at": _iso(pay.get("next_attempt_at"))}
        if refunds is not None:
            out["refunds"] = [{k: (_iso(v) if isinstance(v, datetime) else v) for k, v in r.items()
                               if k not in ("lease_until", "payment_ref")} for r in refunds]
        return out

    # -- helpers ----------------------------------------------------------------------
    def _save(self, tx, repo: OrderRepo, order: dict, events: list[tuple]) -> None:
        repo.save(order)
        for event_type, data in events:
            tx.emit(event_type, data)
            if event_type.startswith("order_") and event_type not in ("order_refunded",):
                metrics.TRANSITIONS.labels(event_type).inc()


def order_refund_id(return_id: str) -> str:
    """One refund per return: its id follows from the return's."""
    return f"rfd_{return_id.split('_', 1)[-1]}"


def _iso(value):
    return to_iso(value) if isinstance(value, datetime) else value
