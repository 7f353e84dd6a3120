"""The harness's duplicate count across kills and unanswered scrapes, against a real
HTTP server standing in for one service process's /metrics."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from tests.chaos.harness import Shop


class _Metrics:
    """What the process answers on /metrics; None: no metrics (a 503), as a process
    too busy to answer within the scrape's timeout gives none either."""

    def __init__(self):
        self.duplicates: float | None = 0.0


@pytest.fixture
def process():
    metrics = _Metrics()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if metrics.duplicates is None:
                self.send_response(503)
                self.end_headers()
                return
            body = (f'shop_events_duplicate_total{{consumer="catalog"}} {metrics.duplicates}\n'
                    "shop_events_consumed_total 3.0\n").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    suite = SimpleNamespace(ports={"catalog": server.server_address[1]}, instances={"catalog": "catalog"})
    shop = Shop(SimpleNamespace(mongo_uri="mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=10"), suite)
    yield shop, metrics
    server.shutdown()
    shop.mongo.close()


def test_a_scrape_that_gets_no_answer_keeps_the_last_count_instead_of_zero(process):
    shop, metrics = process
    metrics.duplicates = 40
    assert shop.duplicates()["catalog"] == 40
    metrics.duplicates = None
    assert shop.duplicates()["catalog"] == 40
    metrics.duplicates = 45
    assert shop.duplicates()["catalog"] == 45


def test_a_killed_process_keeps_its_count_and_the_next_one_starts_from_zero(process):
    shop, metrics = process
    metrics.duplicates = 40
    shop._sample("catalog")  # what kill() does before the SIGKILL
    metrics.duplicates = None  # the new process is not answering yet
    assert shop.duplicates()["catalog"] == 40
    metrics.duplicates = 7  # the new process counted 7 of its own
    assert shop.duplicates()["catalog"] == 47
