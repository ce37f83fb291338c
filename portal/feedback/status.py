"""Telling others what happened: GitLab commit statuses and notifications.

The web side and the worker only *ask* here: each call sends a task by name
after the current transaction commits (never inside a request's or a step's
critical path); the feedback queue's worker does the HTTP (portal/feedback/delivery.py).
Sending never raises: a broker that is down costs a status or a notification,
never a deployment.

Commit status names (GitLab's `name`, the "context" a merge check requires): the
function's oldest environment — the one the environments migration made out of the
function, or the one registered with a newer function — keeps the name it always had,
`<SLIPWAY_GITLAB_STATUS_NAME>/<function>`, so existing merge checks keep working; every
environment added later reports as `<prefix>/<function>/<environment>` (status_name).
A promotion soaking into an environment is `pending` there ("soaking, promotes at …").

Commit status order: each transition sends one task carrying its state. The
worker posts under a per-deployment lease (a conditional UPDATE on the row) and
only a state that ranks above the last one posted (pending < running < the
end), so GitLab never sees a state older than one it already has; a task that
finds the lease taken leaves, and the holder, after releasing it, posts the
deployment's current state if it ranks higher (see portal/feedback/delivery.py).
"""

from __future__ import annotations

import logging
import secrets
import urllib.parse
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.urls import reverse

from deploy import addresses, source
from deploy.errors import SlipwayError
from portal.celery import COMMIT_STATUS_TASK, GITLAB_DEPLOYMENT_TASK, NOTIFY_TASK
from portal.core import sending
from portal.deployments import Deployment
from portal.functions import Environment, Function, PreviewPolicy

log = logging.getLogger(__name__)
Status = Deployment.Status

# Deployment status -> GitLab commit status state.
PENDING, RUNNING, SUCCESS, FAILED, CANCELED = "pending", "running", "success", "failed", "canceled"
RANK = {"": -1, PENDING: 0, RUNNING: 1, SUCCESS: 2, FAILED: 2, CANCELED: 2}


def gitlab_state(status: str) -> str:
    if status in (Status.QUEUED, Status.SOAKING, *Deployment.GATED):  # a soak or a gate: waiting, not over
        return PENDING
    if status in (*Deployment.RUNNING, *Deployment.ROLLOUT):  # a rollout is running until its last tick
        return RUNNING
    return {Status.SUCCEEDED: SUCCESS, Status.FAILED: FAILED}.get(status, CANCELED)


def status_name(environment: Environment) -> str:
    """The commit status's name for deployments to `environment`: the function's oldest
    environment (lowest id: made with the function, or by the environments migration)
    keeps `<prefix>/<function>`; the others add `/<environment>`. The oldest, not the
    first in promotion order: putting staging in front of production must not move
    production's merge check onto staging. (Deleting the oldest environment passes the
    short name to the next oldest.)"""
    prefix = f"{settings.SLIPWAY_GITLAB_STATUS_NAME}/{environment.function.name}"
    oldest = (Environment.objects.filter(function_id=environment.function_id).order_by("pk")
              .values_list("pk", flat=True).first())
    return prefix if oldest in (None, environment.pk) else f"{prefix}/{environment.name}"


def gitlab_configured(function: Function) -> bool:
    settings = function.feedback_settings
    return bool(settings.gitlab_api_url and settings.gitlab_project and settings.gitlab_status_token)


def _send(name: str, args: list) -> None:
    try:
        sending.send_task(name, args=args)
    except Exception as exc:  # QueueDown, kombu's OperationalError and friends: a lost status, never a failed deploy
        log.warning("could not send %s%s: %s", name, args[:2], exc)


def wants_commit_status(deployment: Deployment) -> bool:
    """A preview's commit status is opt-in (its policy's commit_status): GitLab attaches an external
    status to a pipeline, so a failed preview could block merges under "Pipelines must succeed"."""
    if deployment.kind != Deployment.Kind.PREVIEW:
        return True
    return PreviewPolicy.objects.filter(environment_id=deployment.environment_id, commit_status=True).exists()


