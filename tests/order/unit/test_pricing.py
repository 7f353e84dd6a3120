"""Pricing arithmetic: discount split, shipping fee, rounding, refund shares."""
import pytest

from services.order.domain import pricing
from services.order.domain.pricing import ShippingPolicy, allocate, price_lines, refund_share

SHIP = ShippingPolicy(flat_fee=1000, free_threshold=9900)


def req(pid, price, qty, category="apparel"):
    return {"product_id": pid, "category": category, "unit_price": price, "quantity": qty}


def test_allocate_sums_exactly_and_is_proportional():
    assert allocate(100, [100, 100, 100]) == [34, 33, 33]
    assert allocate(1000, [3000, 1000]) == [750, 250]
    assert sum(allocate(7, [3, 3, 3, 3])) == 7


def test_allocate_largest_remainder_ties_go_to_earlier_lines():
    assert allocate(2, [10, 10, 10]) == [1, 1, 0]


def test_allocate_caps_at_weights_and_handles_zero():
    assert allocate(500, [100, 200]) == [100, 200]
    assert allocate(0, [5, 5]) == [0, 0]
    assert allocate(10, [0, 0]) == [0, 0]
    with pytest.raises(ValueError):
        allocate(-1, [1])


def test_no_discount_below_threshold_pays_flat_fee():
    priced = price_lines([req("a", 2500, 2)], {"lines": [], "discount": 0}, SHIP)
    assert priced["subtotal"] == 5000
    assert priced["shipping_fee"] == 1000
    assert priced["total"] == 6000
    assert priced["lines"][0]["line_total"] == 5000


def test_free_shipping_threshold_applies_to_discounted_subtotal():
    # 100.00 subtotal would ship free, but 5.00 off brings it to 95.00 < 99.00
    priced = price_lines([req("a", 10000, 1)], {"discount": 500}, SHIP)
    assert priced["discount"] == 500 and priced["shipping_fee"] == 1000
    assert priced["total"] == 10000 - 500 + 1000
    exactly = price_lines([req("a", 9900, 1)], {"discount": 0}, SHIP)
    assert exactly["shipping_fee"] == 0


def test_marketing_shipping_offer_can_only_lower_the_fee():
    assert price_lines([req("a", 100, 1)], {"shipping_fee": 0}, SHIP)["shipping_fee"] == 0
    assert price_lines([req("a", 100, 1)], {"shipping_fee": 5000}, SHIP)["shipping_fee"] == 1000
    assert price_lines([req("a", 10000, 1)], {"shipping_fee": 800}, SHIP)["shipping_fee"] == 0


def test_line_discounts_from_marketing_are_kept():
    answer = {"lines": [{"product_id": "a", "discount": 2000,
                         "discounts": [{"promotion_id": "prm_1", "reason": "winter"}]},
                        {"product_id": "b", "discount": 0}], "discount": 2000,
              "discounts": [{"promotion_id": "prm_1", "rule": "percent", "amount": 2000}]}
    priced = price_lines([req("a", 12900, 2), req("b", 8900, 1, "beauty")], answer, SHIP)
    a, b = priced["lines"]
    assert (a["discount"], a["line_total"]) == (2000, 23800)
    assert (b["discount"], b["line_total"]) == (0, 8900)
    assert priced["subtotal"] == 34700 and priced["discount"] == 2000
    assert priced["shipping_fee"] == 0 and priced["total"] == 32700
    assert priced["promotion_ids"] == ["prm_1"]
    assert a["discounts"][0]["reason"] == "winter"


def test_cart_discount_is_split_across_lines_proportionally():
    # a coupon of 10.00 on 3 lines 30.00 / 30.00 / 40.00 that marketing gives cart-wide
    priced = price_lines([req("a", 3000, 1), req("b", 3000, 1), req("c", 4000, 1)],
                         {"lines": [], "discount": 1000}, SHIP)
    assert [line["discount"] for line in priced["lines"]] == [300, 300, 400]
    assert sum(line["line_total"] for line in priced["lines"]) == 9000


def test_cart_discount_split_rounds_by_largest_remainder():
    priced = price_lines([req("a", 1000, 1), req("b", 1000, 1), req("c", 1000, 1)],
                         {"discount": 100}, SHIP)
    assert [line["discount"] for line in priced["lines"]] == [34, 33, 33]
    assert priced["discount"] == 100


def test_discount_never_exceeds_subtotal_and_lines_never_negative():
    priced = price_lines([req("a", 500, 1)], {"lines": [{"product_id": "a", "discount": 900}],
                                              "discount": 900}, SHIP)
    assert priced["discount"] == 500 and priced["lines"][0]["line_total"] == 0
    assert priced["total"] == 1000  # shipping only


def test_bad_marketing_answer_is_refused():
    with pytest.raises(pricing.PricingError):
        price_lines([req("a", 500, 1)], {"discount": -5}, SHIP)
    with pytest.raises(pricing.PricingError):
        price_lines([req("a", 500, 1)], {"discount": 1.5}, SHIP)
    with pytest.raises(pricing.PricingError):
        price_lines([req("a", 500, 1)], {"lines": [{"product_id": "a", "discount": "3"}]}, SHIP)


def test_refund_share_cumulative_rounding_adds_up_exactly():
    # 3 units paying 100 in all: 33 + 33 + 34, never 99 or 101
    parts = [refund_share(100, 3, k, 1) for k in range(3)]
    assert parts == [33, 33, 34] and sum(parts) == 100
    assert refund_share(100, 3, 0, 3) == 100
    assert refund_share(100, 3, 1, 2) == 67


def test_refund_of_discounted_line_refunds_paid_amount_only():
    # 2 x 129.00 with 20.00 off: paid 238.00; returning one unit refunds 119.00
    assert refund_share(23800, 2, 0, 1) == 11900


@pytest.mark.parametrize("args", [(100, 3, 2, 2), (100, 0, 0, 1), (100, 3, 0, 0), (100, 3, -1, 1)])
def test_refund_share_rejects_out_of_range(args):
    with pytest.raises(ValueError):
        refund_share(*args)


def test_promotion_ids_are_deduplicated():
    answer = {"promotion_ids": ["p1"], "discounts": [{"promotion_id": "p2"}, {"promotion_id": "p1"}],
              "lines": [{"discounts": [{"promotion_id": "p3"}]}]}
    assert pricing.promotion_ids(answer) == ["p1", "p2", "p3"]
