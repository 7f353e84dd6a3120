"""The operators' CLI: parsing and rendering, and real calls through RPC."""
import argparse
import json
from datetime import timedelta

import pytest

from services.catalog.service import CatalogService
from tools.cli import build_parser, main, parse_since, render


def test_since_takes_a_number_and_a_unit():
    assert parse_since("7d") == timedelta(days=7)
    assert parse_since("12h") == timedelta(hours=12)
    assert parse_since("30m") == timedelta(minutes=30)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_since("soon")


def test_tables_for_rows_and_pairs_json_for_scripts():
    rows = [{"id": "a", "status": "paid", "total": 1000}, {"id": "b", "status": "cancelled", "total": 20}]
    table = render(rows, as_json=False).splitlines()
    assert table[0].split() == ["id", "status", "total"]
    assert table[2].split() == ["a", "paid", "1000"] and len(table) == 4
    assert render({"items": rows, "page": 1}, False).splitlines()[-1].split() == ["page", "1"]
    assert json.loads(render(rows, as_json=True)) == rows
    assert render([], False) == "(none)"


@pytest.mark.parametrize("argv", [[], ["catalog"], ["order"], ["kpis"], ["dlq"], ["outbox"], ["call"],
                                  ["analytics"]])
def test_help_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([*argv, "--help"])
    assert info.value.code == 0
    assert "usage: shop" in capsys.readouterr().out


def cli_output(capsys) -> str:
    """What the CLI printed, without the in-process services' one-line JSON logs."""
    return "\n".join(line for line in capsys.readouterr().out.splitlines()
                     if not line.startswith('{"'))


def test_real_calls_print_tables_json_and_typed_errors(start_service, rpc, amqp_uri, monkeypatch, capsys):
    start_service(CatalogService)
    monkeypatch.setenv("AMQP_URI", amqp_uri)
    product = rpc.catalog.create_product({"sku": "CLI-1", "title": "CLI test", "description": "",
                                          "category": "books", "price": 1000, "currency": "CNY",
                                          "stock": 7})
    assert main(["--json", "catalog", "stock", product["id"]]) == 0
    stock = json.loads(cli_output(capsys))
    assert stock["on_hand"] == 7 and stock["available"] == 7
    assert main(["catalog", "get", product["id"]]) == 0
    assert "CLI test" in cli_output(capsys)
    assert main(["catalog", "stock", "prd_missing"]) == 2
    assert "NotFound" in capsys.readouterr().err
    assert main(["--json", "call", "catalog", "get_stock", json.dumps(product["id"])]) == 0
    assert json.loads(cli_output(capsys))["on_hand"] == 7
    assert main(["--json", "dlq", "list", "catalog"]) == 0
    assert json.loads(cli_output(capsys)) == []


def test_outbox_list_and_retry_parked_rows(start_service, settings_for, monkeypatch, capsys):
    from shared.storage.store import Tx
    from tools.testing import store_of, wait_for

    settings = settings_for("catalog")
    container = start_service(CatalogService, settings=settings)
    monkeypatch.setenv("MONGO_URI", settings.mongo_uri)
    monkeypatch.setenv("CATALOG_DB", settings.database)
    db = store_of(container)
    with db.client.start_session() as session, session.start_transaction():
        envelope = Tx(db, session, "catalog").emit("stock_adjusted", {
            "product_id": "prd_cli", "delta": 1, "reason": "cli", "on_hand": 1, "available": 1,
            "version": 1})
    db.outbox.update_one({"_id": envelope["event_id"]},
                         {"$set": {"state": "parked", "attempts": 10, "last_error": "unroutable"},
                          "$unset": {"pending": ""}})
    assert main(["--json", "outbox", "list", "catalog"]) == 0
    rows = json.loads(cli_output(capsys))
    assert [(r["event_id"], r["state"], r["attempts"]) for r in rows] == [
        (envelope["event_id"], "parked", 10)]
    assert main(["--json", "outbox", "retry", "catalog"]) == 0
    assert json.loads(cli_output(capsys))["retried"] == 1
    # The running service's sweep publishes it.
    wait_for(lambda: (db.outbox.find_one({"_id": envelope["event_id"]}) or {}).get("state") == "published",
             what="retried row published")
    assert main(["--json", "outbox", "list", "catalog"]) == 0
    assert json.loads(cli_output(capsys)) == []
