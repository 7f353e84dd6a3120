from shared.testing import store_of, wait_for
from tests.chassis.example import ExampleAnalytics, ExampleInventory


def test_rpc_event_roundtrip(start_service, rpc):
    inv = start_service(ExampleInventory)
    ana = start_service(ExampleAnalytics)
    result = rpc.catalog.adjust_stock("p1", 5, "restock")
    assert result["on_hand"] == 5
    wait_for(lambda: store_of(ana).seen.count_documents({}) == 1, what="event consumed")
    assert store_of(inv).outbox.count_documents({"pending": True}) == 0
