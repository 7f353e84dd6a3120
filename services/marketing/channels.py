"""Pluggable message channels. An adapter delivers one message inside the caller's transaction;
the built-in one records it in the store (`messages`), which is what tests and the dev stack use.

A real adapter (an email or SMS provider) implements the same `send(tx, message)` and should pass
`message["id"]` as the provider's idempotency key: a retried transaction may call it again.
Choose one with `MARKETING_CHANNEL_ADAPTER=module:factory` (factory(channel_costs) → adapter)."""
from __future__ import annotations

import importlib
from typing import Protocol

from nameko.extensions import DependencyProvider

from shared.config import env_str


class ChannelAdapter(Protocol):
    def cost(self, channel: str) -> int: ...

    def send(self, tx, message: dict) -> dict: ...


class RecordingChannel:
    """Records each message in the `messages` collection, in the caller's transaction."""

    def __init__(self, costs: dict[str, int]):
        self.costs = costs

    def cost(self, channel: str) -> int:
        return self.costs.get(channel, 0)

    def send(self, tx, message: dict) -> dict:
        doc = {"_id": message["id"], **{k: v for k, v in message.items() if k != "id"},
               "provider_ref": f"recorded:{message['id']}"}
        tx.db.messages.insert_one(doc, session=tx.session)
        return doc


def load_adapter(path: str, costs: dict[str, int]) -> ChannelAdapter:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)(costs)


class Channels(DependencyProvider):
    """The container's channel adapter (one per container)."""

    def setup(self):
        from shared.config import env_int

        costs = {"email": env_int("MARKETING_EMAIL_COST", 1), "sms": env_int("MARKETING_SMS_COST", 5)}
        self.adapter = load_adapter(
            env_str("MARKETING_CHANNEL_ADAPTER", "services.marketing.channels:RecordingChannel"), costs)

    def get_dependency(self, worker_ctx) -> ChannelAdapter:
        return self.adapter
