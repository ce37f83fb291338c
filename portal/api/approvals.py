"""API resource: approvals — read-only. The deployments the caller could approve or reject
now, and one deployment's approvals (its requirement, its decisions, who may approve).

There is deliberately no endpoint to approve or reject: an approval needs a signed-in
session and a fresh CSRF form (the deployment page, portal/views/deployments.py), so
an API token, which a script or a CI job holds, can never give one.

May import: Django, ninja, the feature packages' public modules (deployments,
functions), portal.models, and auth, errors and schemas from this package.
"""

from __future__ import annotations

from django.db.models import Q
from django.urls import reverse
from ninja import Router

from portal import deployments, functions
from portal.api.auth import DEPLOY_SCOPE, deployment_for, full_only
from portal.api.schemas import ERRORS, DeploymentApprovalsOut, PendingApprovalPage, page_out
from portal.functions import access
from portal.models import Approval, Deployment, Membership

router = Router()


def approvals_out(request, deployment: Deployment) -> dict:
    held = deployment.status in Deployment.GATED
    counted = set(deployments.counting_approvals(deployment).values_list("pk", flat=True)) if held else set()
    return {
        "deployment": deployment.pk, "function": deployment.function.name,
        "environment": deployment.environment.name, "status": deployment.status,
        "required": deployments.approvals_required(deployment) if held else deployment.approvals_required,
        "counted": len(counted), "approvers": deployments.who_may_approve(deployment),
        "decisions": [{"user": a.user.get_username(), "decision": a.decision, "comment": a.comment,
                       "digest": a.digest, "created_at": a.created_at, "expires_at": a.expires_at,
                       "counts": a.pk in counted}
                      for a in deployment.approvals.select_related("user")],
        "url": request.build_absolute_uri(reverse("portal-deployment", args=[deployment.pk])),
    }


@router.get("/approvals", response={200: PendingApprovalPage, **ERRORS},
            summary="Deployments held for approval that you could approve or reject (read-only)")
def list_approvals(request, page: int = 1):
    """Held deployments (awaiting approval, or frozen with approvals still short) of the
    functions where you may approve, not requested by you and not yet decided by you. Approving
    itself is done on the deployment's page, signed in: never with a token."""
    full_only(request)
    held = Deployment.objects.filter(status__in=Deployment.GATED).select_related(
        "function", "environment", "build").order_by("pk")
    user = request.user
    if not user.is_staff:
        held = held.filter(function_id__in=Membership.objects.filter(
            user=user, role__in=functions.APPROVING_ROLES).values("function_id"))
    token = getattr(request, "api_token", None)
    if token and token.function_id:
        held = held.filter(function_id=token.function_id)
    held = held.exclude(requested_by=user).exclude(
        pk__in=Approval.objects.filter(user=user).values("deployment_id")).filter(
        Q(status=Deployment.Status.AWAITING_APPROVAL) | Q(environment__required_approvals__gt=0)
        | Q(approvals_required__gt=0))
    pending = [deployment for deployment in held if deployments.approval_decidable(deployment)]
    return page_out(pending, page, lambda deployment: approvals_out(request, deployment))


@router.get("/deployments/{deployment_id}/approvals", response={200: DeploymentApprovalsOut, **ERRORS},
            summary="A deployment's approvals: what it needs, who decided, who may approve (read-only)")
def deployment_approvals(request, deployment_id: int):
    deployment = deployment_for(request, deployment_id, access.VIEW, scope=DEPLOY_SCOPE)
    return approvals_out(request, deployment)