def preview_ref(deployment: Deployment) -> str | None:
    """The ref a preview's commit status names: its source branch, or for a fork the merge
    request's own ref (the commit is on no branch of the project); None: not a preview."""
    if not deployment.preview_id:
        return None
    preview = deployment.preview
    return source.merge_request_ref(preview.mr_iid) if preview.fork else preview.source_branch


def report_status(deployment: Deployment, state: str | None = None) -> None:
    """After commit: post the deployment's (new) state to GitLab, if the function reports there."""
    function = deployment.function
    if not gitlab_configured(function) or not wants_commit_status(deployment):
        return
    state = state or gitlab_state(deployment.status)
    pk = deployment.pk
    transaction.on_commit(lambda: _send(COMMIT_STATUS_TASK, [pk, state]))


def report_deployment(deployment: Deployment) -> None:
    """After commit: bring the deployment's GitLab deployment up to date (portal/feedback/gitlab_deployments.py),
    if the function reports to GitLab. The task decides what, if anything, to send."""
    if not gitlab_configured(deployment.function):
        return
    pk = deployment.pk
    transaction.on_commit(lambda: _send(GITLAB_DEPLOYMENT_TASK, [pk]))


def report_canceled(function: Function, pks: list[int]) -> None:
    """Queued deployments a newer request superseded: canceled in GitLab."""
    if not pks or not gitlab_configured(function):
        return
    for pk in pks:
        transaction.on_commit(lambda pk=pk: _send(COMMIT_STATUS_TASK, [pk, CANCELED]))


# The sweeper re-sends the final state of a deployment that ended this long ago and whose end
# GitLab has not had (the message was lost with a broker that was down, or the worker posting
# it died holding the lease); a few times at most, then the window has passed.
RESEND_AFTER = timedelta(minutes=2)
RESEND_UNTIL = timedelta(minutes=6)


def resend_unreported() -> list[int]:
    """Called by the sweep: send the end state again where GitLab has not had it."""
    from django.db.models import Q
    from django.db.models.functions import Now

    ended = (Deployment.objects.filter(status__in=Deployment.TERMINAL, finished_at__lt=Now() - RESEND_AFTER,
                                       finished_at__gt=Now() - RESEND_UNTIL)
             .exclude(commit_sha="").exclude(function__feedback_settings__gitlab_status_token="")
             .exclude(gitlab_reported__in=(SUCCESS, FAILED, CANCELED))
             .filter(Q(gitlab_lease_until__isnull=True) | Q(gitlab_lease_until__lt=Now())))
    resent = []
    for pk, status in ended.values_list("pk", "status"):
        _send(COMMIT_STATUS_TASK, [pk, gitlab_state(status)])
        resent.append(pk)
    return resent


def resend_unfinished_deployments() -> list[int]:
    """Called by the sweep: the GitLab deployment of one that ended in the same window, touched
    its Lambda, and whose end GitLab has not had (nor is being sent, under the lease)."""
    from django.db.models import Q
    from django.db.models.functions import Now

    from portal.feedback.gitlab_deployments import LAMBDA_STEPS

    ended = (Deployment.objects.filter(status__in=Deployment.TERMINAL, finished_at__lt=Now() - RESEND_AFTER,
                                       finished_at__gt=Now() - RESEND_UNTIL, gitlab_deployment_final="",
                                       steps__name__in=LAMBDA_STEPS)
             .exclude(commit_sha="").exclude(function__feedback_settings__gitlab_status_token="")
             .filter(Q(gitlab_deployment_lease_until__isnull=True) | Q(gitlab_deployment_lease_until__lt=Now()))
             .values_list("pk", flat=True).distinct())
    resent = list(ended)
    for pk in resent:
        _send(GITLAB_DEPLOYMENT_TASK, [pk])
    return resent


# --- Notifications ----------------------------------------------------------------------------

DEPLOY_FAILED, ROLLBACK, RESUME, DRIFT = "deploy_failed", "rollback", "resume", "drift"
# A deployment to a protected environment waits for approvals; a user approved or rejected one.
APPROVAL_REQUESTED, APPROVED, REJECTED = "approval_requested", "approved", "rejected"
FREEZE_OVERRIDE = "freeze_override"  # an owner let a frozen deployment through
EVENTS = (DEPLOY_FAILED, ROLLBACK, RESUME, DRIFT, APPROVAL_REQUESTED, APPROVED, REJECTED, FREEZE_OVERRIDE)


