"""Thin Celery tasks: load and claim the row, run the steps in order with a
stop check between them, record each step, always settle the row.

Every task has an explicit, stable name (queued messages outlive renames),
shared with the web side through portal.celery, and runs under the soft and
hard time limits from settings. A task delivered twice finds its row already
claimed and does nothing.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from portal import queue, retention, sources
from portal import rollback as rollbacks
from portal.celery import (
    COMMIT_STATUS_TASK,
    CONSOLE_CLEANUP_TASK,
    DEPLOY_TASK,
    DRIFT_CHECK_TASK,
    NOTIFY_TASK,
    RECONCILE_ALL_TASK,
    RECONCILE_TASK,
    RETENTION_TASK,
    ROLLBACK_TASK,
    SWEEP_TASK,
    app,
)
from portal.models import Build, ConsoleImage, Deployment, Function, WebhookDelivery
from portal.recording import Recorder, Stopped, check_stop, settle
from workers import feedback, lost, steps, sweeper  # noqa: F401 - lost connects the main process's signal

Status = Deployment.Status


def _claimed(pk: int, first: str, task_id: str) -> Deployment | None:
    deployment = Deployment.objects.select_related("function", "build").filter(pk=pk).first()
    if deployment is None:
        return None
    if not queue.claim(deployment, first, task_id or ""):
        queue.dispatch(deployment.function_id)  # it ended or waits: let the queue move on
        return None
    return deployment


@shared_task(name=DEPLOY_TASK, bind=True, ignore_result=True, acks_late=True)
def deploy(self, deployment_id: int) -> str:
    deployment = _claimed(deployment_id, Status.SOURCE, self.request.id)
    if deployment is None:
        return "not claimed"
    return settle(deployment, lambda: _deploy(steps.Run(deployment), Recorder(deployment)))


def _deploy(run: steps.Run, rec: Recorder) -> None:
    deployment = run.deployment
    with rec.step("source") as out:
        steps.fetch_source(run, out)
    if run.stale:  # an older commit than one live or queued: the delivery's log says why
        WebhookDelivery.mark_stale(deployment.pk, run.stale)
        raise Stopped(Status.SUPERSEDED, "stale", run.stale)
    check_stop(deployment)
    if deployment.kind == Deployment.Kind.REDEPLOY:  # ECR holds this build's image
        rec.skip("build", f"ECR already holds {run.function.ecr_repository}:{run.build.tag} "
                          f"({run.build.digest}); not rebuilt")
        rec.skip("push", "nothing to push")
    else:
        try:
            with rec.step("build", Status.BUILDING) as out:
                steps.build_image(run, out)
            check_stop(deployment)
            with rec.step("push", Status.PUSHING) as out:
                steps.push_image(run, out)
        finally:
            Build.fail_unfinished(run.build.pk)  # a no-op once pushed; otherwise it never stays building
    check_stop(deployment)
    _ship(run, rec)
    rollbacks.enter_shift(deployment)  # the last moment a rollback can still win
    with rec.step("shift") as out:
        steps.shift_alias(run, out)


def _ship(run: steps.Run, rec: Recorder) -> None:
    """update -> wait -> publish -> verify: the same steps for a deploy and a rollback's fallback."""
    waited = steps.enter_lambda_steps(run)
    with rec.step("update", Status.UPDATING) as out:
        if waited >= 0.5:
            out(f"waited {waited:.1f} s for another deployment of {run.function.name} to leave the Lambda")
        steps.update_function(run, out)
    with rec.step("wait", Status.WAITING) as out:
        steps.wait_updated(run, out)
    check_stop(run.deployment)
    with rec.step("publish", Status.PUBLISHING) as out:
        steps.publish_version(run, out)
    check_stop(run.deployment)
    with rec.step("verify", Status.VERIFYING) as out:
        # Golden cases gate deploys only: a rollback's fallback verifies with the smoke event.
        steps.verify_version(run, out, golden=run.deployment.kind != Deployment.Kind.ROLLBACK)
    check_stop(run.deployment)


