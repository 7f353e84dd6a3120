"""Small builders for domain unit tests."""
from datetime import datetime, timezone

from services.order.domain.order import new_order
from services.order.domain.pricing import ShippingPolicy, price_lines

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
ADDRESS = {"name": "Li Wei", "line1": "88 Century Ave", "city": "Shanghai", "region": "Shanghai",
           "postal_code": "200120", "phone": "+8613800138000", "country": "CN"}


def make_order(status="pending", token="tok_visa", lines=None, discount=2000):
    lines = lines or [{"product_id": "prd_a", "category": "apparel", "unit_price": 12900, "quantity": 2},
                      {"product_id": "prd_b", "category": "beauty", "unit_price": 8900, "quantity": 1}]
    priced = price_lines(lines, {"lines": [{"product_id": "prd_a", "discount": discount}],
                                 "discount": discount}, ShippingPolicy(1000, 9900))
    order = new_order("ord_1", "mem_1", priced, currency="CNY", shipping_address=ADDRESS,
                      payment={"token": token}, coupon_code=None, idempotency_key=None,
                      attribution=None, now=NOW)
    order["status"] = status
    return order
