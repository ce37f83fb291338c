"""Telling others: GitLab's commit status API and signed outgoing webhooks.

Plain HTTP through the standard library (one small seam, `send`), a short
timeout per request, no retries here: the caller (portal/feedback/delivery.py) retries
a bounded number of times and records each attempt. The URLs are the function
owners': each request goes only to an address the operator allows
(deploy/addresses.py), the one that was checked. No Django here.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass

from deploy import addresses
from deploy.addresses import PUBLIC_ONLY, Allowed
from deploy.errors import DeployError

USER_AGENT = "Slipway"
# GitLab's commit status states (POST /projects/:id/statuses/:sha).
GITLAB_STATES = ("pending", "running", "success", "failed", "canceled")
SIGNATURE_HEADER = "X-Slipway-Signature"
TIMESTAMP_HEADER = "X-Slipway-Timestamp"


@dataclass
class Answer:
    """What one request came to: the status code (None: no answer at all), a short
    excerpt of the body or the error, how long it took, and the code of a refusal
    (`outbound-address-refused`: the request was never sent)."""

    status: int | None
    detail: str
    took_ms: float
    code: str = ""
    body: str = ""  # the answer's body, only when the caller asked to keep it (`keep`)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def send(method: str, url: str, body: bytes, headers: dict[str, str], timeout: float, *,
         allowed: Allowed = PUBLIC_ONLY, keep: int = 0) -> Answer:
    """One HTTP request, never raising. The host is resolved once and the connection
    opened to the address `allowed` permits (deploy/addresses.py), with the name in
    the Host header and TLS's SNI and certificate check. No proxy (the environment's
    proxy variables are not read: a proxy would resolve the name again), redirects
    not followed (a receiver that moves must be re-entered), the answer body read up
    to 2 KB and kept as an excerpt of 300 characters (`keep`: up to that many bytes of
    it kept whole in `body`, for an answer the caller parses)."""
    started = time.monotonic()
    parts = urllib.parse.urlsplit(url)
    try:
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{where(url)!r} is not an http(s) URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = addresses.checked(parts.hostname, port, allowed, what="the receiver")
    except DeployError as exc:
        return Answer(None, f"not sent: {exc}"[:300], _ms(started), code=exc.code)
    except (OSError, ValueError) as exc:  # a name that does not resolve, a bad port
        return Answer(None, f"failed after {_ms(started) / 1000:.1f} s: {exc}"[:300], _ms(started))
    connection = _connection(parts.scheme, parts.hostname, port, address, timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request(method, target, body=body, headers={"User-Agent": USER_AGENT, **headers})
        response = connection.getresponse()
        text = response.read(max(2048, keep)).decode(errors="replace")
        return Answer(response.status, _excerpt(text or response.reason or ""), _ms(started),
                      body=text if keep else "")
    except (TimeoutError, OSError, http.client.HTTPException, ValueError) as exc:
        kind = "timed out" if isinstance(exc, TimeoutError) or "timed out" in str(exc) else "failed"
        return Answer(None, f"{kind} after {_ms(started) / 1000:.1f} s: {exc or type(exc).__name__}"[:300],
                      _ms(started))
    finally:
        connection.close()


def _connection(scheme: str, host: str, port: int, address: str, timeout: float) -> http.client.HTTPConnection:
    """A connection for `host` (Host header, SNI, certificate name) whose socket goes to
    `address`, the one that was checked: http.client's own seam for opening it."""
    if scheme == "https":
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    connection._create_connection = lambda _where, *args: socket.create_connection((address, port), *args)
    return connection


def _excerpt(text: str) -> str:
    """What is kept of an answer: printable, 300 characters (no NUL: Postgres refuses it)."""
    return "".join(ch if ch.isprintable() or ch in "\n\t" else " " for ch in text[:300])


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


# --- GitLab commit status ------------------------------------------------------------------


def commit_status_url(api_url: str, project: str, sha: str) -> str:
    """`{gitlab}/api/v4/projects/:id/statuses/:sha`; a project path is URL-encoded
    (group/project -> group%2Fproject), as GitLab asks. A query or fragment on the
    base is dropped: it would carry the rest of the path off into the query string."""
    parts = urllib.parse.urlsplit(api_url)
    base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")).rstrip("/")
    if not base.endswith("/api/v4"):
        base += "/api/v4"
    return f"{base}/projects/{urllib.parse.quote(project, safe='')}/statuses/{sha}"


def post_commit_status(api_url: str, project: str, token: str, sha: str, *, state: str, name: str, ref: str = "",
                       target_url: str = "", description: str = "", timeout: float = 5,
                       allowed: Allowed = PUBLIC_ONLY) -> Answer:
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
                {"PRIVATE-TOKEN": token, "Content-Type": "application/json"}, timeout, allowed=allowed)


# --- GitLab environments and deployments -------------------------------------------------

GITLAB_TIERS = ("production", "staging", "testing", "development", "other")
# A GitLab deployment's statuses Slipway sends (POST and PUT /projects/:id/deployments).
DEPLOYMENT_STATUSES = ("running", "success", "failed", "canceled")


def project_url(api_url: str, project: str) -> str:
    """`{gitlab}/api/v4/projects/:id`, the project path URL-encoded (see commit_status_url)."""
    return commit_status_url(api_url, project, "x").rsplit("/statuses/", 1)[0]


def _gitlab(method: str, url: str, token: str, body: dict | None, timeout: float, allowed: Allowed,
            keep: int = 0) -> Answer:
    data = json.dumps(body).encode() if body is not None else b""
    headers = {"PRIVATE-TOKEN": token}
    if body is not None:
        headers["Content-Type"] = "application/json"
    return send(method, url, data, headers, timeout, allowed=allowed, keep=keep)


