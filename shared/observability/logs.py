"""Structured JSON logs on stdout. Keys are snake_case; values are ids and
facts, never personal data (no emails, names, addresses or free text)."""
from __future__ import annotations

import logging
import sys

import structlog

_configured = False


def configure(service: str, level: str = "INFO") -> None:
    global _configured
    numeric = getattr(logging, level.upper(), logging.INFO)
    shared_processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    ]
    structlog.configure(
        processors=[*shared_processors, structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer(sort_keys=False)],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # No fixed file: each logger writes to the sys.stdout of the moment.
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Library logs (nameko, kombu, pymongo) become JSON lines too.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processor=structlog.processors.JSONRenderer(),
        foreign_pre_chain=[*shared_processors, structlog.stdlib.add_logger_name],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))
    for noisy in ("pymongo", "kombu", "amqp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # nameko logs expected (typed) errors with a traceback at WARNING; the
    # observability hooks already log every outcome as one structured line.
    logging.getLogger("nameko.containers").setLevel(logging.ERROR)
    _configured = True


def get_logger(name: str | None = None):
    return structlog.get_logger(name)
