"""A deployment's page: the step timeline and its logs, live while it runs."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from portal import deployments
from portal.deployments import approvals, approving, plan
from portal.deployments.forms import DecisionForm
from portal.functions import access
from portal.models import Deployment
from portal.views import rollouts
from portal.views.refusals import shown_on
from portal.views.session import session_only


def _deployment_for(user, pk: int, action: str) -> Deployment:
    deployment = (Deployment.objects.select_related("function", "environment", "build", "requested_by",
                                                    "upstream__environment")
                  .filter(pk=pk).first())
    if deployment is None:
        raise Http404("no such deployment")
    access.function_for(user, deployment.function.name, action)  # 404 or 403 as for its function
    return deployment


def timeline(deployment: Deployment) -> tuple[list[dict], int]:
    """Every step of its kind, done or to come, and the percentage done."""
    recorded = {step.name: step for step in deployment.steps.all()}
    # A rollback that recorded an update step is shipping its release again (its version was gone).
    fallback = deployment.kind == Deployment.Kind.ROLLBACK and "update" in recorded
    expected = plan.names(deployment.kind, fallback=fallback)
    names = list(recorded) + [name for name in expected if name not in recorded]
    rows = []
    for name in names:
        step = recorded.get(name)
        state = step.status if step else ("not run" if deployment.is_terminal else "to come")
        rows.append({"name": name, "state": state, "seconds": step.seconds if step else None,
                     "output": step.output if step else ""})
    done = sum(1 for row in rows if row["state"] in ("succeeded", "skipped"))
    percent = 100 if deployment.status == Deployment.Status.SUCCEEDED else int(100 * done / max(len(rows), 1))
    return rows, percent


@require_GET
@login_required
def deployment_detail(request, pk):
    """The full page, or (for htmx's poll) only the live fragment; polling stops once it is terminal."""
    deployment = _deployment_for(request.user, pk, access.VIEW)
    steps, percent = timeline(deployment)
    context = {"deployment": deployment, "function": deployment.function, "steps": steps, "percent": percent,
               "may_cancel": access.can(request.user, deployment.function, access.DEPLOY)
               and deployment.status in (*Deployment.CANCELLABLE, Deployment.Status.SOAKING)
               and not deployment.cancel_requested,
               "commit_statuses": deployment.notification_attempts.filter(channel="gitlab").order_by("pk"),
               "gitlab_deployment": deployment.notification_attempts.filter(channel="deployment").order_by("pk")}
    if not request.htmx:  # the promotions that shipped this deployment's digest onward
        context["promotions"] = deployment.promotions.select_related("environment").order_by("pk")
    context["approvals"] = approvals_context(deployment, request.user)
    context["rollout"] = rollouts.context(deployment)
    context["may_control"] = access.can(request.user, deployment.function, access.DEPLOY)
    template = "portal/_deployment_live.html" if request.htmx else "portal/deployment_detail.html"
    return render(request, template, context)


@require_POST
@login_required
def deployment_cancel(request, pk):
    deployment = _deployment_for(request.user, pk, access.DEPLOY)
    if deployments.cancel(deployment, user=request.user, trigger=Deployment.Trigger.UI):
        messages.success(request, "Cancelled." if Deployment.objects.get(pk=pk).is_terminal
                         else "It stops at its next step boundary, before touching the Lambda.")
    else:
        messages.error(request, f"Too late to cancel: it is {deployment.get_status_display().lower()}.")
    return redirect("portal-deployment", pk=deployment.pk)


# approvals
def approvals_context(deployment: Deployment, user) -> dict | None:
    """What the page shows about approvals: the decisions taken, how many are needed and
    counted, who may approve, and whether this user may (or why not). None: nothing to show
    (no decision taken and no approval asked for)."""
    decisions = list(deployment.approvals.select_related("user"))
    held = deployment.status in Deployment.GATED
    need = approvals.required(deployment) if held else deployment.approvals_required
    if not decisions and not need:
        return None
    counted = set(approvals.counting(deployment).values_list("pk", flat=True)) if held else set()
    refused = approving.refusal(deployment, user) if held else None
    return {"required": need, "decisions": decisions, "counted": counted, "held": held,
            "awaiting": held and approving.decidable(deployment),
            "eligible": approvals.who_may_approve(deployment), "may_decide": held and refused is None,
            "why_not": refused.message if refused is not None and refused.code != "not-awaiting-approval" else "",
            "form": DecisionForm()}




def _decision(request, pk, decide, done: str):
    deployment = _deployment_for(request.user, pk, access.APPROVE)  # 404 without a role, 403 without the right
    form = DecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "; ".join(str(e) for errors in form.errors.values() for e in errors))
        return redirect("portal-deployment", pk=deployment.pk)
    decide(deployment, request.user, form.cleaned_data["comment"])
    messages.success(request, done)
    return redirect("portal-deployment", pk=deployment.pk)


@session_only
@require_POST
@login_required
@shown_on("portal-deployment", "pk")
def deployment_approve(request, pk):
    """A signed-in approver's approval (a session and its CSRF form only: the API has no way to approve)."""
    return _decision(request, pk, approving.approve, "Approved.")


@session_only
@require_POST
@login_required
@shown_on("portal-deployment", "pk")
def deployment_reject(request, pk):
    return _decision(request, pk, approving.reject, "Rejected: the deployment is cancelled.")
# /approvals
