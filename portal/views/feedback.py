"""Where a function reports (GitLab commit status, notifications) and its drift:
settings and the attempt log for owners, the signing secret shown once, the
drift check (deployers) and accepting a drift (owners), each of one environment
(the form's `environment`; the only one when it names none)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from deploy.errors import DeployError
from portal import deployments, feedback
from portal.core import errors
from portal.feedback import drift
from portal.feedback.forms import FeedbackForm
from portal.functions import access
from portal.hooks.forms import WebhookTokenForm
from portal.models import FeedbackSettings, NotificationAttempt
from portal.views import refusals


@require_http_methods(["GET", "POST"])
@login_required
def feedback_settings(request, name):
    function = access.function_for(request.user, name, access.ADMIN)
    form = FeedbackForm(request.POST or None, instance=function.feedback_settings)
    if request.method == "POST" and form.is_valid():
        try:
            feedback.update_feedback(form, user=request.user)
        except errors.RequestRefused as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "Saved.")
            return redirect("portal-feedback", name=function.name)
    attempts = NotificationAttempt.objects.filter(function=function).select_related("deployment")[:50]
    return render(request, "portal/feedback.html", {"function": function, "form": form, "attempts": attempts},
                  status=400 if form.errors else 200)


@require_POST
@login_required
@refusals.shown_on("portal-feedback", "name")
def feedback_webhook_secret(request, name):
    """Generate (rotate) the notification webhook's signing secret, shown on this response
    only; or remove it (the webhook is then not called: unsigned calls are never sent)."""
    function = access.function_for(request.user, name, access.ADMIN)
    form = WebhookTokenForm(request.POST)
    if not form.is_valid():
        messages.error(request, "choose generate or remove")
        return redirect("portal-feedback", name=function.name)
    if form.cleaned_data["action"] == "remove":
        if (FeedbackSettings.objects.filter(function_id=function.pk).exclude(notify_webhook_secret="")
                .update(notify_webhook_secret="")):
            from portal.models import AuditEvent

            AuditEvent.record("function.notify_secret_removed", function=function, actor=request.user)
            messages.success(request, "The signing secret is removed: the webhook is not called until a new one "
                             "is generated.")
        return redirect("portal-feedback", name=function.name)
    secret = feedback.set_notify_webhook_secret(function, user=request.user)
    response = render(request, "portal/notify_secret.html", {"function": function, "secret": secret})
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@login_required
@refusals.shown_on("portal-function", "name")
def drift_check(request, name):
    function = access.function_for(request.user, name, access.DEPLOY)
    environment = deployments.environment_named(function, request.POST.get("environment", ""))
    try:
        result = drift.check(function, user=request.user, environment=environment)
    except DeployError as exc:
        messages.error(request, f"The check could not read the function from AWS: {exc.message}")
        return redirect("portal-function", name=function.name)
    text = {"clean": "No drift: AWS holds what Slipway left there.",
            "drift": "Changed outside Slipway: see below.",
            "unchanged": "Still changed outside Slipway, as recorded before.",
            "skipped": f"Not checked: {result.reason}.",
            "no-baseline": f"Not checked: {result.reason}."}[result.outcome]
    if function.environments.in_order().count() > 1:
        text = f"{environment.name}: {text}"
    (messages.success if result.outcome == "clean" else messages.warning)(request, text)
    return redirect("portal-function", name=function.name)


@require_POST
@login_required
@refusals.shown_on("portal-function", "name")
def drift_accept(request, name):
    function = access.function_for(request.user, name, access.ADMIN)
    environment = deployments.environment_named(function, request.POST.get("environment", ""))
    accepted = drift.accept(function, user=request.user, environment=environment)
    messages.success(request, f"Accepted {len(accepted)} change(s) in {environment.name} as what Slipway expects. "
                     "Its own settings are unchanged: its next deploy applies them again.")
    return redirect("portal-function", name=function.name)
