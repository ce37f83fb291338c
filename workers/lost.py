"""A pool process that dies mid-deployment is noticed by its worker's main process.

With acks_late and reject_on_worker_lost off, Celery 5.5's main process turns
the death of a pool child that was running a task (SIGKILL, the OOM killer)
into a WorkerLostError as soon as it sees the child exit (the prefork
AsynPool's on_job_process_lost; `worker_lost_wait` only applies to billiard's
plain pool), acknowledges the message (it is not run again) and sends
`task_failure` for it *in the main process*
(celery.worker.request.Request.on_failure). That is the moment to settle the
row: the dead task's id is the one that claimed it (Deployment.claim), so
nothing else's row is touched, and the function's next deployment starts at
once instead of after the heartbeat window.

The rollout tasks (a tick, an abort) hold rollouts by task id (Rollout.tick_task_id):
their rollouts are released here (release_rollouts).

The sweeper stays the backstop: for a host that vanishes with its main
process, and for a task killed at the hard time limit (Celery sends no
task_failure for that one)."""

from __future__ import annotations

import logging

from billiard.exceptions import WorkerLostError
from celery import signals
from django import db
from django.db.models import Q
from django.db.models.functions import Now

from portal.celery import DEPLOY_TASK, ROLLBACK_TASK, ROLLOUT_ABORT_TASK, ROLLOUT_TICK_TASK
from portal.deployments import queue, sweeper
from portal.models import Deployment, Rollout

log = logging.getLogger(__name__)


@signals.task_failure.connect
def settle_after_lost_worker(sender=None, task_id=None, exception=None, args=None, **_) -> None:
    name = getattr(sender, "name", None)
    if not isinstance(exception, WorkerLostError):
        return
    if name in (ROLLOUT_TICK_TASK, ROLLOUT_ABORT_TASK):
        release_rollouts(task_id, due=name == ROLLOUT_TICK_TASK)
        return
    if name not in (DEPLOY_TASK, ROLLBACK_TASK):
        return
    pk = (args or [None])[0]
    db.close_old_connections()
    try:
        deployment = Deployment.objects.select_related("function").filter(pk=pk, task_id=task_id).first()
        if deployment is None or deployment.is_terminal or deployment.status in Deployment.GATED:
            return  # a held row has no worker: its task ended when a gate held it
        if deployment.status == Deployment.Status.QUEUED:  # it died before claiming: send the row again now
            Deployment.objects.filter(pk=pk, status=Deployment.Status.QUEUED).update(enqueued_at=None)
            queue.dispatch(deployment.environment_id)
            return
        why = f"the worker process running it died ({exception})"
        if sweeper.settle_lost(deployment, Q(task_id=task_id), why, "worker's main process"):
            log.warning("deployment %s settled as %s: %s", pk, deployment.status, why)
    except Exception:  # the sweeper settles it later; the main process must carry on
        log.exception("could not settle deployment %s after its worker process died", pk)
    finally:
        db.close_old_connections()


def release_rollouts(task_id: str, *, due: bool) -> None:
    """A tick (or an abort) died holding rollouts: let them go, no AWS call here (this is
    Celery's main process). A tick's are due now: the next tick reads the alias and adopts
    the weight it finds if it is the planned next one, else aborts. An abort's is performed
    by the sweeper once it is overdue."""
    db.close_old_connections()
    try:
        fields = {"next_tick_at": Now()} if due else {}
        count = Rollout.objects.filter(tick_task_id=task_id).update(tick_task_id="", tick_lease_until=None, **fields)
        if count:
            log.warning("released %s rollout(s) held by lost task %s", count, task_id)
    except Exception:  # their lease runs out anyway
        log.exception("could not release the rollouts of lost task %s", task_id)
    finally:
        db.close_old_connections()
