"""Settling deployments whose worker is gone, and re-sending lost messages.

Two paths end such a row. The worker's main process notices at once when one
of its pool processes dies mid-task (SIGKILL, the OOM killer): Celery reports
it as a WorkerLostError through `task_failure` in that main process
(workers/lost.py), which settles the row the dead task had claimed. The
heartbeat sweep is the backstop for hosts that vanish whole, main process
included; its times are compared on the database's clock (heartbeats are
written with it too), so a host whose clock is off never fails a live row.

Either way the row records the truth: one whose shift step completed is live
and ends succeeded; one lost as its rollout began is aborted (the stable version put
back); any other ends failed as `worker-lost`. Rollouts between ticks have no worker and
no heartbeat: one whose tick is three ticks overdue is aborted here, and an abort left
undone as long is performed here (rollout.sweep). A row a gate holds
(Deployment.GATED) has no worker and no message to re-send: neither rule sees it.
"""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.db.models.functions import Now

from portal.deployments import events, promotion, queue, rollout
from portal.deployments.models import Build, Deployment, DeploymentStep
from portal.deployments.steps import work_root, workspace_name
from portal.functions import AuditEvent

log = logging.getLogger(__name__)
Status = Deployment.Status
UNSENT_GRACE = timedelta(seconds=10)  # a row this old whose message never left is sent again


def settle_lost(deployment: Deployment, condition: Q, why: str, noticed_by: str) -> bool:
    """End `deployment` (its worker is gone) while `condition` holds, clean up after
    it and let its environment's next deployment go. False: it beat meanwhile, or ended."""
    step = deployment.status
    if step == Status.SHIFTING and rollout.abort_lost_start(deployment, condition, f"{why} while its rollout began"):
        return True  # its first weight may be on the alias: the abort puts the stable version back
    shift = deployment.steps.filter(name="shift").order_by("-position").first()
    live = shift is not None and shift.status == DeploymentStep.Status.SUCCEEDED
    if live:
        message = (f"{why} after its shift step completed: version {deployment.version} is live behind "
                   f"{deployment.environment.alias}; settled as succeeded by the {noticed_by}")
    else:
        message = f"{why} while {step}; the alias was not moved by it (its shift step never completed)"
    if not deployment.settle_lost(condition, message, live=live):
        return False
    DeploymentStep.objects.filter(deployment=deployment, status=DeploymentStep.Status.RUNNING).update(
        status=DeploymentStep.Status.FAILED, finished_at=Now())
    Build.fail_unfinished(deployment.build_id)
    shutil.rmtree(work_root() / "workspaces" / workspace_name(deployment.pk), ignore_errors=True)
    AuditEvent.record("deployment.worker_lost", actor_label="system", function=deployment.function,
                      deployment=deployment.pk, step=step, noticed_by=noticed_by,
                      settled_as=Status.SUCCEEDED if live else Status.FAILED)
    events.finished.send(Deployment, deployment=deployment)
    promotion.after_finished(deployment)  # live after its shift: promoted on; failed: soaks out of it cancelled
    queue.dispatch(deployment.environment_id)
    return True


def sweep() -> dict:
    stale_before = Now() - timedelta(seconds=settings.HEARTBEAT_STALE_SECONDS)
    lost, live = [], []
    for deployment in Deployment.objects.filter(status__in=Deployment.RUNNING, heartbeat_at__lt=stale_before):
        why = f"no heartbeat since {deployment.heartbeat_at:%H:%M:%S}: the worker running it stopped"
        if settle_lost(deployment, Q(heartbeat_at__lt=stale_before), why, "sweeper"):
            (live if deployment.status == Status.SUCCEEDED else lost).append(deployment.pk)
    # Queued rows whose message never made it (broker down) or was lost.
    unsent = Q(enqueued_at__isnull=True, created_at__lt=Now() - UNSENT_GRACE)
    waiting = Deployment.objects.filter(unsent | Q(enqueued_at__lt=Now() - queue.RESEND_AFTER), status=Status.QUEUED)
    queues = sorted(set(waiting.values_list("function_id", "environment_id")))
    for _function_id, environment_id in queues:
        queue.dispatch(environment_id)
    resent = sorted({function_id for function_id, _ in queues})
    if lost or live:
        log.warning("sweeper settled deployment(s) whose worker stopped: failed %s, live after their shift %s",
                    lost, live)
    # Rollouts are outside the heartbeat rule (no worker between ticks): their own, by next_tick_at.
    return {"worker_lost": lost, "live_after_shift": live, "redispatched_functions": resent, **rollout.sweep()}
