"""API resource: deployments — deploy, follow, list, roll back, cancel, resume
auto-deploy, reconcile missed pushes, and a rollout's manual control (promote now,
pause, resume, abort).

Owns these endpoints and `deployment_out` (a deployment with its steps as the
API shows it). Deploy and reconcile spend from the caller's deploy rate
(limits.spend_deploy); a deploy-only token reaches what DEPLOY_SCOPE marks.

May import: Django, ninja, the feature packages' public modules (deployments,
functions), portal.models, and auth, errors, functions, limits and schemas from
this package.
"""

from __future__ import annotations

from django.urls import reverse
from ninja import Router, Status

from portal import deployments
from portal.api.auth import DEPLOY_SCOPE, deployment_for, function_for
from portal.api.errors import ApiError
from portal.api.functions import function_out
from portal.api.limits import spend_deploy
from portal.api.schemas import (
    ERRORS,
    DeployIn,
    DeploymentOut,
    DeploymentPage,
    FunctionOut,
    ReconcileOut,
    RollbackIn,
    page_out,
)
from portal.deployments import rollout_summary
from portal.functions import access
from portal.models import Deployment

router = Router()


def deployment_out(request, deployment: Deployment) -> dict:
    return {
        "id": deployment.pk, "function": deployment.function.name, "environment": deployment.environment.name,
        "kind": deployment.kind, "digest": deployments.deployment_digest(deployment),
        "trigger": deployment.trigger, "status": deployment.status, "terminal": deployment.is_terminal,
        "requested_by": deployment.requested_by.get_username() if deployment.requested_by else None,
        **{name: getattr(deployment, name) for name in (
            "ref", "commit_sha", "commit_message", "version", "previous_version", "target_version", "error_code",
            "error_message", "created_at", "started_at", "finished_at")},
        "steps": [{"name": s.name, "position": s.position, "status": s.status, "started_at": s.started_at,
                   "finished_at": s.finished_at, "output": s.output} for s in deployment.steps.all()],
        "rollout": rollout_out(deployment),
        "url": request.build_absolute_uri(reverse("portal-deployment", args=[deployment.pk])),
    }


def rollout_out(deployment: Deployment) -> dict | None:
    item = rollout_summary.of(deployment)
    if item is None:
        return None
    shown = rollout_summary.summary(item)
    del shown["described"]
    return shown


@router.post("/functions/{name}/deployments", response={202: DeploymentOut, **ERRORS},
             summary="Deploy a ref or a commit to the first environment")
def deploy(request, name: str, payload: DeployIn):
    function = function_for(request, name, access.DEPLOY, scope=DEPLOY_SCOPE)
    spend_deploy(request)
    deployment = deployments.request_deploy(function, trigger=Deployment.Trigger.API, user=request.user,
                                            ref=payload.ref or "", commit=payload.commit or "",
                                            environment=payload.environment or "")
    out = deployment_out(request, deployment_for(request, deployment.pk, access.VIEW, scope=DEPLOY_SCOPE))
    return Status(202, {**out, "notice": deployments.queue_notice(deployment)})


@router.get("/functions/{name}/deployments", response={200: DeploymentPage, **ERRORS},
            summary="An environment's deployments, newest first")
def list_deployments(request, name: str, page: int = 1, environment: str = ""):
    """`environment`: required when the function has several (400 `environment-required`)."""
    function = function_for(request, name, access.VIEW, scope=DEPLOY_SCOPE)
    chosen = deployments.environment_named(function, environment)
    history = (Deployment.objects.filter(function=function, environment=chosen)
               .select_related("function", "environment", "build", "requested_by")
               .prefetch_related("steps").order_by("-created_at", "-pk"))
    return page_out(history, page, lambda deployment: deployment_out(request, deployment))


@router.get("/deployments/{deployment_id}", response={200: DeploymentOut, **ERRORS},
            summary="A deployment with its steps (poll until `terminal`)")
def get_deployment(request, deployment_id: int):
    return deployment_out(request, deployment_for(request, deployment_id, access.VIEW, scope=DEPLOY_SCOPE))


@router.post("/functions/{name}/rollback", response={202: DeploymentOut, **ERRORS},
             summary="Roll back to the previous release, a version or a commit")
