"""Pages that manage a function's environments: add one, edit one (its Lambda settings,
its place in the promotion order, its promotion rule, its rollout strategy), delete one. Owners only; plain
forms with CSRF that work without JavaScript. The rules are EnvironmentForm's and the
functions registry's, the same the API applies; a refusal of the registry or of the
deployments package's guards (`environment-in-use`) is shown on the page.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from deploy.errors import SlipwayError
from portal import deployments, functions
from portal.deployments.forms import RolloutEnvironmentForm as EnvironmentForm
from portal.functions import access


def _form_page(request, form, function, environment=None, error: str = ""):
    status = 409 if error else 400 if form.errors else 200
    return render(request, "portal/environment_form.html", {
        "form": form, "function": function, "environment": environment, "creating": environment is None,
        "region": settings.AWS_REGION, "error": error}, status=status)


@require_http_methods(["GET", "POST"])
@login_required
def environment_new(request, name):
    function = access.function_for(request.user, name, access.ADMIN)
    form = EnvironmentForm(request.POST or None, function=function, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            environment = functions.create_environment(form, user=request.user)
        except SlipwayError as exc:
            return _form_page(request, form, function, error=exc.message)
        messages.success(request, f"Environment {environment.name} added at position {environment.position}. "
                                  "Its first deployment creates its Lambda if it does not exist.")
        return redirect("portal-function", name=function.name)
    return _form_page(request, form, function)


@require_http_methods(["GET", "POST"])
@login_required
def environment_edit(request, name, env):
    function, environment = access.environment_for(request.user, name, env, access.ADMIN)
    form = EnvironmentForm(request.POST or None, function=function, instance=environment, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            functions.update_environment(form, user=request.user)
        except SlipwayError as exc:
            environment.refresh_from_db()  # the form changed the instance; the page shows what is stored
            return _form_page(request, form, function, environment, error=exc.message)
        messages.success(request, f"Saved {environment.name}. Lambda gets the new configuration at its next "
                                  "deployment.")
        return redirect("portal-function", name=function.name)
    return _form_page(request, form, function, environment)


@require_http_methods(["GET", "POST"])
@login_required
def environment_delete(request, name, env):
    function, environment = access.environment_for(request.user, name, env, access.ADMIN)
    error = ""
    if request.method == "POST":
        try:
            functions.delete_environment(environment, user=request.user)
        except SlipwayError as exc:
            error = exc.message
        else:
            messages.success(request, f"Environment {environment.name} deleted. Its Lambda, "
                                      f"{environment.lambda_name}, is left in AWS as it is.")
            return redirect("portal-function", name=function.name)
    return render(request, "portal/environment_delete.html", {
        "function": function, "environment": environment, "live": deployments.live_deployment(environment),
        "error": error}, status=409 if error else 200)
