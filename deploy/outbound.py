"""Telling others: GitLab's commit status API and signed outgoing webhooks.

Plain HTTP through the standard library (one small seam, `send`), a short
timeout per request, no retries here: the caller (workers/feedback.py) retries
a bounded number of times and records each attempt. No Django here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

USER_AGENT = "Slipway"
# GitLab's commit status states (POST /projects/:id/statuses/:sha).
GITLAB_STATES = ("pending", "running", "success", "failed", "canceled")
SIGNATURE_HEADER = "X-Slipway-Signature"
TIMESTAMP_HEADER = "X-Slipway-Timestamp"


@dataclass
class Answer:
    """What one request came to: the status code (None: no answer at all), a short
    excerpt of the body or the error, and how long it took."""

    status: int | None
    detail: str
    took_ms: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def send(method: str, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
    """One HTTP request, never raising: redirects are not followed (a receiver that
    moves must be re-entered), the answer body is read up to 2 KB."""
    request = urllib.request.Request(url, data=body, method=method, headers={"User-Agent": USER_AGENT, **headers})
    opener = urllib.request.build_opener(_NoRedirect)
    started = time.monotonic()
    try:
        with opener.open(request, timeout=timeout) as response:
            text = response.read(2048).decode(errors="replace")
            return Answer(response.status, text[:300], _ms(started))
    except urllib.error.HTTPError as exc:
        text = exc.read(2048).decode(errors="replace") if exc.fp else ""
        return Answer(exc.code, (text or exc.reason or "")[:300], _ms(started))
    except (TimeoutError, OSError, urllib.error.URLError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        kind = "timed out" if isinstance(reason, TimeoutError) or "timed out" in str(reason) else "failed"
        return Answer(None, f"{kind} after {_ms(started) / 1000:.1f} s: {reason}"[:300], _ms(started))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


# --- GitLab commit status ------------------------------------------------------------------


def commit_status_url(api_url: str, project: str, sha: str) -> str:
    """`{gitlab}/api/v4/projects/:id/statuses/:sha`; a project path is URL-encoded
    (group/project -> group%2Fproject), as GitLab asks."""
    base = api_url.rstrip("/")
    if not base.endswith("/api/v4"):
        base += "/api/v4"
    return f"{base}/projects/{urllib.parse.quote(project, safe='')}/statuses/{sha}"


def post_commit_status(api_url: str, project: str, token: str, sha: str, *, state: str, name: str, ref: str = "",
                       target_url: str = "", description: str = "", timeout: float = 5) -> Answer:
    """POST a commit status: `state`, `name`, `target_url`, `description` (and `ref`
    when known) as JSON, authenticated with the project access token in PRIVATE-TOKEN."""
    if state not in GITLAB_STATES:
        raise ValueError(f"{state!r} is not a GitLab commit status state")
    body = {"state": state, "name": name}
    if ref:
        body["ref"] = ref
    if target_url:
        body["target_url"] = target_url
    if description:
        body["description"] = description[:255]
    return send("POST", commit_status_url(api_url, project, sha), json.dumps(body).encode(),
                {"PRIVATE-TOKEN": token, "Content-Type": "application/json"}, timeout)


# --- Signed outgoing webhooks --------------------------------------------------------------


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>." + body): the timestamp is
    signed too, so a receiver that refuses old timestamps refuses replays."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def post_webhook(url: str, secret: str, payload: dict, *, event: str, delivery: str, timeout: float = 5,
                 now: float | None = None) -> Answer:
    """POST `payload` as JSON, signed (X-Slipway-Signature over X-Slipway-Timestamp and the body)."""
    body = json.dumps(payload, sort_keys=True).encode()
    timestamp = int(now if now is not None else time.time())
    headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: str(timestamp),
               SIGNATURE_HEADER: signature(secret, timestamp, body), "X-Slipway-Event": event,
               "X-Slipway-Delivery": delivery}
    return send("POST", url, body, headers, timeout)


def where(url: str) -> str:
    """Host and path of a URL, for the attempt log: no query string, no credentials."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"[:500]
