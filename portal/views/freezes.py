"""Freeze window pages: an environment's windows (owners list, add and delete them), the
global windows (staff), and the Override form of a frozen deployment's page (owners;
staff for a global freeze). Plain CSRF forms that work without JavaScript; the rules
are portal/deployments/freezing.py's, the same the API applies.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from deploy.errors import SlipwayError
from portal.deployments import freezes, freezing
from portal.functions import access
from portal.models import Deployment, FreezeWindow
from portal.views.session import session_only


def _page(request, form, function, environment, status: int = 200):
    shown = freezes.current_or_next(environment) if environment else None
    rows = [(window, freezes.active(window)) for window in freezing.windows(environment)]
    return render(request, "portal/freezes.html", {
        "form": form, "function": function, "environment": environment, "windows": rows, "shown": shown,
        "global_windows": [] if environment is None else list(freezing.windows(None))},
        status=400 if form.errors else status)


@require_http_methods(["GET", "POST"])
@session_only
@login_required
def freeze_list(request, name, env):
    function, environment = access.environment_for(request.user, name, env, access.ADMIN)
    form = freezing.FreezeWindowForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        window = freezing.create(form, environment, request.user)
        messages.success(request, f"Freeze window added: {window.reason}, {freezing.describe(window)}.")
        return redirect("portal-freezes", name=function.name, env=environment.name)
    return _page(request, form, function, environment)


@require_POST
@session_only
@login_required
def freeze_delete(request, name, env, pk):
    function, environment = access.environment_for(request.user, name, env, access.ADMIN)
    window = get_object_or_404(FreezeWindow, pk=pk, environment=environment)
    freezing.delete(window, request.user)
    messages.success(request, f"Freeze window {window.reason!r} deleted. Unless another freeze holds "
                              f"{environment.name}, the newest request it held runs and older ones are superseded.")
    return redirect("portal-freezes", name=function.name, env=environment.name)


def _staff(request) -> None:
    if not request.user.is_staff:
        raise PermissionDenied("only staff manage global freeze windows")


@require_http_methods(["GET", "POST"])
@session_only
@login_required
def global_freezes(request):
    _staff(request)
    form = freezing.FreezeWindowForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        window = freezing.create(form, None, request.user)
        messages.success(request, f"Global freeze window added: {window.reason}, {freezing.describe(window)}.")
        return redirect("portal-global-freezes")
    return _page(request, form, None, None)


@require_POST
@session_only
@login_required
def global_freeze_delete(request, pk):
    _staff(request)
    window = get_object_or_404(FreezeWindow, pk=pk, environment__isnull=True)
    freezing.delete(window, request.user)
    messages.success(request, f"Global freeze window {window.reason!r} deleted.")
    return redirect("portal-global-freezes")


@require_POST
@session_only
@login_required
def deployment_override(request, pk):
    """Owners (staff for a global freeze) let a frozen deployment through, with a reason."""
    deployment = Deployment.objects.select_related("function", "environment").filter(pk=pk).first()
    if deployment is None:
        raise Http404("no such deployment")
    access.function_for(request.user, deployment.function.name, access.ADMIN)  # 404 without a role, 403 without
    try:
        after = freezing.override(deployment, request.user, request.POST.get("reason", ""))
    except SlipwayError as exc:
        messages.error(request, f"Not overridden: {exc.message}.")
    else:
        state = after.get_status_display().lower() if after else "no longer held"
        messages.success(request, f"Freeze overridden for #{deployment.pk}: it is {state}.")
    return redirect("portal-deployment", pk=deployment.pk)
