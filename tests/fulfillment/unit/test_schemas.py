from datetime import timedelta

import pytest

from services.fulfillment import schemas
from services.fulfillment.config import FulfillmentConfig
from shared.config import Settings
from shared.errors import ValidationFailed
from shared.validation import load


def fields_of(schema, payload):
    with pytest.raises(ValidationFailed) as err:
        load(schema, payload)
    return err.value.field_errors


WAREHOUSE = {"code": "SH-1", "name": "Shanghai 1", "region": "Shanghai", "address": "1 Road"}


def test_warehouse_defaults():
    data = load(schemas.Warehouse(), WAREHOUSE)
    assert data["priority"] == 100 and data["active"] is True


@pytest.mark.parametrize("field,value", [("code", "bad code!"), ("code", ""), ("name", "  "),
                                         ("priority", "1"), ("priority", -1), ("active", "maybe")])
def test_warehouse_bad_fields_are_named(field, value):
    assert field in fields_of(schemas.Warehouse(), {**WAREHOUSE, field: value})


def test_warehouse_unknown_field_is_refused():
    assert "colour" in fields_of(schemas.Warehouse(), {**WAREHOUSE, "colour": "red"})


def test_empty_or_blank_ticket_message_is_refused():
    base = {"member_id": "m", "order_id": None, "category": "other"}
    assert "message" in fields_of(schemas.OpenTicket(), {**base, "message": ""})
    assert "message" in fields_of(schemas.OpenTicket(), {**base, "message": "   \n"})
    assert "message" in fields_of(schemas.OpenTicket(), {**base, "message": "x" * 5001})
    assert "category" in fields_of(schemas.OpenTicket(), {**base, "message": "hi", "category": "?"})


def test_received_lines_shape():
    errors = fields_of(schemas.ReceiveReturn(), {"return_id": "r", "lines": [
        {"product_id": "p", "quantity": 0}, {"product_id": "p", "quantity": 1, "condition": "wet"}]})
    assert "lines" in errors
    assert "lines" in fields_of(schemas.ReceiveReturn(), {"return_id": "r", "lines": []})
    assert load(schemas.ReceiveReturn(), {"return_id": "r", "lines": [
        {"product_id": "p", "quantity": 1}]})["lines"][0]["condition"] == "resellable"


def test_tracking_event_status_and_time():
    assert "event" in fields_of(schemas.AddTracking(), {"shipment_id": "s",
                                                        "event": {"status": "In Transit"}})
    assert "event" in fields_of(schemas.AddTracking(), {"shipment_id": "s", "event": {
        "status": "in_transit", "occurred_at": "yesterday"}})


def test_pagination_bounds():
    assert "page" in fields_of(schemas.ListTickets(), {"page": 0})
    assert "page_size" in fields_of(schemas.ListTickets(), {"page_size": 1000})
    assert "status" in fields_of(schemas.ListTickets(), {"status": "closed"})


def test_sla_check_now_must_be_iso():
    assert "now" in fields_of(schemas.SlaCheck(), {"now": "tomorrow"})


def test_config_defaults_and_overrides():
    base = Settings.from_env("fulfillment")
    config = FulfillmentConfig.from_settings(base)
    assert config.dispatch_sla == timedelta(hours=48)
    assert config.ticket_sla.first_response == timedelta(hours=4)
    import dataclasses

    custom = FulfillmentConfig.from_settings(dataclasses.replace(base, extra={
        "dispatch_sla_hours": 2, "allocation_strategy": "priority_only"}))
    assert custom.dispatch_sla == timedelta(hours=2) and custom.allocation_strategy == "priority_only"
    with pytest.raises(ValueError):
        FulfillmentConfig.from_settings(dataclasses.replace(base, extra={"allocation_strategy": "x"}))
