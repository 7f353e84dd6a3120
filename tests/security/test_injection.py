"""Named regressions: each injection found by calling every RPC method with
hostile values (issue 14) is refused with ValidationFailed naming the field,
leaks nothing and changes nothing."""
from __future__ import annotations

import dataclasses
import uuid

import pytest
from nameko.containers import ServiceContainer

from services.catalog.service import CatalogService
from services.fulfillment.service import FulfillmentService
from services.marketing.service import MarketingService
from services.member.service import MemberService
from services.order.service import OrderService
from shared.config import Settings
from shared.errors import ValidationFailed
from tools import devstack
from tools.testing import store_of

GT = {"$gt": ""}
WHERE = {"$where": "sleep(1000) || true"}


@pytest.fixture(scope="module")
def services(mongo_uri, amqp_uri):
    """The five services the injections were found in, once for the module."""
    running = {}
    for cls in (OrderService, MarketingService, FulfillmentService, CatalogService, MemberService):
        settings = dataclasses.replace(Settings.from_env(cls.name), mongo_uri=mongo_uri, amqp_uri=amqp_uri,
                                       database=f"inject_{cls.name}_{uuid.uuid4().hex[:6]}",
                                       http_port=devstack.free_port(), rpc_timeout=2.0)
        container = ServiceContainer(cls, settings.nameko_config())
        container.start()
        running[cls.name] = container
    yield {name: store_of(container) for name, container in running.items()}
    for container in running.values():
        container.stop()


def refused(call, field: str) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        call()
    assert field in info.value.field_errors, info.value.field_errors
    return info.value


def test_get_order_with_an_operator_does_not_return_another_members_order(services, rpc):
    services["order"].orders.insert_one({"_id": "ord_of_someone_else", "member_id": "mem_other",
                                         "status": "paid"})
    refused(lambda: rpc.order.get_order(GT), "order_id")


def test_list_messages_with_an_operator_does_not_list_other_members_messages(services, rpc):
    services["marketing"].messages.insert_one({"_id": "msg_1", "member_id": "mem_other",
                                               "campaign_id": "cmp_1", "kind": "marketing"})
    refused(lambda: rpc.marketing.list_messages(member_id=GT), "member_id")
    refused(lambda: rpc.marketing.list_messages(campaign_id=GT), "campaign_id")


def test_get_campaign_with_an_operator_is_refused(services, rpc):
    services["marketing"].campaigns.insert_one({"_id": "cmp_secret", "status": "draft"})
    refused(lambda: rpc.marketing.get_campaign(GT), "campaign_id")


def test_get_promotion_with_an_operator_is_refused(services, rpc):
    services["marketing"].promotions.insert_one({"_id": "pro_secret", "status": "active"})
    refused(lambda: rpc.marketing.get_promotion(GT), "promotion_id")


def test_get_coupon_reservation_with_an_operator_is_refused(services, rpc):
    services["marketing"].coupon_reservations.insert_one({"_id": "ord_someone", "code": "SECRET"})
    refused(lambda: rpc.marketing.get_coupon_reservation(GT), "order_id")


def test_get_warehouse_with_an_operator_is_refused(services, rpc):
    services["fulfillment"].warehouses.insert_one({"_id": "wh_secret", "code": "SECRET"})
    refused(lambda: rpc.fulfillment.get_warehouse(GT), "warehouse_id")


def test_stop_experiment_with_an_operator_stops_nothing(services, rpc):
    db = services["marketing"]
    db.experiments.insert_one({"_id": "exp_running", "key": "exp_running", "status": "running",
                               "variants": ["a", "b"], "control": "a"})
    refused(lambda: rpc.marketing.stop_experiment(GT), "experiment_key")
    assert db.experiments.find_one({"_id": "exp_running"})["status"] == "running"


def test_launch_campaign_with_an_operator_launches_nothing(services, rpc):
    db = services["marketing"]
    db.campaigns.insert_one({"_id": "cmp_draft", "status": "draft"})
    refused(lambda: rpc.marketing.launch_campaign(GT), "campaign_id")
    assert db.campaigns.find_one({"_id": "cmp_draft"})["status"] == "draft"
    assert db.outbox.count_documents({}) == 0


@pytest.mark.parametrize("huge", [2 ** 63, -(2 ** 63) - 1, 2 ** 80])
def test_integers_beyond_64_bits_are_refused_typed_not_overflow(services, rpc, huge):
    refused(lambda: rpc.catalog.adjust_stock("prd_1", huge, "count"), "delta")
    refused(lambda: rpc.order.list_orders(page=huge), "page")
    refused(lambda: rpc.member.redeem_points("mem_1", huge, "gift"), "points")
    refused(lambda: rpc.fulfillment.add_tracking_event("shp_1", {"status": "x", "seq": huge}), "event.seq")


def test_where_reaches_mongodb_from_no_argument(services, rpc):
    refused(lambda: rpc.member.get_member(WHERE), "member_id")
    refused(lambda: rpc.catalog.get_products([WHERE]), "product_ids.0")
    error = refused(lambda: rpc.catalog.update_product("prd_1", WHERE), "changes")
    assert error.field_errors["changes"] == ["operator $where is not accepted"]
    refused(lambda: rpc.fulfillment.update_warehouse("wh_1", {"name": WHERE}), "changes.name")
    for db in services.values():
        assert db.outbox.count_documents({}) == 0  # none of the refusals wrote anything
