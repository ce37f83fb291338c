"""Missed pushes: compare the branch head on the remote with what Slipway deployed,
and request a deploy of the head when auto-deploy would have. The git read is
bounded and holds no lock (does I/O through deploy.source).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Prefetch
from django.db.models.functions import Now

from deploy import source
from deploy.errors import DeployError
from deploy.logs import mask
from portal.core.errors import RequestRefused
from portal.deployments.models import Deployment
from portal.deployments.releases import went_live
from portal.deployments.requesting import FULL_SHA, queue_deploy
from portal.functions import Environment, Function
from portal.sources import SourceAccess, credentials_for, log_secrets

log = logging.getLogger(__name__)


def request_reconcile_deploy(function: Function, *, head: str, user=None, trigger: str = "cli"):
    """Queue a deploy of `head`, the commit the branch holds on the remote, if auto-deploy
    would have deployed it and nothing did: checked again here under the function's
    lock, so two checks at once (the button and the periodic task) queue it once.
    Like a webhook deploy it supersedes nothing; the worker skips it if it turns out
    older than one live or queued (workers/steps.stale_reason)."""
    from portal.deployments.reconciling import Reconciled, blocked_reason

    if not FULL_SHA.match(head):
        raise RequestRefused(f"{head!r} is not a full 40-character commit SHA")
    with transaction.atomic():
        # The locks queue.request takes: the function row, then its environments' (read with it).
        function = (Function.objects.select_for_update()
                    .prefetch_related(Prefetch("environments", queryset=Environment.objects.select_for_update()))
                    .get(pk=function.pk))
        blocked = blocked_reason(function)
        if blocked:
            return blocked
        environment = function.first_environment  # where pushes deploy (its row is locked by queue.request)
        tried = (Deployment.objects.filter(environment=environment, commit_sha=head)
                 .exclude(kind=Deployment.Kind.ROLLBACK).order_by("-pk").first())
        if tried is not None:
            if tried.status == Deployment.Status.SUCCEEDED:
                live = went_live(environment).values_list("commit_sha", flat=True).first()
                also = "" if live == head else f"; {(live or '')[:12]} went live after it, explicitly"
                return Reconciled("up-to-date", f"{function.branch} is at {head[:12]}, deployed by #{tried.pk}"
                                  + also, head=head, deployment=tried)
            if not tried.is_terminal:
                return Reconciled("in-progress", f"{head[:12]} is already {tried.status} (deployment #{tried.pk})",
                                  head=head, deployment=tried)
            return Reconciled("already-tried", f"{head[:12]} was tried already: deployment #{tried.pk} "
                              f"{tried.status}; deploy it explicitly to try again", head=head, deployment=tried)
        unresolved = Deployment.objects.filter(environment=environment, ref=function.branch, commit_sha="",
                                               status__in=(Deployment.Status.QUEUED, *Deployment.RUNNING)).first()
        if unresolved is not None:
            return Reconciled("in-progress", f"deployment #{unresolved.pk} of {function.branch} is "
                              f"{unresolved.status}: it deploys the head", head=head, deployment=unresolved)
        deployment = queue_deploy(function, trigger=Deployment.Trigger.RECONCILE, user=user, ref=function.branch,
                                   commit=head, supersede=False, locked=True, missed_push=head, checked_by=trigger)
    return Reconciled("deployed", f"{function.branch} is at {head[:12]}, which was never deployed: "
                      f"deployment #{deployment.pk} queued", head=head, deployment=deployment)


@dataclass
class Reconciled:
    """What one check for missed pushes found, as the page, the API and the task report it."""

    outcome: str  # deployed, up-to-date, in-progress, already-tried, paused, off, archived, error
    message: str
    head: str = ""
    deployment: Deployment | None = None
    code: str = ""  # the error's code, for outcome "error"


def reconcile(function: Function, *, user=None, trigger: str = "cli") -> Reconciled:
    """Compare the branch head on the remote with what Slipway deployed, and request a
    deploy of the head (trigger "reconcile") when auto-deploy would have: on, not
    paused, not archived, and no deployment of that commit yet (a head that failed is
    not retried for ever; deploy it explicitly to try again).

    The ls-remote runs before any transaction, bounded by SLIPWAY_RECONCILE_TIMEOUT:
    no lock is held while the git host answers. The request then re-checks all of it
    under the function's lock (request_reconcile_deploy). What it found is
    kept on the function for its page."""
    found = _reconcile(function, user=user, trigger=trigger)
    SourceAccess.objects.filter(function_id=function.pk).update(
        reconcile_checked_at=Now(), reconcile_outcome=found.outcome, reconcile_message=found.message[:300])
    return found


def _reconcile(function: Function, *, user, trigger: str) -> Reconciled:
    blocked = blocked_reason(function)
    if blocked:
        return blocked
    try:
        head = source.remote_head(function.repository_url, function.branch,
                                  allow_local=settings.SLIPWAY_ALLOW_LOCAL_REPOSITORIES,
                                  credentials=credentials_for(function), timeout=settings.SLIPWAY_RECONCILE_TIMEOUT,
                                  allowed=settings.SLIPWAY_OUTBOUND_ALLOWED_NETWORKS)
    except DeployError as exc:
        message = mask(exc.message, *log_secrets(function))
        log.warning("reconcile of %s: %s: %s", function.name, exc.code, message)
        return Reconciled("error", f"could not read the head of {function.branch}: {message}", code=exc.code)
    return request_reconcile_deploy(function, head=head, user=user, trigger=trigger)


def blocked_reason(function: Function) -> Reconciled | None:
    if function.is_archived:
        return Reconciled("archived", f"{function.name} is archived: it accepts no deploys")
    if not function.auto_deploy:
        return Reconciled("off", "auto-deploy is off: missed pushes are not deployed")
    paused = function.first_environment.paused_reason  # pushes deploy to the first environment
    if paused:
        return Reconciled("paused", f"auto-deploy is paused ({paused}): resume it first")
    return None
