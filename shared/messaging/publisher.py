"""Publishing windows of messages with pipelined publisher confirms.

A window is sent frame after frame on one confirm-mode channel, then the
broker's acks are collected by delivery tag (`multiple` acks included): one
round trip per window instead of one per message. Messages go out with
`mandatory`, so one the broker cannot route comes back (`basic.return`)
before its ack and is reported as unroutable, not as published.

The connection has AMQP heartbeats and every wait for confirms has a
timeout; a window that is not confirmed in time is reported as timed out
and the connection is dropped (the next window reconnects)."""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from amqp import Message as AmqpMessage
from kombu import Connection

from shared.observability.logs import get_logger

log = get_logger(__name__)

OK = "ok"
UNROUTABLE = "unroutable"
NACKED = "nacked"
TIMEOUT = "timeout"
FAILED = "failed"


@dataclass
class Outgoing:
    """One message to publish: `key` names it in the outcomes."""

    key: str
    exchange: str
    routing_key: str
    body: bytes
    headers: dict = field(default_factory=dict)
    content_type: str = "application/json"
    content_encoding: str = "utf-8"

    @classmethod
    def json(cls, key: str, exchange: str, routing_key: str, payload, headers: dict | None = None):
        return cls(key, exchange, routing_key, json.dumps(payload, separators=(",", ":")).encode(),
                   headers or {})


class ConfirmedPublisher:
    """A lazily (re)connected publisher; one green thread at a time (its user locks)."""

    def __init__(self, amqp_uri: str, *, heartbeat: int = 30, confirm_timeout: float = 5.0,
                 on_connect: Callable[[Connection], None] | None = None):
        self.amqp_uri = amqp_uri
        self.heartbeat = heartbeat
        self.confirm_timeout = confirm_timeout
        self.on_connect = on_connect
        self._conn: Connection | None = None
        self._channel = None
        self._next_tag = 1
        self._unsettled: dict[int, str] = {}
        self._outcomes: dict[str, str] = {}
        self._returned: set[str] = set()

    # -- connection -------------------------------------------------------------------
    @property
    def connection(self) -> Connection:
        self._ensure()
        return self._conn

    def _ensure(self) -> None:
        if self._conn is not None and self._conn.connected and self._channel is not None:
            return
        self.close()
        conn = Connection(self.amqp_uri, heartbeat=self.heartbeat, connect_timeout=5)
        conn.connect()
        channel = conn.channel()
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        channel.events["basic_return"].add(self._on_return)
        self._conn, self._channel, self._next_tag = conn, channel, 1
        self._unsettled.clear()
        if self.on_connect is not None:
            self.on_connect(conn)

    def close(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            try:
                conn.release()
            except Exception:  # a dead socket: nothing to release
                pass

    def heartbeat_check(self) -> None:
        """Keep an idle connection alive (call at least twice per heartbeat)."""
        if self._conn is not None and self._conn.connected:
            try:
                self._conn.heartbeat_check()
                self._conn.drain_events(timeout=0)
            except TimeoutError:
                pass
            except Exception as exc:
                log.warning("publisher_heartbeat_failed", error=type(exc).__name__)
                self.close()

    # -- confirms ---------------------------------------------------------------------
    def _settle(self, delivery_tag: int, multiple: bool, outcome: str) -> None:
        tags = [t for t in self._unsettled if t <= delivery_tag] if multiple else [delivery_tag]
        for tag in tags:
            key = self._unsettled.pop(tag, None)
            if key is None:
                continue
            if outcome == OK and key in self._returned:
                self._returned.discard(key)
                self._outcomes[key] = UNROUTABLE
            else:
                self._outcomes[key] = outcome

    def _on_ack(self, delivery_tag, multiple):
        self._settle(delivery_tag, multiple, OK)

    def _on_nack(self, delivery_tag, multiple):
        self._settle(delivery_tag, multiple, NACKED)

    def _on_return(self, exc, exchange, routing_key, message):
        key = (message.properties or {}).get("message_id")
        if key:
            self._returned.add(key)

    # -- publishing -------------------------------------------------------------------
    def publish_window(self, messages: Iterable[Outgoing]) -> dict[str, str]:
        """Publish every message, wait for all confirms; `{key: outcome}`."""
        messages = list(messages)
        self._outcomes = {}
        self._returned = set()
        try:
            self._ensure()
            for message in messages:
                amqp_message = AmqpMessage(
                    message.body, content_type=message.content_type,
                    content_encoding=message.content_encoding, delivery_mode=2,
                    message_id=message.key, application_headers=message.headers)
                self._channel.basic_publish(amqp_message, exchange=message.exchange,
                                            routing_key=message.routing_key, mandatory=True)
                self._unsettled[self._next_tag] = message.key
                self._next_tag += 1
            deadline = time.monotonic() + self.confirm_timeout
            while self._unsettled:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("publisher confirms did not arrive in time")
                try:
                    self._conn.drain_events(timeout=remaining)
                except TimeoutError:
                    continue
        except TimeoutError:
            log.warning("publisher_confirm_timeout", unconfirmed=len(self._unsettled))
            self._fail_unsettled(messages, TIMEOUT)
        except Exception as exc:  # connection or channel lost mid-window
            log.warning("publisher_window_failed", error=type(exc).__name__, detail=str(exc)[:200])
            self._fail_unsettled(messages, FAILED)
        return {m.key: self._outcomes.get(m.key, FAILED) for m in messages}

    def _fail_unsettled(self, messages: list[Outgoing], outcome: str) -> None:
        for message in messages:
            self._outcomes.setdefault(message.key, outcome)
        self._unsettled.clear()
        self.close()  # delivery tags are per channel: start the next window afresh
