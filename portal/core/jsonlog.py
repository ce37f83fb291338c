"""Logs as JSON lines on stdout in production: one line per event, with the
deployment and function it concerns, never a secret (messages pass the same
masking as step logs, with the secret values of the function whose work is
being logged: see `hiding`)."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from datetime import UTC, datetime

from deploy.logs import mask

_context: contextvars.ContextVar[dict | None] = contextvars.ContextVar("slipway_log_context", default=None)
_secrets: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("slipway_log_secrets", default=())


@contextlib.contextmanager
def bound(**fields):
    """Attach fields (deployment, function) to every log line written inside the block."""
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


@contextlib.contextmanager
def hiding(secrets):
    """Mask these values (portal.masking.secret_values of a function) in every line written inside the block."""
    token = _secrets.set((*_secrets.get(), *secrets))
    try:
        yield
    finally:
        _secrets.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": mask(record.getMessage(), *_secrets.get()),
            **(_context.get() or {}),
        }
        for key in ("deployment", "function"):
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["exception"] = mask(self.formatException(record.exc_info), *_secrets.get())
        return json.dumps(line, default=str)
