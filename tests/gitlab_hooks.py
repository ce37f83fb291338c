"""Sending GitLab deliveries in tests: the fixture payloads, the headers GitLab
sets, a secret token or a Standard Webhooks signature."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "gitlab"
TOKEN = "gitlab-secret-token-for-tests"


def payload(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def push(after: str, before: str = "1" * 40, branch: str = "main") -> dict:
    """The documented push payload, moved to `after` on `branch`."""
    body = payload("push.json")
    body.update(before=before, after=after, checkout_sha=after, ref=f"refs/heads/{branch}")
    return body


def hook(function, token: str = TOKEN, signing: str = ""):
    """Configure `function`'s secret token (and a signing token, if given) as the owner's page would."""
    from portal.core import crypto
    from portal.hooks import gitlab

    keys = function.hook_keys
    keys.webhook_secret_hash = gitlab.digest(token) if token else ""
    keys.webhook_signing_key = crypto.encrypt(signing) if signing else ""
    keys.save(update_fields=["webhook_secret_hash", "webhook_signing_key"])
    return function


def headers(event: str = "Push Hook", token: str | None = TOKEN, key: str | None = None, **extra) -> dict:
    """What GitLab sends: the event, its UUIDs, the Idempotency-Key (a fresh one unless given)."""
    sent = {"X-Gitlab-Event": event, "X-Gitlab-Event-UUID": str(uuid.uuid4()),
            "X-Gitlab-Webhook-UUID": str(uuid.uuid4()), "Idempotency-Key": key or str(uuid.uuid4()),
            "User-Agent": "GitLab/18.6.0", "X-Gitlab-Instance": "https://gitlab.example.com"}
    if token is not None:
        sent["X-Gitlab-Token"] = token
    sent.update(extra)
    return sent


def signed(signing_token: str, body: bytes, msg_id: str, at: float | None = None) -> dict:
    """The Standard Webhooks headers over `body`, and the Idempotency-Key GitLab sets equal to webhook-id."""
    from portal.hooks import gitlab

    timestamp = str(int(time.time() if at is None else at))
    return {"webhook-id": msg_id, "Idempotency-Key": msg_id, "webhook-timestamp": timestamp,
            "webhook-signature": gitlab.signature(signing_token, msg_id, timestamp, body)}


def deliver(client, name: str, body, **kwargs):
    """POST a delivery to the receiver through Django's test client; `body` a dict or bytes."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(f"/hooks/gitlab/{name}", data=data, content_type="application/json",
                       headers=headers(**kwargs))
