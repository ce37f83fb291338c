"""A canary or linear rollout: the alias weighted between the stable version and the new one,
advanced by short ticks of the beat (never one long task), watched by health signals.

The deployment's status says where it is: ROLLING_OUT between ticks, ABORTING once an abort
is decided (slipway.rollout_abort puts the alias back on the stable version, routing cleared),
then FAILED `canary-aborted` or SUCCEEDED. The Rollout row holds the plan's position; every
change is a RolloutEvent. Manual control (pause, resume, promote now, abort) only writes rows:
the next tick (or the abort task) does the AWS calls, in a pool process.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from deploy.errors import UserError
from portal.celery import ROLLOUT_ABORT_TASK
from portal.core import sending
from portal.deployments.models import Deployment, Rollout, RolloutEvent
from portal.functions import AuditEvent, Environment

Status = Deployment.Status
Action = RolloutEvent.Action


def current(environment: Environment) -> Rollout | None:
    """The environment's rollout that holds its alias now (rolling out or aborting)."""
    return (Rollout.objects.select_related("deployment")
            .filter(deployment__environment=environment, deployment__status__in=Deployment.ROLLOUT)
            .order_by("-pk").first())


def record(rollout: Rollout, action: str, note: str = "", weight: float | None = None) -> RolloutEvent:
    return RolloutEvent.objects.create(rollout=rollout, action=action, note=note[:500],
                                       weight=rollout.weight if weight is None else weight)


def _audit(deployment: Deployment, action: str, user, **detail) -> None:
    AuditEvent.record(f"deployment.rollout_{action}", actor=user, actor_label="" if user else "system",
                      function=deployment.function, deployment=deployment.pk,
                      environment=deployment.environment.name, **detail)


def _running(deployment: Deployment) -> Rollout:
    """The deployment's rollout, locked, while it is rolling out; else `rollout-not-running`."""
    rollout = (Rollout.objects.select_for_update().filter(deployment=deployment,
                                                          deployment__status=Status.ROLLING_OUT).first())
    if rollout is None:
        deployment.refresh_from_db(fields=["status"])
        raise UserError("rollout-not-running", f"deployment #{deployment.pk} is {deployment.status}, not rolling "
                        "out: nothing to pause, resume, promote or abort", status=409)
    return rollout


def pause(deployment: Deployment, user) -> Deployment:
    """Hold the weight where it is: the tick still watches the signals, and aborts once it was
    paused longer than SLIPWAY_ROLLOUT_PAUSE_MAX."""
    with transaction.atomic():
        rollout = _running(deployment)
        if rollout.paused_at is None:
            Rollout.objects.filter(pk=rollout.pk).update(paused_at=Now())
            record(rollout, Action.PAUSE, f"paused by {user.get_username() if user else 'system'}")
            _audit(deployment, "paused", user, weight=rollout.weight)
    deployment.refresh_from_db()
    return deployment


def resume(deployment: Deployment, user) -> Deployment:
    """Go on from where it was paused: the step keeps the time it had left."""
    with transaction.atomic():
        rollout = _running(deployment)
        if rollout.paused_at is not None:
            now = timezone.now()
            started = rollout.step_started_at or now
            Rollout.objects.filter(pk=rollout.pk).update(paused_at=None, next_tick_at=now,
                                                         step_started_at=started + (now - rollout.paused_at))
            record(rollout, Action.RESUME, f"resumed by {user.get_username() if user else 'system'}")
            _audit(deployment, "resumed", user, weight=rollout.weight)
    deployment.refresh_from_db()
    return deployment


def promote_now(deployment: Deployment, user) -> Deployment:
    """Skip the remaining steps: the next tick (due now) moves the alias to the new version."""
    with transaction.atomic():
        rollout = _running(deployment)
        if not rollout.promote_now:
            Rollout.objects.filter(pk=rollout.pk).update(promote_now=True, paused_at=None, next_tick_at=Now())
            record(rollout, Action.PROMOTE, f"promoted now by {user.get_username() if user else 'system'}")
            _audit(deployment, "promoted", user, weight=rollout.weight)
    deployment.refresh_from_db()
    return deployment


def request_abort(deployment: Deployment, signal: str, reason: str, *, user=None) -> bool:
    """ROLLING_OUT -> ABORTING in one conditional UPDATE, the signal recorded, and
    slipway.rollout_abort sent after commit. False: it was not rolling out (any more)."""
    with transaction.atomic():
        if not Deployment.objects.filter(pk=deployment.pk, status=Status.ROLLING_OUT).update(
                status=Status.ABORTING):
            return False
        rollout = Rollout.objects.get(deployment_id=deployment.pk)
        Rollout.objects.filter(pk=rollout.pk).update(abort_signal=signal[:300], abort_reason=reason,
                                                     tick_task_id="", tick_lease_until=None)
        record(rollout, Action.ABORT, f"{signal}: {reason}")
        deployment.refresh_from_db()
        _audit(deployment, "aborted", user, signal=signal[:300], reason=reason[:500])
        pk = deployment.pk
        transaction.on_commit(lambda: send_abort(pk))
    return True


def send_abort(pk: int) -> None:
    """Send the abort task; a broker that is down leaves the row aborting for the sweeper."""
    try:
        sending.send_task(ROLLOUT_ABORT_TASK, args=[pk], deployment=pk)
    except Exception:  # QueueDown and the broker's errors: the sweeper performs aborts left behind
        pass
