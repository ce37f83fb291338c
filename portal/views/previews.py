"""The Previews page of a function: its merge requests' previews (MR, author, commit,
version, URL, age, state) with Try in console, Redeploy, Remove and, for a fork's head,
Approve preview; and the owner's form that enables previews and sets their policy.
Plain CSRF forms; the rules are portal/deployments/previews.py's, the same the API applies.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from portal import deployments, functions
from portal.functions import access
from portal.models import Deployment, Preview
from portal.views.refusals import shown_on
from portal.views.session import session_only

PAGE = "portal-previews"


def _rows(function):
    """Each preview with its newest deployment (what it is doing now, or did last)."""
    rows = []
    for preview in Preview.objects.filter(function=function).select_related("approved_by").order_by(
            "state", "-mr_iid")[:200]:
        latest = preview.deployments.order_by("-pk").first()
        rows.append({"preview": preview, "latest": latest, "commit_url": function.commit_url(preview.head_sha)})
    return rows


@require_http_methods(["GET", "POST"])
@login_required
@shown_on(PAGE, "name")
def preview_list(request, name):
    function = access.function_for(request.user, name)
    may_admin = access.can(request.user, function, access.ADMIN)
    form = functions.PreviewsForm(request.POST or None, function=function) if may_admin else None
    if request.method == "POST":
        if form is None:
            access.function_for(request.user, name, access.ADMIN)  # 403
        if form.is_valid():
            enabling = form.environment is None
            environment = functions.save_previews(form, user=request.user)
            messages.success(request, (f"Previews enabled: merge requests deploy to {environment.lambda_name}, "
                                       "each behind its alias mr-<iid>.") if enabling else "Preview policy saved.")
            return redirect(PAGE, name=function.name)
    environment = functions.preview_environment(function)
    return render(request, "portal/previews.html", {
        "function": function, "environment": environment, "form": form, "rows": _rows(function),
        "may_deploy": access.can(request.user, function, access.DEPLOY) and not function.is_archived,
        "may_admin": may_admin}, status=400 if form is not None and form.errors else 200)


def _preview(request, name, iid, action=access.DEPLOY):
    function = access.function_for(request.user, name, action)
    return get_object_or_404(Preview, function=function, mr_iid=iid)


@require_POST
@session_only
@login_required
@shown_on(PAGE, "name")
def preview_approve(request, name, iid):
    """A deployer lets the head of a fork's merge request build: the commit the page showed them."""
    preview = _preview(request, name, iid)
    commit = request.POST.get("commit", "").strip()[:40]
    deployment = deployments.approve_preview(preview, user=request.user, commit=commit)
    messages.success(request, f"!{iid} at {commit[:12]} approved: preview deployment #{deployment.pk} queued.")
    return redirect(PAGE, name=name)


@require_POST
@login_required
@shown_on(PAGE, "name")
def preview_redeploy(request, name, iid):
    preview = _preview(request, name, iid)
    deployment = deployments.redeploy_preview(preview, user=request.user, trigger=Deployment.Trigger.UI)
    messages.success(request, f"!{iid}: preview deployment #{deployment.pk} queued.")
    return redirect(PAGE, name=name)


@require_POST
@login_required
@shown_on(PAGE, "name")
def preview_remove(request, name, iid):
    preview = _preview(request, name, iid)
    deployments.remove_preview(preview, user=request.user)
    messages.success(request, f"!{iid}: preview removed; its alias and URL are being deleted.")
    return redirect(PAGE, name=name)
