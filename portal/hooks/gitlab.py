"""GitLab's webhooks: who sent a delivery and what it asks for.

Pure functions over headers, body and a function's settings, shared by the
receiver (portal/views/webhooks.py) and Replay (services.replay_delivery). Formats
as GitLab documents them: the secret token arrives verbatim in X-Gitlab-Token;
the signing token follows Standard Webhooks (`webhook-id`, `webhook-timestamp`,
`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, secret
`whsec_<base64 key>`); Push Hook and Tag Push Hook carry `ref`, `before`,
`after` and `checkout_sha` (for an annotated tag `after` is the tag object,
`checkout_sha` the commit; `commits` is capped at 20 and never used).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from deploy.errors import SlipwayError, UserError
from deploy.source import validate_ref
from portal.core import crypto

ZERO_SHA = "0" * 40
FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
SIGNING_PREFIX = "whsec_"
SIGNATURE_TOLERANCE_S = 300  # Standard Webhooks' recommendation: older (or newer) timestamps are refused
MAX_KEY_CHARS = 128
# Never stored with a delivery: GitLab's secret token, and anything a proxy might add.
HIDDEN_HEADERS = {"x-gitlab-token", "authorization", "proxy-authorization", "cookie"}
# Stored, but shown to the function's owners only: with them and the body, a delivery can be
# sent again (it would be answered as a replay, but the owners alone need to see them).
SIGNATURE_HEADERS = {"webhook-id", "webhook-timestamp", "webhook-signature"}
PUSH, TAG_PUSH = "Push Hook", "Tag Push Hook"


class Malformed(SlipwayError):
    """An authenticated delivery that is not what GitLab sends: answered 400 `malformed`."""

    def __init__(self, message: str):
        super().__init__("malformed", message, status=400)


def _bytes(text: str) -> bytes:
    # Header values may hold anything a client sent; surrogatepass never raises.
    return text.encode("utf-8", "surrogatepass")


def clean_text(value, limit: int) -> str:
    """Text as the database takes it: valid UTF-8 (no lone surrogates), no NUL, at most `limit` characters."""
    text = value if isinstance(value, str) else str(value)
    text = text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")
    return text[:limit]


# --- Tokens ---------------------------------------------------------------------------


def new_secret_token() -> str:
    return secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """SHA-256 of a secret token: high entropy, so no slow hash is needed."""
    return hashlib.sha256(_bytes(token)).hexdigest()


def new_signing_token() -> str:
    return SIGNING_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(signing_token: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """`v1,<base64>` as GitLab computes it (Standard Webhooks)."""
    key = base64.b64decode(signing_token.removeprefix(SIGNING_PREFIX))
    mac = hmac.new(key, _bytes(msg_id) + b"." + _bytes(timestamp) + b"." + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def _v1_signatures(given: str) -> list[str]:
    """The well-formed `v1,<base64 of 32 bytes>` entries of a webhook-signature header (Standard
    Webhooks lets a sender list several, space-separated; other versions are skipped)."""
    found = []
    for candidate in given.split()[:8]:
        version, _, value = candidate.partition(",")
        if version != "v1":
            continue
        try:
            if len(base64.b64decode(value, validate=True)) == 32:
                found.append(candidate)
        except (binascii.Error, ValueError):
            continue
    return found


def check_signature_headers(headers: Mapping, now: float) -> str:
    """'' when the signature headers could hold a valid signature made within the tolerance,
    else why not. Needs no body: a delivery that fails here is refused before it is read."""
    msg_id, timestamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    given = headers.get("webhook-signature", "")
    if not (msg_id and timestamp and given):
        missing = [n for n, v in (("webhook-id", msg_id), ("webhook-timestamp", timestamp),
                                  ("webhook-signature", given)) if not v]
        return f"no {', '.join(missing)} header (a signing token is configured)"
    if len(msg_id) > MAX_KEY_CHARS or not msg_id.isprintable():
        return "webhook-id is not an id GitLab sends"
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return "webhook-timestamp is not a Unix time"
    off = now - int(timestamp)
    if abs(off) > SIGNATURE_TOLERANCE_S:
        return f"webhook-timestamp is {abs(off):.0f} s {'old' if off > 0 else 'ahead'}; " \
               f"more than {SIGNATURE_TOLERANCE_S} s is refused"
    if not _v1_signatures(given):
        return "webhook-signature holds no v1 signature"
    return ""


def check_signature(signing_token: str, headers: Mapping, body: bytes) -> str:
    """'' when one of the `v1` signatures is the HMAC of this body (the headers passed
    check_signature_headers), else why not. Constant-time comparisons."""
    msg_id, timestamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    try:
        expected = _bytes(signature(signing_token, msg_id, timestamp, body))
    except (binascii.Error, ValueError):
        return "the stored signing token is not valid base64"
    if any([hmac.compare_digest(_bytes(c), expected) for c in _v1_signatures(headers.get("webhook-signature", ""))]):
        return ""
    return "webhook-signature does not match"


def _signing_token(function) -> tuple[str, str]:
    try:
        return crypto.decrypt(function.hook_keys.webhook_signing_key), ""
    except crypto.Unavailable as exc:
        return "", f"the signing token cannot be read: {exc}"


def check_headers(function, headers: Mapping, now: float) -> str:
    """Everything about who is calling that the headers alone can tell: '' when the delivery
    may be authentic for `function` (the body's signature is checked next, by check_body), else
    why not (for the log only: the answer is the same 401 for every reason, an unknown function
    included). Every token the function has configured must check out. The secret token needs
    no body: it is checked here in full, by its digest, in constant time."""
    if function is None:
        return "no such function"
    if function.is_archived:
        return "the function is archived: it accepts no deliveries"
    if not function.hook_keys.configured:
        return "no secret token or signing token is configured: every delivery is refused"
    if function.hook_keys.webhook_secret_hash:
        token = headers.get("X-Gitlab-Token", "")
        if not token:
            return "no X-Gitlab-Token header (a secret token is configured)"
        if not hmac.compare_digest(digest(token), function.hook_keys.webhook_secret_hash):
            return "X-Gitlab-Token does not match"
    if function.hook_keys.webhook_signing_key:
        problem = _signing_token(function)[1] or check_signature_headers(headers, now)
        if problem:
            return problem
    return ""


def check_body(function, headers: Mapping, body: bytes) -> str:
    """The signature over the body, for a function with a signing token (check_headers passed)."""
    if not function.hook_keys.webhook_signing_key:
        return ""
    signing_token, problem = _signing_token(function)
    return problem or check_signature(signing_token, headers, body)


def signed_pair(function, headers: Mapping) -> tuple[str, int] | None:
    """(webhook-id, webhook-timestamp) of a delivery whose signature was verified (the function
    has a signing token); None otherwise: then those headers were never checked and prove nothing."""
    if not function.hook_keys.webhook_signing_key:
        return None
    return headers.get("webhook-id", ""), int(headers.get("webhook-timestamp", ""))


# --- Headers ----------------------------------------------------------------------------


def stored_headers(headers: Mapping) -> dict[str, str]:
    """The headers as received, without the secret token (the signature headers are kept: the log
    shows them to owners only, see SIGNATURE_HEADERS)."""
    kept = {}
    for name, value in list(headers.items())[:60]:
        if name.lower() not in HIDDEN_HEADERS:
            kept[clean_text(name, 100)] = clean_text(value, 1000)
    return kept


def dedupe_key(headers: Mapping, *, signed: bool = False) -> str:
    """GitLab's Idempotency-Key (the same on every resend of an event; GitLab 17.4+), else
    X-Gitlab-Event-UUID (older GitLab); '' when neither is sent: then nothing is deduped.
    For a `signed` delivery it is webhook-id, which GitLab sets equal to Idempotency-Key and
    signs: the unsigned headers could be changed by anyone who replays it, so an
    Idempotency-Key that differs is refused."""
    if signed:
        msg_id = headers.get("webhook-id", "")
        given = headers.get("Idempotency-Key", "")
        if given and given != msg_id:
            raise Malformed("Idempotency-Key differs from webhook-id: GitLab sends the two equal")
        return msg_id
    for name in ("Idempotency-Key", "X-Gitlab-Event-UUID"):
        value = headers.get(name, "").strip()
        if value:
            if len(value) > MAX_KEY_CHARS or not value.isprintable():
                raise Malformed(f"{name} is not a key GitLab sends")
            return value
    return ""


# --- What a delivery asks for ------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    deploy: bool
    detail: str
    commit: str = ""
    ref: str = ""  # the branch or tag, for the record
    paused: bool = False


def decide(function, event: str, payload: dict, *, explicit: bool = False) -> Decision:
    """What `payload` (an event of type `event`) asks of `function`. `explicit`: a person
    replays it, so auto-deploy being off or paused does not stop it. Raises Malformed."""
    if event == PUSH:
        return _push(function, payload, explicit)
    if event == TAG_PUSH:
        return _tag_push(function, payload, explicit)
    return Decision(False, f"{clean_text(event, 64)!r} events are not handled: only pushes and tags deploy")


def _pushed(payload: dict, kind: str) -> tuple[str, str]:
    """(the branch or tag a push or tag push names, "") when it may deploy; ("", why not) when
    its ref is not a `kind` ("branch" or "tag") or the push deleted it. Raises Malformed."""
    prefix, event = ("refs/heads/", "a push") if kind == "branch" else ("refs/tags/", "a tag push")
    ref = payload.get("ref")
    if not isinstance(ref, str):
        raise Malformed("ref is missing or not a string")
    if not ref.startswith(prefix):
        return "", f"{event} to {clean_text(ref, 200)!r}, which is not a {kind}"
    name = ref[len(prefix):]
    if payload.get("after") == ZERO_SHA:
        return "", f"{kind} {clean_text(name, 200)} was deleted"
    return name, ""


def _commit(payload: dict) -> str | None:
    """checkout_sha: the commit to build (null when the ref was deleted)."""
    sha = payload.get("checkout_sha")
    if sha is None:
        return None
    if not isinstance(sha, str) or not FULL_SHA.match(sha):
        raise Malformed("checkout_sha is not a full commit SHA")
    return sha


def _push(function, payload: dict, explicit: bool) -> Decision:
    branch, ignored = _pushed(payload, "branch")
    if ignored:
        return Decision(False, ignored)
    shown = clean_text(branch, 200)
    if branch != function.branch:
        return Decision(False, f"a push to {shown}; {function.branch} deploys")
    if "before" in payload and payload.get("before") == payload.get("after"):
        return Decision(False, "nothing changed (before == after)")
    sha = _commit(payload)
    if sha is None:
        return Decision(False, "no checkout_sha: nothing to build")
    return _deployable(function, sha, branch, f"push to {branch}", explicit)


def _tag_push(function, payload: dict, explicit: bool) -> Decision:
    tag, ignored = _pushed(payload, "tag")
    if ignored:
        return Decision(False, ignored)
    shown = clean_text(tag, 200)
    if not function.tag_pattern:
        return Decision(False, f"tag {shown}: no tag pattern is set, so tags do not deploy")
    if not fnmatchcase(tag, function.tag_pattern):
        return Decision(False, f"tag {shown} does not match {function.tag_pattern}")
    sha = _commit(payload)  # an annotated tag's `after` is the tag object: build the commit it points to
    if sha is None:
        return Decision(False, "no checkout_sha: nothing to build")
    try:
        validate_ref(tag)
    except UserError:
        return Decision(False, f"tag {shown!r} matches, but is not a name Slipway deploys")
    return _deployable(function, sha, tag, f"tag {tag}", explicit)


def _deployable(function, sha: str, ref: str, what: str, explicit: bool) -> Decision:
    if not explicit:
        if not function.auto_deploy:
            return Decision(False, f"{what} ({sha[:12]}): auto-deploy is off")
        paused = function.first_environment.paused_reason  # a push deploys to the first environment
        if paused:
            return Decision(False, f"{what} ({sha[:12]}) not deployed: auto-deploy is paused "
                                   f"({paused})", paused=True)
    return Decision(True, f"{what}: deploy {sha[:12]}", commit=sha, ref=ref)
