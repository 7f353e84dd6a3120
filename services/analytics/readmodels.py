"""The catalog's data analytics keeps: each product's listing (sku, title, category,
price, currency, status) and stock level (on hand, available, threshold, low), folded
from catalog events. The highest catalog `version` per section wins (the rule of
`shared/readmodel.py`, as one buffered pipeline update: `store.Fold.set_latest`), never
`occurred_at`, so skewed clocks and ties cannot keep an old price."""
from __future__ import annotations

from shared.storage.readmodel import version_of

# A product event carries its whole listing, a stock event the whole stock level (events
# published before versions carry only what their type implies, and count as version 0).
LISTING = ("sku", "title", "category", "price", "currency", "status")
STOCK = ("on_hand", "available", "threshold", "low")


def _listing(f, d, implied: dict) -> None:
    values = {**implied, **{k: d[k] for k in LISTING if d.get(k) is not None}}
    f.set_latest("products", d["product_id"], version_of(d), values, "listing")


def _stock(f, d, implied: dict) -> None:
    values = {**implied, **{k: d[k] for k in STOCK if d.get(k) is not None}}
    f.set_latest("products", d["product_id"], version_of(d), values, "stock")


def product_created(f, d, at):
    _listing(f, d, {})
    f.inc(at, "total", "all", {"products_created": 1})


def product_status(status: str):
    def rule(f, d, at):
        _listing(f, d, {"status": status})
    return rule


def price_changed(f, d, at):
    _listing(f, d, {"price": d["new_price"]})
    f.inc(at, "total", "all", {"price_changes": 1})


def stock_adjusted(f, d, at):
    _stock(f, d, {})


def stock_level(low: bool):
    def rule(f, d, at):
        _stock(f, d, {"low": low})
        f.inc(at, "total", "all", {"stock_ran_low" if low else "stock_replenished": 1})
    return rule