def notifies(function: Function) -> bool:
    settings = function.feedback_settings
    return bool(settings.notify_webhook_url) or settings.notify_members.exists()


def notify(function: Function, event: str, *, deployment_id: int | None = None, **extra) -> None:
    """After commit: tell the function's chosen members (email) and its webhook about `event`.
    `extra` holds scalars and small dicts only (it travels in the task message)."""
    if event not in EVENTS:
        raise ValueError(f"unknown notification event {event!r}")
    if not notifies(function):
        return
    fid = function.pk
    transaction.on_commit(lambda: _send(NOTIFY_TASK, [fid, event, deployment_id, extra]))


def after_finish(deployment: Deployment) -> None:
    """A deployment just ended (the worker finished it, or its lost worker was settled):
    its commit status, its GitLab deployment, and a notification when it failed or was a rollback."""
    report_status(deployment)
    report_deployment(deployment)
    if deployment.status == Status.FAILED:
        notify(deployment.function, DEPLOY_FAILED, deployment_id=deployment.pk)
    elif deployment.status == Status.SUCCEEDED and deployment.kind == Deployment.Kind.ROLLBACK:
        notify(deployment.function, ROLLBACK, deployment_id=deployment.pk)


# --- Links and URLs -------------------------------------------------------------------------


def absolute(path: str) -> str:
    """A link for people outside the portal; "" when SLIPWAY_BASE_URL is not set."""
    return f"{settings.SLIPWAY_BASE_URL}{path}" if settings.SLIPWAY_BASE_URL else ""


def deployment_link(pk: int) -> str:
    return absolute(reverse("portal-deployment", args=[pk]))


def function_link(name: str) -> str:
    return absolute(reverse("portal-function", args=[name]))


class BadURL(SlipwayError, ValueError):
    """A receiver URL Slipway will not call; the message says why (400 `invalid`)."""

    def __init__(self, message: str):
        super().__init__("invalid", message)


def validate_outgoing_url(url: str, what: str, *, base: bool = False) -> str:
    """https with a host, no credentials, no fragment; a `base` URL (GitLab's, which
    Slipway appends API paths to) no query either: a `?` would turn the path Slipway
    adds into a query and leave the owner the whole path. Plain http only in local
    mode (the embedded stack, and tests on 127.0.0.1). A host written as an address
    must be one SLIPWAY_OUTBOUND_ALLOWED_NETWORKS allows (a name is checked when
    the request is made, against what it resolves to then)."""
    url = (url or "").strip()
    if not url:
        return ""
    if len(url) > 500:
        raise BadURL(f"{what} is longer than 500 characters")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise BadURL(f"{what} must not contain spaces or control characters")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise BadURL(f"{what} must start with https://")
    if parts.scheme == "http" and not settings.LOCAL_MODE:
        raise BadURL(f"{what} must use https:// (plain http only in local mode)")
    if not parts.hostname:
        raise BadURL(f"{what} has no host")
    if parts.username or parts.password or "@" in parts.netloc:
        raise BadURL(f"{what} must not carry credentials (user:password@); Slipway sends its own")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise BadURL(f"{what} has an invalid port") from None
    if parts.fragment or url.endswith("#"):
        raise BadURL(f"{what} must not have a #fragment")
    if base and (parts.query or "?" in url):
        raise BadURL(f"{what} must not have a ?query: give the GitLab address only")
    given = addresses.literal(parts.hostname)
    if given is not None and not settings.SLIPWAY_OUTBOUND_ALLOWED_NETWORKS.permits(given):
        raise BadURL(f"{what}: {given} is outside SLIPWAY_OUTBOUND_ALLOWED_NETWORKS "
                     "(link-local and metadata addresses are never allowed)")
    return url


def new_webhook_secret() -> str:
    """The HMAC key of a function's notification webhook, shown once."""
    return "slwsec_" + secrets.token_urlsafe(32)
