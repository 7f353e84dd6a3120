"""Shared pieces of the security suite: every service class, its RPC entrypoints
(found from nameko's own registrations, so a new one is fuzzed without a line
here), how many examples to try, and the document counts of a service's store."""
from __future__ import annotations

import inspect
import os
import secrets

from nameko.rpc import Rpc

from tests.support.suite import SERVICES, service_class

# Examples per entrypoint: FUZZ_EXAMPLES, else 500 with RUNSLOW=1, else 50.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES") or (500 if os.environ.get("RUNSLOW") else 50))

# Keys made for this run only (no secret in the repository).
TRACK_KEY = ("fuzz-backend", secrets.token_urlsafe(24))
BROWSER_KEY = ("fuzz-web", secrets.token_urlsafe(24))
SESSION_SECRET = secrets.token_urlsafe(24)
HTTP_TOKEN = secrets.token_urlsafe(24)
TRACK_SETTINGS = {"track_keys": f"{':'.join(TRACK_KEY)},{':'.join(BROWSER_KEY)}",
                  "track_server_keys": TRACK_KEY[0], "session_secret": SESSION_SECRET}


def rpc_entrypoints(cls) -> dict[str, object]:
    """{method name: function} of every `@rpc` entrypoint nameko would register on `cls`."""
    found = {}
    for name, member in inspect.getmembers(cls, inspect.isfunction):
        if any(isinstance(e, Rpc) for e in getattr(member, "nameko_entrypoints", ())):
            found[name] = member
    return found


def parameters(function) -> list[inspect.Parameter]:
    target = getattr(function, "__wrapped_signature__", function)
    return [p for p in inspect.signature(target).parameters.values() if p.name != "self"]


def counts(db) -> dict[str, int]:
    return {name: db[name].count_documents({}) for name in sorted(db.list_collection_names())}


ALL_SERVICES = {name: service_class(name) for name in SERVICES}
