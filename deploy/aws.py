"""The one seam to AWS: a lazily built boto3 client per service.

The standard credential chain and region apply. AWS_ENDPOINT_URL (read by
boto3 itself) points every client at the local plane; nothing else in the
pipeline knows which plane it talks to.
"""

from __future__ import annotations

import os
import threading

_lock = threading.Lock()
_clients: dict[tuple, object] = {}


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def client(service: str, *, timeout: float = 60, retries: int = 4):
    """A shared client for `service`; `timeout`/`retries` give a separate one
    (a health probe must fail in a second, a deploy must not)."""
    key = (service, timeout, retries, os.environ.get("AWS_ENDPOINT_URL", ""), region())
    with _lock:
        if key not in _clients:
            import boto3
            from botocore.config import Config

            config = Config(connect_timeout=min(timeout, 10), read_timeout=timeout,
                            retries={"max_attempts": retries, "mode": "standard"})
            _clients[key] = boto3.session.Session().client(service, region_name=region(), config=config)
        return _clients[key]


def reset() -> None:
    """Forget cached clients (after the environment changed, e.g. in tests)."""
    with _lock:
        _clients.clear()
