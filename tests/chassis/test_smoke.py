import uuid

from tests.chassis.example import ExampleAnalytics, ExampleInventory
from tools.testing import store_of, wait_for


def test_rpc_then_event_round_trip(start_service, rpc):
    inventory = start_service(ExampleInventory)
    analytics = start_service(ExampleAnalytics)
    product = f"p-{uuid.uuid4().hex[:8]}"
    result = rpc.catalog.adjust_stock(product, 5, "restock")
    assert result == {"id": product, "on_hand": 5, "reserved": 0}
    wait_for(lambda: store_of(analytics).seen.count_documents({"product_id": product}) == 1,
             what="event consumed")
    wait_for(lambda: store_of(inventory).outbox.count_documents({"pending": True}) == 0,
             what="outbox row marked published")
