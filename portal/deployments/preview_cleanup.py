"""Removing a merge request's preview from its Lambda: the function URL, the URL's permission
statements and the alias mr-<iid>, in that order (deploy/lambdas.remove_alias). The version
stays, unkept: retention deletes it once no alias points at it.

A preview is closed first (`close`: the MR closed or merged, the TTL, the cap, an owner), under
the lock its caller holds; from then on no deployment of it can enter its alias step
(preview_pipeline.enter_alias). The removal (`remove`, a task sent after the close commits)
runs in the MR's queue: while a deployment of the MR still runs it does nothing, and that
deployment's end sends it again (`after_deployment`), so an alias step entered just before the
close is removed right after it. Other MRs' deployments on the same Lambda never touch this
alias, so they are not waited for. The sweep (beat) closes previews idle past the TTL, retries
closed ones, and removes any mr-* alias of a preview Lambda that no open preview owns.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Coalesce, Now

from deploy import lambdas
from portal.celery import PREVIEW_CLEANUP_TASK
from portal.core import sending
from portal.deployments import events
from portal.deployments.models import Deployment, Preview
from portal.functions import AuditEvent, Environment, Function

log = logging.getLogger(__name__)
Status = Deployment.Status
State = Preview.State
_ALIAS = re.compile(r"^mr-(\d+)$")


def close(preview: Preview, reason: str) -> bool:
    """Close an open preview for Slipway's own reasons (the TTL, the cap; the caller's transaction,
    holding the lock order: function, environment, preview); its queued deployments end cancelled
    and the removal is announced (events.preview_closed). False: it was not open."""
    if not Preview.objects.filter(pk=preview.pk, state=State.OPEN).update(state=State.CLOSED, closed_at=Now(),
                                                                          removed_reason=reason[:300]):
        return False
    Deployment.objects.filter(preview=preview, status=Status.QUEUED).update(
        status=Status.CANCELLED, finished_at=Now(), error_code="preview-closed",
        error_message=f"the preview closed before it ran: {reason}"[:500])
    AuditEvent.record("preview.closed", actor_label="slipway", function=preview.function, preview=preview.pk,
                      mr_iid=preview.mr_iid, reason=reason[:300])
    events.preview_closed.send(Preview, preview=preview)
    return True


def on_closed(sender, preview: Preview, **_) -> None:
    """events.preview_closed (a merge request closed or merged, a person, the TTL or the cap):
    the removal is sent once the close commits (portal/apps.py connects this)."""
    pk = preview.pk
    transaction.on_commit(lambda: request(pk))


def lock(preview: Preview) -> None:
    """The lock order for a preview: its function row, its environment row, then its own."""
    Function.objects.select_for_update().get(pk=preview.function_id)
    Environment.objects.select_for_update().get(pk=preview.environment_id)
    Preview.objects.select_for_update().get(pk=preview.pk)


def request(pk: int) -> None:
    """Send the removal; a broker that is down leaves it to the sweep."""
    try:
        sending.send_task(PREVIEW_CLEANUP_TASK, args=[pk])
    except Exception as exc:  # QueueDown and friends
        log.warning("could not send the removal of preview %s (%s); the sweep will retry", pk, exc)


def after_deployment(deployment: Deployment) -> None:
    """A preview deployment ended: if its preview closed meanwhile, remove what it may have made."""
    if deployment.preview_id and Preview.objects.filter(pk=deployment.preview_id, state=State.CLOSED).exists():
        request(deployment.preview_id)


def remove(pk: int) -> str:
    """Remove a closed preview's URL, statements and alias, then mark it removed; nothing while a
    deployment of its merge request runs (that one's end sends this again)."""
    preview = Preview.objects.select_related("environment", "function").filter(pk=pk).first()
    if preview is None or preview.state != State.CLOSED:
        return "not closed"
    running = Deployment.objects.filter(preview=preview, status__in=Deployment.RUNNING).values_list(
        "pk", flat=True).first()
    if running:
        return f"waits for deployment #{running}"
    removed = lambdas.remove_alias(preview.environment.lambda_name, preview.alias)
    if not Preview.objects.filter(pk=pk, state=State.CLOSED).update(state=State.REMOVED, removed_at=Now(),
                                                                   version="", url="", url_id=""):
        return "reopened meanwhile"
    AuditEvent.record("preview.removed", actor_label="slipway", function=preview.function, mr=preview.mr_iid,
                      removed=removed, reason=preview.removed_reason)
    events.preview_changed.send(Preview, preview=preview)
    return f"removed {', '.join(removed) or 'nothing (gone already)'}"


def idle(previews):
    """The previews with no preview deployment queued or running."""
    busy = Deployment.objects.filter(preview=OuterRef("pk"), status__in=(Status.QUEUED, *Deployment.RUNNING))
    return previews.exclude(Exists(busy))


def sweep() -> dict:
    """Beat: close open previews idle for SLIPWAY_PREVIEW_TTL_DAYS since their last commit, send
    the removal of closed ones again, and remove mr-* aliases no open preview owns."""
    cutoff = Now() - timedelta(days=settings.SLIPWAY_PREVIEW_TTL_DAYS)
    expired = idle(Preview.objects.annotate(clock=Coalesce("last_commit_at", "created_at"))
                   .filter(state=State.OPEN, clock__lt=cutoff))
    closed = 0
    for preview in expired.select_related("function"):
        with transaction.atomic():
            lock(preview)
            closed += close(preview, f"no new commit for {settings.SLIPWAY_PREVIEW_TTL_DAYS} days")
    retried = 0
    for pk in Preview.objects.filter(state=State.CLOSED).values_list("pk", flat=True):
        retried += remove(pk).startswith("removed")
    return {"closed": closed, "removed": retried, "orphans": remove_orphans()}


def remove_orphans() -> int:
    """Remove every mr-* alias (with its URL and statements) of a preview Lambda whose merge request
    has no open or closing preview: one left by a crash, a deleted row, or a clean-up that failed."""
    count = 0
    for environment in Environment.objects.filter(preview=True):
        if lambdas.get_configuration(environment.lambda_name) is None:
            continue
        kept = set(Preview.objects.filter(Q(state=State.OPEN) | Q(state=State.CLOSED), environment=environment)
                   .values_list("mr_iid", flat=True))
        for alias in lambdas.list_aliases(environment.lambda_name):
            found = _ALIAS.match(alias["Name"])
            if found and int(found.group(1)) not in kept:
                lambdas.remove_alias(environment.lambda_name, alias["Name"])
                AuditEvent.record("preview.orphan_removed", actor_label="slipway", function=environment.function,
                                  alias=alias["Name"])
                count += 1
    return count