def find_environments(api_url: str, project: str, token: str, name: str, *, timeout: float = 5,
                      allowed: Allowed = PUBLIC_ONLY) -> Answer:
    """GET /projects/:id/environments?name=… (the answer's body kept: a JSON list)."""
    query = urllib.parse.urlencode({"name": name})
    return _gitlab("GET", f"{project_url(api_url, project)}/environments?{query}", token, None, timeout, allowed,
                   keep=64 * 1024)


def create_environment(api_url: str, project: str, token: str, *, name: str, external_url: str, tier: str,
                       timeout: float = 5, allowed: Allowed = PUBLIC_ONLY) -> Answer:
    """POST /projects/:id/environments with `name`, `external_url` (when known) and `tier`."""
    if tier not in GITLAB_TIERS:
        raise ValueError(f"{tier!r} is not a GitLab tier")
    body = {"name": name, "tier": tier, **({"external_url": external_url} if external_url else {})}
    return _gitlab("POST", f"{project_url(api_url, project)}/environments", token, body, timeout, allowed,
                   keep=16 * 1024)


def edit_environment(api_url: str, project: str, token: str, environment_id: int, *, external_url: str, tier: str,
                     timeout: float = 5, allowed: Allowed = PUBLIC_ONLY) -> Answer:
    """PUT /projects/:id/environments/:environment_id: `external_url` and `tier` as Slipway has them now."""
    if tier not in GITLAB_TIERS:
        raise ValueError(f"{tier!r} is not a GitLab tier")
    body = {"tier": tier, **({"external_url": external_url} if external_url else {})}
    return _gitlab("PUT", f"{project_url(api_url, project)}/environments/{int(environment_id)}", token, body,
                   timeout, allowed)


def create_deployment(api_url: str, project: str, token: str, *, environment: str, sha: str, ref: str, tag: bool,
                      status: str, timeout: float = 5, allowed: Allowed = PUBLIC_ONLY) -> Answer:
    """POST /projects/:id/deployments (not idempotent: a caller that timed out looks before posting again)."""
    if status not in DEPLOYMENT_STATUSES:
        raise ValueError(f"{status!r} is not a GitLab deployment status")
    body = {"environment": environment, "sha": sha, "ref": ref, "tag": bool(tag), "status": status}
    return _gitlab("POST", f"{project_url(api_url, project)}/deployments", token, body, timeout, allowed,
                   keep=16 * 1024)


def update_deployment(api_url: str, project: str, token: str, deployment_id: int, *, status: str,
                      timeout: float = 5, allowed: Allowed = PUBLIC_ONLY) -> Answer:
    """PUT /projects/:id/deployments/:deployment_id with its new `status`."""
    if status not in DEPLOYMENT_STATUSES:
        raise ValueError(f"{status!r} is not a GitLab deployment status")
    return _gitlab("PUT", f"{project_url(api_url, project)}/deployments/{int(deployment_id)}", token,
                   {"status": status}, timeout, allowed)


def list_deployments(api_url: str, project: str, token: str, *, environment: str, status: str, timeout: float = 5,
                     allowed: Allowed = PUBLIC_ONLY) -> Answer:
    """GET /projects/:id/deployments?environment=…&status=…&order_by=id&sort=desc (body kept: a JSON list)."""
    query = urllib.parse.urlencode({"environment": environment, "status": status, "order_by": "id",
                                    "sort": "desc", "per_page": 50})
    return _gitlab("GET", f"{project_url(api_url, project)}/deployments?{query}", token, None, timeout, allowed,
                   keep=256 * 1024)


def post_mr_note(api_url: str, project: str, token: str, iid: int, *, body: str, timeout: float = 5,
                 allowed: Allowed = PUBLIC_ONLY) -> Answer:
    """POST /projects/:id/merge_requests/:merge_request_iid/notes (the answer kept: the note's id)."""
    return _gitlab("POST", f"{project_url(api_url, project)}/merge_requests/{int(iid)}/notes", token,
                   {"body": body}, timeout, allowed, keep=16 * 1024)


def edit_mr_note(api_url: str, project: str, token: str, iid: int, note_id: int, *, body: str, timeout: float = 5,
                 allowed: Allowed = PUBLIC_ONLY) -> Answer:
    """PUT /projects/:id/merge_requests/:merge_request_iid/notes/:note_id (403 unless the token wrote it)."""
    return _gitlab("PUT", f"{project_url(api_url, project)}/merge_requests/{int(iid)}/notes/{int(note_id)}", token,
                   {"body": body}, timeout, allowed)


# --- Signed outgoing webhooks --------------------------------------------------------------


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>." + body): the timestamp is
    signed too, so a receiver that refuses old timestamps refuses replays."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def post_webhook(url: str, secret: str, payload: dict, *, event: str, delivery: str, timeout: float = 5,
                 now: float | None = None, allowed: Allowed = PUBLIC_ONLY) -> Answer:
    """POST `payload` as JSON, signed (X-Slipway-Signature over X-Slipway-Timestamp and the body)."""
    body = json.dumps(payload, sort_keys=True).encode()
    timestamp = int(now if now is not None else time.time())
    headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: str(timestamp),
               SIGNATURE_HEADER: signature(secret, timestamp, body), "X-Slipway-Event": event,
               "X-Slipway-Delivery": delivery}
    return send("POST", url, body, headers, timeout, allowed=allowed)


def where(url: str) -> str:
    """Host and path of a URL, for the attempt log: no query string, no credentials."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"[:500]
