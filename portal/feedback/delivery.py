"""The feedback queue's work: commit statuses to GitLab and notifications.

Every request has a short timeout (SLIPWAY_NOTIFY_TIMEOUT) and is tried at most
SLIPWAY_NOTIFY_ATTEMPTS times with backoff; each attempt is a NotificationAttempt
row (the deployment page shows a deployment's, the function page an owner's).
Nothing here changes a deployment's status: a receiver that is down, slow or
refusing costs its own attempts only.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db.models import DateTimeField as DateTimeOutput
from django.db.models import ExpressionWrapper, Q
from django.db.models.functions import Now
from django.utils import timezone

from deploy import outbound, retry
from portal import functions
from portal.core import crypto
from portal.deployments import Deployment
from portal.feedback import status as feedback
from portal.feedback.models import NotificationAttempt
from portal.functions import Function

log = logging.getLogger(__name__)
Channel, Outcome = NotificationAttempt.Channel, NotificationAttempt.Outcome
RANK = feedback.RANK
MAX_ROUNDS = 4  # a lease holder posts at most this many states, each ranked above the last


def _retry_pointless(answer: outbound.Answer) -> bool:
    """A redirect (not followed), a 4xx other than timeout/too-many-requests, or an address
    the operator does not allow: the receiver refuses, or we do; trying again changes nothing."""
    if answer.code:
        return True
    return answer.status is not None and 300 <= answer.status < 500 and answer.status not in (408, 429)


def _policy() -> retry.Policy:
    """SLIPWAY_NOTIFY_ATTEMPTS with backoff, read when sent; an answer is tried again unless it
    was ok or trying again is pointless."""
    return retry.Policy("notify", attempts=settings.SLIPWAY_NOTIFY_ATTEMPTS,
                        backoff=retry.Doubling(settings.SLIPWAY_NOTIFY_BACKOFF),
                        retry_result=lambda answer: not answer.ok and not _retry_pointless(answer))


def with_attempts(call, record) -> bool:
    """`call()` -> Answer, up to SLIPWAY_NOTIFY_ATTEMPTS times with backoff; `record(n, answer)` each time."""
    numbers = itertools.count(1)

    def attempt() -> outbound.Answer:
        answer = call()
        record(next(numbers), answer)
        return answer

    return retry.run(attempt, _policy()).ok


def recorder(function_id: int, deployment_id: int | None, channel: str, event: str, target: str,
              secrets: list[str]):
    """Records each attempt; `secrets` (the function's, portal.masking) are masked in what the receiver said."""
    def record(number: int, answer: outbound.Answer) -> None:
        detail = functions.scrub(answer.detail, secrets=secrets) if answer.detail else ""
        NotificationAttempt.objects.create(
            function_id=function_id, deployment_id=deployment_id, channel=channel, event=event, attempt=number,
            outcome=Outcome.OK if answer.ok else Outcome.FAILED, status_code=answer.status, target=target[:500],
            detail=detail[:500], took_ms=answer.took_ms)
        if not answer.ok:
            log.warning("%s %s for function %s (deployment %s), attempt %s: %s %s", channel, event, function_id,
                        deployment_id, number, answer.status or "no answer", detail[:200])
    return record


# --- GitLab commit status ---------------------------------------------------------------------


def lease_seconds() -> float:
    policy = _policy()
    backoff = sum(policy.backoff(n) for n in range(1, policy.attempts + 1))
    return policy.attempts * settings.SLIPWAY_NOTIFY_TIMEOUT + backoff + 30


def _description(deployment: Deployment, state: str) -> str:
    function = deployment.function
    what = f"{deployment.kind} of {function.name} to {deployment.environment.name}"
    if state == feedback.PENDING and deployment.status == Deployment.Status.SOAKING and deployment.promote_at:
        at = timezone.localtime(deployment.promote_at)
        return f"{what}: soaking, promotes at {at:%H:%M} {at.tzname()}"
    if state == feedback.PENDING and deployment.status in Deployment.GATED:
        return f"{what}: {deployment.get_status_display().lower()}"
    if state == feedback.PENDING:
        return f"{what}: queued"
    if state == feedback.RUNNING:
        return f"{what}: {deployment.get_status_display().lower()}"
    if state == feedback.SUCCESS:
        return f"{what}: version {deployment.version} is live behind {deployment.environment.alias}"
    if state == feedback.FAILED:
        return f"{what} failed: {deployment.error_code}: {deployment.error_message}"
    return f"{what} {deployment.status}: {deployment.error_message or deployment.error_code}"


def report_commit_status(deployment_id: int, state: str) -> str:
    """Post `state` for the deployment's commit unless GitLab already has it or a later
    one. Under the row's lease only: one post at a time per deployment, so statuses
    reach GitLab in order; after releasing the lease, a state that ranks higher
    (one whose task found the lease taken and left) is posted too."""
    if state not in RANK or state == "":
        raise ValueError(f"{state!r} is not a commit status state")
    for _ in range(MAX_ROUNDS):
        deployment = Deployment.objects.select_related("function", "environment").filter(pk=deployment_id).first()
        if deployment is None or not feedback.gitlab_configured(deployment.function) or not deployment.commit_sha:
            return "nothing to report"
        if RANK[state] <= RANK[deployment.gitlab_reported]:
            return f"GitLab already has {deployment.gitlab_reported}"
        until = ExpressionWrapper(Now() + timedelta(seconds=lease_seconds()), output_field=DateTimeOutput())
        free = Q(gitlab_lease_until__isnull=True) | Q(gitlab_lease_until__lt=Now())
        if not Deployment.objects.filter(free, pk=deployment_id).update(gitlab_lease_until=until):
            return "busy: the lease holder posts the newest state when it is done"
        try:
            deployment.refresh_from_db()
            if RANK[state] > RANK[deployment.gitlab_reported]:
                _post(deployment, state)
                Deployment.objects.filter(pk=deployment_id).update(gitlab_reported=state)
        finally:
            Deployment.objects.filter(pk=deployment_id).update(gitlab_lease_until=None)
        status = Deployment.objects.filter(pk=deployment_id).values_list("status", flat=True).first()
        current = feedback.gitlab_state(status) if status else state
        if RANK[current] <= RANK[state]:
            return state
        state = current
    return state


def _post(deployment: Deployment, state: str) -> bool:
    function = deployment.function
    reports = function.feedback_settings
    secrets = functions.secret_values(function)
    record = recorder(function.pk, deployment.pk, Channel.GITLAB, state,
                       outbound.where(outbound.commit_status_url(reports.gitlab_api_url, reports.gitlab_project,
                                                                 deployment.commit_sha)), secrets)
    try:
        token = crypto.decrypt(reports.gitlab_status_token)
    except crypto.Unavailable as exc:
        record(1, outbound.Answer(None, f"not posted: {exc}", 0.0))
        return False
    is_sha = len(deployment.ref) == 40 and all(c in "0123456789abcdef" for c in deployment.ref)
    ref = feedback.preview_ref(deployment)
    if ref is None:
        ref = "" if is_sha else deployment.ref
    return with_attempts(lambda: outbound.post_commit_status(
        reports.gitlab_api_url, reports.gitlab_project, token, deployment.commit_sha, state=state,
        name=feedback.status_name(deployment.environment), ref=ref,
        target_url=feedback.deployment_link(deployment.pk),
        description=functions.scrub(_description(deployment, state), secrets=secrets),
        timeout=settings.SLIPWAY_NOTIFY_TIMEOUT, allowed=settings.SLIPWAY_OUTBOUND_ALLOWED_NETWORKS), record)


# --- Notifications ----------------------------------------------------------------------------


def compose(function: Function, event: str, deployment: Deployment | None, extra: dict,
            secrets: list[str] | None = None) -> tuple[str, dict]:
    """The text (one line, for chat and email subjects) and the webhook's JSON body, masked
    with the function's secret values (`secrets`, read here when not given). Both name
    the environment: the deployment's, or `extra["environment"]` (a resume, a drift)."""
    secrets = functions.secret_values(function) if secrets is None else secrets
    environment = deployment.environment.name if deployment else extra.get("environment") or ""
    name = f"{function.name} ({environment})" if environment else function.name
    link = feedback.deployment_link(deployment.pk) if deployment else feedback.function_link(function.name)
    differences = extra.get("differences") or []
    if event == feedback.DEPLOY_FAILED and deployment:
        text = (f"{name}: {deployment.kind} #{deployment.pk} of {deployment.commit_sha[:12] or deployment.ref} "
                f"failed — {deployment.error_code}: {deployment.error_message}")
    elif event == feedback.ROLLBACK and deployment:
        who = deployment.requested_by.get_username() if deployment.requested_by else deployment.trigger
        text = (f"{name}: rolled back to version {deployment.version} ({deployment.commit_sha[:12]}) by {who}; "
                "auto-deploy is paused")
    elif event in (feedback.APPROVAL_REQUESTED, feedback.APPROVED, feedback.REJECTED) and deployment:
        text = _approval_text(name, event, deployment, extra)
    elif event == feedback.RESUME:
        text = f"{name}: auto-deploy resumed by {extra.get('by', 'someone')}"
    elif event == feedback.FREEZE_OVERRIDE and deployment:
        text = (f"{name}: {extra.get('by', 'someone')} let {deployment.kind} #{deployment.pk} through the freeze: "
                f"{extra.get('reason', '')}")
    elif event == feedback.DRIFT:
        changes = "; ".join(f"{d.get('label') or d['field']}: {d['expected']} → {d['actual']}"
                            for d in differences[:10])
        text = f"{name} was changed outside Slipway: {changes}"
    else:
        text = f"{name}: {event}"
    text = functions.scrub(text, secrets=secrets)[:1500]
    payload = {
        "text": f"{text} {link}".strip(),
        "event": event,
        "function": function.name,
        "environment": environment or None,
        "url": link,
        "sent_at": timezone.now().isoformat(),
        "deployment": None if deployment is None else {
            "id": deployment.pk, "kind": deployment.kind, "status": deployment.status,
            "trigger": deployment.trigger, "commit": deployment.commit_sha, "version": deployment.version,
            "error_code": deployment.error_code,
            "error_message": functions.scrub(deployment.error_message, secrets=secrets)[:1000]},
    }
    if event == feedback.DRIFT:
        payload["differences"] = differences
    if event in (feedback.APPROVAL_REQUESTED, feedback.APPROVED, feedback.REJECTED):
        payload["approval"] = {key: extra.get(key) for key in ("by", "comment", "required", "approvers")
                               if key in extra}
    return text, payload


def _approval_text(name: str, event: str, deployment: Deployment, extra: dict) -> str:
    what = f"{deployment.kind} #{deployment.pk}"
    if event == feedback.APPROVAL_REQUESTED:
        who = ", ".join(extra.get("approvers") or []) or "staff"
        return f"{name}: {what} awaits {extra.get('required', 1)} approval(s); who may approve: {who}"
    comment = f": {extra['comment']}" if extra.get("comment") else ""
    return f"{name}: {what} {event} by {extra.get('by', 'someone')}{comment}"


def send_notification(function_id: int, event: str, deployment_id: int | None, extra: dict) -> dict:
    """Email the chosen members and call the function's webhook; each with bounded attempts."""
    function = Function.objects.filter(pk=function_id).first()
    if function is None:
        return {}
    deployment = (Deployment.objects.select_related("requested_by", "environment").filter(pk=deployment_id).first()
                  if deployment_id else None)
    secrets = functions.secret_values(function)
    reports = function.feedback_settings
    text, payload = compose(function, event, deployment, extra or {}, secrets)
    sent = {}
    if reports.notify_webhook_url:
        record = recorder(function.pk, deployment_id, Channel.WEBHOOK, event,
                           outbound.where(reports.notify_webhook_url), secrets)
        try:
            secret = crypto.decrypt(reports.notify_webhook_secret) if reports.notify_webhook_secret else ""
        except crypto.Unavailable as exc:
            record(1, outbound.Answer(None, f"not sent: {exc}", 0.0))
            secret = None
        if secret == "":
            record(1, outbound.Answer(None, "not sent: no signing secret is set (generate one)", 0.0))
        elif secret is not None:
            delivery = str(uuid.uuid4())
            sent["webhook"] = with_attempts(lambda: outbound.post_webhook(
                reports.notify_webhook_url, secret, payload, event=event, delivery=delivery,
                timeout=settings.SLIPWAY_NOTIFY_TIMEOUT, allowed=settings.SLIPWAY_OUTBOUND_ALLOWED_NETWORKS), record)
    members = reports.notify_members.filter(memberships__function=function, is_active=True).exclude(email="")
    recipients = sorted(set(members.values_list("email", flat=True)))
    if recipients:
        record = recorder(function.pk, deployment_id, Channel.EMAIL, event, ", ".join(recipients), secrets)
        body = f"{text}\n\n{payload['url']}\n" if payload["url"] else f"{text}\n"
        sent["email"] = with_attempts(lambda: _mail(f"[Slipway] {text[:150]}", body, recipients), record)
    return sent


def _mail(subject: str, body: str, recipients: list[str]) -> outbound.Answer:
    started = time.monotonic()
    try:
        send_mail(subject.replace("\n", " "), body, settings.DEFAULT_FROM_EMAIL, recipients)
    except Exception as exc:  # smtplib's and socket's errors alike: recorded, retried, never raised
        return outbound.Answer(None, f"{type(exc).__name__}: {exc}"[:300], _ms(started))
    return outbound.Answer(250, f"sent to {len(recipients)} recipient(s)", _ms(started))


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)

