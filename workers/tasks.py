"""Thin Celery tasks: each loads its row or arguments and calls the domain
(portal/deployments/pipeline.py runs the steps; retention, reconcile, drift,
feedback each one call).

Every task has an explicit, stable name (queued messages outlive renames),
shared with the web side through portal.celery, and runs under the soft and
hard time limits from settings. A task delivered twice finds its row already
claimed and does nothing.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.db.models import OuterRef, Subquery

from portal import deployments
from portal.celery import (
    COMMIT_STATUS_TASK,
    CONSOLE_CLEANUP_TASK,
    DEPLOY_TASK,
    DRIFT_CHECK_TASK,
    GATES_DUE_TASK,
    GITLAB_DEPLOYMENT_TASK,
    NOTIFY_TASK,
    PREVIEW_CLEANUP_TASK,
    PREVIEW_NOTE_TASK,
    PREVIEW_SWEEP_TASK,
    PROMOTE_DUE_TASK,
    RECONCILE_ALL_TASK,
    RECONCILE_TASK,
    RETENTION_TASK,
    ROLLBACK_TASK,
    ROLLOUT_ABORT_TASK,
    ROLLOUT_TICK_TASK,
    SWEEP_TASK,
    app,
)
from portal.deployments import (
    gates,
    pipeline,
    preview_cleanup,
    preview_pipeline,
    promotion,
    retention,
    rollout,
    sweeper,
)
from portal.feedback import delivery as feedback
from portal.feedback import gitlab_deployments, preview_notes, status
from portal.models import ConsoleImage, Deployment, Environment, Function
from workers import lost  # noqa: F401 - lost connects the main process's signal

Status = Deployment.Status


@shared_task(name=DEPLOY_TASK, bind=True, ignore_result=True, acks_late=True)
def deploy(self, deployment_id: int) -> str:
    """A deploy, a redeploy or a promotion (which builds nothing: it ships a pinned digest)."""
    deployment = pipeline.claimed(deployment_id, None, self.request.id)
    if deployment is None:
        return "not claimed"
    if deployment.kind == Deployment.Kind.PROMOTION:
        return pipeline.promote(deployment)
    if deployment.kind == Deployment.Kind.PREVIEW:
        return preview_pipeline.preview(deployment)
    return pipeline.deploy(deployment)


@shared_task(name=ROLLBACK_TASK, bind=True, ignore_result=True, acks_late=True)
def rollback(self, deployment_id: int) -> str:
    """The rollback's code is the web's too (portal/deployments/rollback.py); the worker adds
    the fallback for a version that is gone: update, publish, verify."""
    deployment = pipeline.claimed(deployment_id, Status.CHECKING, self.request.id)
    if deployment is None:
        return "not claimed"
    return pipeline.rollback(deployment)


@shared_task(name=PROMOTE_DUE_TASK, ignore_result=True, soft_time_limit=60, time_limit=90)
def promote_due() -> list[int]:
    """Beat: queue the soaking promotions whose soak ended (cancelling those no longer verified upstream)."""
    return promotion.promote_due()


@shared_task(name=GATES_DUE_TASK, ignore_result=True, soft_time_limit=60, time_limit=90)
def gates_due() -> dict:
    """Beat: release what a freeze that ended held (the newest request per environment; the older
    superseded), re-check what awaits approval, cancel what waited past SLIPWAY_GATE_MAX_WAIT."""
    return gates.gates_due()


@shared_task(name=ROLLOUT_TICK_TASK, bind=True, ignore_result=True, soft_time_limit=100, time_limit=110)
def rollout_tick(self) -> dict:
    """Beat: advance every rollout that is due (portal/deployments/rollout.py), holding each
    under this task's id (a lost one is released by workers/lost.py)."""
    return {str(pk): outcome for pk, outcome in rollout.tick(self.request.id or "tick").items()}


@shared_task(name=ROLLOUT_ABORT_TASK, bind=True, ignore_result=True, soft_time_limit=100, time_limit=110)
def rollout_abort(self, deployment_id: int) -> str:
    """Put the stable version back on the alias, routing cleared; the deployment ends `canary-aborted`."""
    return rollout.perform_abort(deployment_id, self.request.id or "abort")


@shared_task(name=SWEEP_TASK, ignore_result=True, soft_time_limit=60, time_limit=90)
def sweep() -> dict:
    """Fail deployments whose worker died (`worker-lost`), re-send lost messages."""
    return {**sweeper.sweep(),
            "commit_statuses_resent": status.resend_unreported(),  # lost with the broker or a dead worker
            "gitlab_deployments_resent": status.resend_unfinished_deployments()}


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
    """Delete old Lambda versions, then the images nothing runs (portal/deployments/retention.py); the
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
    first_paused = Environment.objects.filter(function=OuterRef("pk")).order_by("position").values("paused_reason")
    ids = list(Function.objects.annotate(paused=Subquery(first_paused[:1]))  # pushes deploy to the first
               .filter(auto_deploy=True, paused="", archived_at__isnull=True)
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
    return deployments.reconcile(function, trigger=Deployment.Trigger.RECONCILE).outcome


# --- Feedback: GitLab commit status, notifications, drift (the `feedback` queue) ------------


@shared_task(name=COMMIT_STATUS_TASK, ignore_result=True, soft_time_limit=300, time_limit=330)
def commit_status(deployment_id: int, state: str) -> str:
    """Post one state of a deployment to GitLab, in order (portal/feedback/delivery.py)."""
    return feedback.report_commit_status(deployment_id, state)


@shared_task(name=GITLAB_DEPLOYMENT_TASK, ignore_result=True, soft_time_limit=300, time_limit=330)
def gitlab_deployment(deployment_id: int) -> str:
    """Bring the deployment's GitLab deployment up to date (portal/feedback/gitlab_deployments.py)."""
    return gitlab_deployments.report(deployment_id)


@shared_task(name=NOTIFY_TASK, ignore_result=True, soft_time_limit=120, time_limit=150)
def notify(function_id: int, event: str, deployment_id: int | None = None, extra: dict | None = None) -> dict:
    """Email the chosen members and call the function's notification webhook."""
    return feedback.send_notification(function_id, event, deployment_id, extra or {})


@shared_task(name=DRIFT_CHECK_TASK, ignore_result=True, soft_time_limit=600, time_limit=660)
def drift_check(function_id: int | None = None) -> dict:
    """Compare what AWS reports with what Slipway last left there: one function, or (beat) all."""
    from portal.feedback import drift
    from portal.models import Function

    if function_id is None:
        return drift.check_all()
    function = Function.objects.filter(pk=function_id).first()
    return {"outcome": drift.check(function).outcome} if function else {}


# --- Merge requests' previews ----------------------------------------------------------------


@shared_task(name=PREVIEW_CLEANUP_TASK, ignore_result=True, soft_time_limit=120, time_limit=150)
def preview_cleanup_task(preview_id: int) -> str:
    """Remove a closed preview's URL, statements and alias (portal/deployments/preview_cleanup.py)."""
    return preview_cleanup.remove(preview_id)


@shared_task(name=PREVIEW_SWEEP_TASK, ignore_result=True, soft_time_limit=600, time_limit=660)
def preview_sweep() -> dict:
    """Beat: previews idle past the TTL, removals to retry, mr-* aliases nobody owns."""
    return preview_cleanup.sweep()


@shared_task(name=PREVIEW_NOTE_TASK, ignore_result=True, soft_time_limit=300, time_limit=330)
def preview_note(preview_id: int) -> str:
    """Post or edit the merge request's Slipway note (portal/feedback/preview_notes.py)."""
    return preview_notes.report(preview_id)