def rollback(request, name: str, payload: RollbackIn):
    function = function_for(request, name, access.DEPLOY)
    deployment = deployments.request_rollback(function, trigger=Deployment.Trigger.API, user=request.user,
                                              to=payload.to or "", environment=payload.environment or "")
    out = deployment_out(request, deployment_for(request, deployment.pk, access.VIEW))
    return Status(202, {**out, "notice": deployments.queue_notice(deployment)})


@router.post("/deployments/{deployment_id}/cancel", response={200: DeploymentOut, **ERRORS},
             summary="Cancel a queued deployment, or a running one before its update step")
def cancel(request, deployment_id: int):
    deployment = deployment_for(request, deployment_id, access.DEPLOY)
    if not deployments.cancel(deployment, user=request.user, trigger=Deployment.Trigger.API):
        raise ApiError(409, "too-late", f"deployment #{deployment.pk} is {deployment.status}: too late to cancel")
    return deployment_out(request, deployment_for(request, deployment_id, access.VIEW))


@router.post("/functions/{name}/resume", response={200: FunctionOut, **ERRORS},
             summary="Resume auto-deploy (or automatic promotion) of an environment after a rollback")
def resume(request, name: str, environment: str = ""):
    """`environment`: required when the function has several (400 `environment-required`)."""
    function = function_for(request, name, access.DEPLOY)
    deployments.resume_auto_deploy(function, user=request.user, trigger=Deployment.Trigger.API,
                                   environment=environment)
    function.refresh_from_db()
    return function_out(request, function)


@router.post("/functions/{name}/reconcile", response={200: ReconcileOut, **ERRORS},
             summary="Check for missed pushes: deploy the branch head if auto-deploy never did")
def reconcile(request, name: str):
    """Reads the branch head on the git host (`git ls-remote`, bounded by
    SLIPWAY_RECONCILE_TIMEOUT, outside any transaction) and queues a deploy of it
    (trigger `reconcile`) when auto-deploy is on, not paused, and no deployment of
    that commit exists. A git host that refuses or does not answer is outcome `error`."""
    function = function_for(request, name, access.DEPLOY, scope=DEPLOY_SCOPE)
    spend_deploy(request)
    found = deployments.reconcile(function, user=request.user, trigger=Deployment.Trigger.API)
    deployment = (deployment_out(request, deployment_for(request, found.deployment.pk, access.VIEW, scope=DEPLOY_SCOPE))
                  if found.deployment else None)
    return {"outcome": found.outcome, "message": found.message, "head": found.head, "error_code": found.code,
            "deployment": deployment}


def _control(request, deployment_id: int, action: str) -> dict:
    deployment = deployment_for(request, deployment_id, access.DEPLOY)
    rollout_summary.control(deployment, action, request.user)
    return deployment_out(request, deployment_for(request, deployment_id, access.VIEW))


@router.post("/deployments/{deployment_id}/rollout/promote", response={200: DeploymentOut, **ERRORS},
             summary="Promote a rollout now: the next tick moves the whole alias to the new version (deployer)")
def rollout_promote(request, deployment_id: int):
    """Refused 409 `rollout-not-running` unless the deployment is rolling out."""
    return _control(request, deployment_id, "promote")


@router.post("/deployments/{deployment_id}/rollout/pause", response={200: DeploymentOut, **ERRORS},
             summary="Pause a rollout at its weight; aborted once paused longer than the installation allows")
def rollout_pause(request, deployment_id: int):
    """The signals are still watched while it is paused. Refused 409 `rollout-not-running`
    unless the deployment is rolling out."""
    return _control(request, deployment_id, "pause")


@router.post("/deployments/{deployment_id}/rollout/resume", response={200: DeploymentOut, **ERRORS},
             summary="Resume a paused rollout: its step keeps the time it had left (deployer)")
def rollout_resume(request, deployment_id: int):
    """Refused 409 `rollout-not-running` unless the deployment is rolling out."""
    return _control(request, deployment_id, "resume")


@router.post("/deployments/{deployment_id}/rollout/abort", response={200: DeploymentOut, **ERRORS},
             summary="Abort a rollout: the alias goes back to the stable version, routing cleared (deployer)")
def rollout_abort(request, deployment_id: int):
    """The deployment becomes `aborting` at once; the abort task moves the alias, then it
    fails `canary-aborted` (signal `manual`). Refused 409 `rollout-not-running` unless it
    is rolling out."""
    return _control(request, deployment_id, "abort")
