"""The backstop: settle deployments whose worker vanished, re-send lost messages.

Times are compared on the database's clock (heartbeats are written with it
too), so a host whose clock is off never fails a live worker's row.
"""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.db.models.functions import Now

from portal import queue
from portal.models import AuditEvent, Build, Deployment, DeploymentStep
from workers.steps import work_root, workspace_name

log = logging.getLogger(__name__)
Status = Deployment.Status
UNSENT_GRACE = timedelta(seconds=10)  # a row this old whose message never left is sent again


def sweep() -> dict:
    stale_before = Now() - timedelta(seconds=settings.HEARTBEAT_STALE_SECONDS)
    lost = []
    for deployment in Deployment.objects.filter(status__in=Deployment.RUNNING, heartbeat_at__lt=stale_before):
        step = deployment.status
        if not deployment.settle_lost(stale_before, f"no heartbeat since {deployment.heartbeat_at:%H:%M:%S} "
                                      f"while {step}; the worker running it stopped. The alias was not moved by "
                                      "it unless its shift step completed."):
            continue  # it beat meanwhile, or ended
        lost.append(deployment.pk)
        DeploymentStep.objects.filter(deployment=deployment, status=DeploymentStep.Status.RUNNING).update(
            status=DeploymentStep.Status.FAILED, finished_at=Now())
        Build.fail_unfinished(deployment.build_id)
        shutil.rmtree(work_root() / "workspaces" / workspace_name(deployment.pk), ignore_errors=True)
        AuditEvent.record("deployment.worker_lost", actor_label="system", function=deployment.function,
                          deployment=deployment.pk, step=step)
        queue.dispatch(deployment.function_id)
    # Queued rows whose message never made it (broker down) or was lost.
    unsent = Q(enqueued_at__isnull=True, created_at__lt=Now() - UNSENT_GRACE)
    waiting = Deployment.objects.filter(unsent | Q(enqueued_at__lt=Now() - queue.RESEND_AFTER), status=Status.QUEUED)
    resent = sorted(set(waiting.values_list("function_id", flat=True)))
    for function_id in resent:
        queue.dispatch(function_id)
    if lost:
        log.warning("sweeper failed %d deployment(s) with worker-lost: %s", len(lost), lost)
    return {"worker_lost": lost, "redispatched_functions": resent}
