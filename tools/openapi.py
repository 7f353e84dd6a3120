"""The OpenAPI 3.0 document of every HTTP endpoint of the suite, generated from
the services' own `@http` registrations (and the `openapi=` fragment each one
carries), so it cannot drift from the code: `python -m tools.openapi` prints
it, `--write` updates docs/openapi.json, and tests/security checks the file.

The health and metrics endpoints are served by every service on its own port;
the rest by the service named in each operation's tag."""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import re
import sys
from pathlib import Path

from shared.config import DEFAULT_PORTS

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "docs" / "openapi.json"
SERVICES = list(DEFAULT_PORTS)

ERROR = {"type": "object", "required": ["error", "code", "message"], "properties": {
    "error": {"type": "string"}, "code": {"type": "string"}, "message": {"type": "string"},
    "details": {"type": "object"}}}
JSON_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
UNAUTHORIZED = {"description": "No valid credential.", **JSON_ERROR}
SECURITY = {"operator": [{"bearerAuth": []}], "own": [{"trackKey": [], "trackSignature": []}],
            "open": []}


def http_entrypoints(cls) -> list[tuple[str, object, object]]:
    """(method name, function, HttpEntrypoint) of every `@http` on a service class."""
    from shared.web.http import HttpEntrypoint

    found = []
    for name, function in inspect.getmembers(cls, inspect.isfunction):
        for entrypoint in getattr(function, "nameko_entrypoints", ()):
            if isinstance(entrypoint, HttpEntrypoint):
                found.append((name, function, entrypoint))
    return found


def service_classes() -> dict[str, type]:
    classes = {}
    for name in SERVICES:
        module = importlib.import_module(f"services.{name}.service")
        classes[name] = next(v for v in vars(module).values()
                             if isinstance(v, type) and getattr(v, "name", None) == name)
    return classes


def _path(url: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([A-Za-z_]\w*)>", r"{\1}", url)


def _operation(service: str, name: str, function, entrypoint, shared: bool) -> dict:
    fragment = dict(getattr(entrypoint, "openapi", None) or {})
    doc = inspect.getdoc(function) or ""
    operation = {"operationId": name if shared else f"{service}_{name}",
                 "tags": ["every service"] if shared else [service],
                 "summary": fragment.pop("summary", None) or (doc.splitlines()[0] if doc else name)}
    operation["security"] = SECURITY[entrypoint.access]
    responses = fragment.pop("responses", None) or {
        "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}}
    if entrypoint.access == "operator":
        responses = {**responses, "401": UNAUTHORIZED}
    operation.update(fragment)
    operation["responses"] = responses
    return operation


def document() -> dict:
    paths: dict[str, dict] = {}
    from shared.service import ShopService

    shared_names = {name for name, _, _ in http_entrypoints(ShopService)}
    for service, cls in service_classes().items():
        for name, function, entrypoint in http_entrypoints(cls):
            shared = name in shared_names
            path = paths.setdefault(_path(entrypoint.url), {})
            method = entrypoint.method.lower()
            if method in path:
                continue  # a chassis endpoint, listed once
            path[method] = _operation(service, name, function, entrypoint, shared)
    return {
        "openapi": "3.0.3",
        "info": {"title": "Shop suite HTTP endpoints", "version": "1",
                 "description": (
                     "Every service serves /health/live, /health/ready and /metrics on its own port "
                     f"({', '.join(f'{s} {p}' for s, p in DEFAULT_PORTS.items())}); the other paths "
                     "belong to the service of their tag. Beyond loopback every endpoint except "
                     "health and metrics needs `Authorization: Bearer $HTTP_TOKEN`; POST /track "
                     "needs a tracking key and an HMAC-SHA256 signature of the body instead.")},
        "servers": [{"url": f"http://127.0.0.1:{port}", "description": service}
                    for service, port in DEFAULT_PORTS.items()],
        "paths": {path: paths[path] for path in sorted(paths)},
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "HTTP_TOKEN (a Kubernetes Secret)"},
                "trackKey": {"type": "apiKey", "in": "header", "name": "X-Track-Key",
                             "description": "the id of a key in ANALYTICS_TRACK_KEYS"},
                "trackSignature": {"type": "apiKey", "in": "header", "name": "X-Track-Signature",
                                   "description": "hex HMAC-SHA256 of the raw body with that key's secret"},
            }},
    }


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.openapi", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {DOCUMENT.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        DOCUMENT.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
