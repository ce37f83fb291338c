"""Thin Celery tasks: they take primary keys, claim rows and call deploy/.

Every task has an explicit, stable name (queued messages outlive renames)
and inherits the soft/hard time limits from settings.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

log = logging.getLogger(__name__)


@shared_task(name="slipway.sweep", ignore_result=True, soft_time_limit=60, time_limit=90)
def sweep() -> dict:
    """Settle deployments whose worker died: nothing stays running forever.

    A running row whose heartbeat is older than HEARTBEAT_STALE_SECONDS lost
    its worker (killed, OOM, host gone). It is failed with `worker-lost`, never
    silently resumed: the pipeline's side effects are not idempotent enough
    to continue from the middle.
    """
    from portal.models import AuditEvent, Deployment

    cutoff = timezone.now() - timedelta(seconds=settings.HEARTBEAT_STALE_SECONDS)
    stale = Deployment.objects.filter(status__in=Deployment.RUNNING, heartbeat_at__lt=cutoff)
    lost = []
    for deployment in stale:
        if deployment.finish(Deployment.Status.FAILED, "worker-lost",
                             f"no heartbeat since {deployment.heartbeat_at:%H:%M:%S} while {deployment.status}; "
                             "the worker running it stopped"):
            lost.append(deployment.pk)
            AuditEvent.record("deployment.worker_lost", function=deployment.function,
                              deployment=deployment.pk, step=deployment.status)
    if lost:
        log.warning("sweeper failed %d deployment(s) with worker-lost: %s", len(lost), lost)
    return {"worker_lost": lost}
