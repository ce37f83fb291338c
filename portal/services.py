"""Requests that start work: a row first, the task after commit.

Shared by the web UI, the API, webhooks and manage.py, so every entry point
validates the same way and leaves the same trail.
"""

from __future__ import annotations

import re

from django.db import transaction

from deploy.source import validate_ref
from portal import queue
from portal.models import AuditEvent, Deployment, Function

_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")


class RequestRefused(Exception):
    """The request cannot be accepted; the message says why."""


def _actor(user, trigger: str) -> dict:
    return {"actor": user, "actor_label": user.get_username() if user else trigger}


def request_deploy(function: Function, *, trigger: str, user=None, ref: str = "", commit: str = "") -> Deployment:
    """Queue a deploy of `ref` (branch/tag) or `commit` (full SHA); default: the function's branch."""
    if ref and commit:
        raise RequestRefused("give a ref or a commit, not both")
    if commit and not _FULL_SHA.match(commit):
        raise RequestRefused(f"{commit!r} is not a full 40-character commit SHA")
    try:
        validate_ref(ref or commit or function.branch)
    except Exception as exc:
        raise RequestRefused(str(getattr(exc, "message", exc))) from None
    with transaction.atomic():
        deployment = queue.request(function, trigger=trigger, requested_by=user,
                                   ref=ref or commit or function.branch, commit_sha=commit)
        AuditEvent.record("deployment.requested", function=function, deployment=deployment.pk,
                          ref=deployment.ref, trigger=trigger, **_actor(user, trigger))
    return deployment


def rollback_target(function: Function, *, to: str = "") -> Deployment:
    """The successful deployment to put back: by version number, by commit SHA
    prefix, or (default) the one live before the current one."""
    done = (Deployment.objects.filter(function=function, status=Deployment.Status.SUCCEEDED, build__isnull=False)
            .exclude(version="").select_related("build").order_by("-finished_at", "-pk"))
    if to:
        if to.isdigit():
            target = done.filter(version=to).first()
        elif re.fullmatch(r"[0-9a-f]{7,40}", to):
            target = done.filter(commit_sha__startswith=to).first()
        else:
            raise RequestRefused(f"{to!r} is neither a version number nor a commit SHA")
        if target is None:
            raise RequestRefused(f"no successful deployment of {function.name} matches {to!r}")
        return target
    live = done.first()
    if live is None:
        raise RequestRefused(f"{function.name} has no successful deployment to roll back from")
    target = done.exclude(version=live.version).first()
    if target is None:
        raise RequestRefused(f"{function.name} has no earlier release than version {live.version}")
    return target


def request_rollback(function: Function, *, trigger: str, user=None, to: str = "") -> Deployment:
    """Queue a rollback; it supersedes queued deploys, stops running ones before
    their shift, and pauses auto-deploy until someone resumes it."""
    target = rollback_target(function, to=to)
    with transaction.atomic():  # queue.request locks the function first: one lock order everywhere
        rollback = queue.request(
            function, kind=Deployment.Kind.ROLLBACK, trigger=trigger, requested_by=user,
            ref=target.commit_sha, commit_sha=target.commit_sha, build=target.build, target_version=target.version,
        )
        who = user.get_username() if user else trigger
        Function.objects.filter(pk=function.pk).update(
            paused_reason=f"rolled back to version {target.version} by {who}; resume auto-deploy when fixed")
        AuditEvent.record("deployment.rollback_requested", function=function, deployment=rollback.pk,
                          to_version=target.version, commit=target.commit_sha, **_actor(user, trigger))
    return rollback


def cancel(deployment: Deployment, *, user=None, trigger: str = "cli") -> bool:
    """Cancel a queued deployment at once, or a running one before its update step."""
    if not deployment.request_cancel():
        return False
    if deployment.is_terminal:  # it was queued: whatever waited behind it may go now
        transaction.on_commit(lambda: queue.dispatch(deployment.function_id))
    AuditEvent.record("deployment.cancel_requested", function=deployment.function, deployment=deployment.pk,
                      **_actor(user, trigger))
    return True


def resume_auto_deploy(function: Function, *, user=None, trigger: str = "cli") -> None:
    """Lift the pause a rollback put on auto-deploy."""
    Function.objects.filter(pk=function.pk).update(paused_reason="")
    AuditEvent.record("function.auto_deploy_resumed", function=function, **_actor(user, trigger))