@shared_task(name=ROLLBACK_TASK, bind=True, ignore_result=True, acks_late=True)
def rollback(self, deployment_id: int) -> str:
    """The rollback's code is the web's too (portal/rollback.py); the worker adds the
    fallback for a version that is gone: update, publish, verify."""
    deployment = _claimed(deployment_id, Status.CHECKING, self.request.id)
    if deployment is None:
        return "not claimed"
    return rollbacks.perform(deployment, ship=_ship)


@shared_task(name=SWEEP_TASK, ignore_result=True, soft_time_limit=60, time_limit=90)
def sweep() -> dict:
    """Fail deployments whose worker died (`worker-lost`), re-send lost messages."""
    return sweeper.sweep()


@shared_task(name=CONSOLE_CLEANUP_TASK, ignore_result=True, soft_time_limit=300, time_limit=360)
def console_cleanup() -> int:
    """Remove console images past their retention that no golden case holds (runs keep their answers)."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    cutoff = timezone.now() - timedelta(hours=settings.SLIPWAY_CONSOLE_KEEP_IMAGES_HOURS)
    return ConsoleImage.forget_unused(cutoff)


@shared_task(name=RETENTION_TASK, ignore_result=True, soft_time_limit=1800, time_limit=1920)
def retention_run(dry_run: bool | None = None, functions: list[str] | None = None) -> list[str]:
    """Delete old Lambda versions, then the images nothing runs (portal/retention.py); the
    periodic run takes its mode from settings. Returns one summary line per function."""
    dry = settings.SLIPWAY_RETENTION_DRY_RUN if dry_run is None else dry_run
    reports = retention.run(keep=settings.SLIPWAY_RETAIN_RELEASES, dry_run=dry, names=functions)
    return [report.summary() for report in reports]


@shared_task(name=RECONCILE_ALL_TASK, ignore_result=True, soft_time_limit=60, time_limit=90)
def reconcile_all() -> int:
    """Beat: one check for missed pushes per function that auto-deploys, each its own
    task, so each is bounded by its own timeout and one git host that fails or hangs
    never stops the others. A check not started within one interval expires: the
    next round replaces it instead of piling up behind builds."""
    ids = list(Function.objects.filter(auto_deploy=True, paused_reason="", archived_at__isnull=True)
               .order_by("pk").values_list("pk", flat=True))
    for pk in ids:
        app.send_task(RECONCILE_TASK, args=[pk], expires=settings.SLIPWAY_RECONCILE_INTERVAL)
    return len(ids)


@shared_task(name=RECONCILE_TASK, ignore_result=True, soft_time_limit=settings.SLIPWAY_RECONCILE_TIMEOUT + 30,
             time_limit=settings.SLIPWAY_RECONCILE_TIMEOUT + 60)
def reconcile(function_id: int) -> str:
    """Compare one function's branch head with what is live; deploy it if a push was missed."""
    function = Function.objects.filter(pk=function_id).first()
    if function is None:
        return "gone"
    return sources.reconcile(function, trigger=Deployment.Trigger.RECONCILE).outcome


# --- Feedback: GitLab commit status, notifications, drift (the `feedback` queue) ------------


@shared_task(name=COMMIT_STATUS_TASK, ignore_result=True, soft_time_limit=300, time_limit=330)
def commit_status(deployment_id: int, state: str) -> str:
    """Post one state of a deployment to GitLab, in order (workers/feedback.py)."""
    return feedback.report_commit_status(deployment_id, state)


@shared_task(name=NOTIFY_TASK, ignore_result=True, soft_time_limit=120, time_limit=150)
def notify(function_id: int, event: str, deployment_id: int | None = None, extra: dict | None = None) -> dict:
    """Email the chosen members and call the function's notification webhook."""
    return feedback.send_notification(function_id, event, deployment_id, extra or {})


@shared_task(name=DRIFT_CHECK_TASK, ignore_result=True, soft_time_limit=600, time_limit=660)
def drift_check(function_id: int | None = None) -> dict:
    """Compare what AWS reports with what Slipway last left there: one function, or (beat) all."""
    from portal import drift
    from portal.models import Function

    if function_id is None:
        return drift.check_all()
    function = Function.objects.filter(pk=function_id).first()
    return {"outcome": drift.check(function).outcome} if function else {}
