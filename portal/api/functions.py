"""API resource: functions — list, register, read, edit.

Owns the function endpoints, `function_out` (a function as the API shows it,
with its live release; deployments.py answers FunctionOut with it too),
`release_out` (a live release; environments.py shows one per environment) and the
conversion of API values to the UI form's data, so that a registration or an
edit is validated by FunctionForm exactly as in the UI.

May import: Django, ninja, the functions and deployments packages (access, the
function form, the registry, the live release), portal.models, and auth, errors
and schemas from this package.
"""

from __future__ import annotations

from django.urls import reverse
from ninja import Router, Status

from portal import deployments, functions
from portal.api.auth import full_only, function_for
from portal.api.errors import ApiError
from portal.api.schemas import ERRORS, FunctionIn, FunctionOut, FunctionPage, FunctionPatch, api_name, page_out
from portal.functions import access
from portal.functions.forms import FunctionForm
from portal.models import Deployment, Function

router = Router()


def release_out(deployment: Deployment | None) -> dict | None:
    """What a deployment made live, as FunctionOut and EnvironmentOut show it."""
    if deployment is None:
        return None
    return {"deployment": deployment.pk, "version": deployment.version, "commit_sha": deployment.commit_sha,
            "commit_message": deployment.commit_message, "digest": deployments.deployment_digest(deployment),
            "finished_at": deployment.finished_at}


def function_out(request, function: Function, live: Deployment | None | bool = True) -> dict:
    """The function with its first environment's Lambda settings (where pushes deploy: the
    function's fields read and write that one; every environment has its own endpoints,
    portal/api/environments.py)."""
    environment = function.first_environment
    if live is True:
        live = deployments.live_deployment(environment)
    return {
        **{name: getattr(function, name) for name in (
            "name", "description", "repository_url", "branch", "context_path", "dockerfile_path", "architecture",
            "ecr_repository", "auto_deploy", "build_args", "smoke_event", "shares_images_with")},
        **{name: getattr(environment, name) for name in (
            "lambda_name", "alias", "memory_mb", "timeout_s", "execution_role_arn", "paused_reason", "secret_keys")},
        "archived": function.is_archived, "environment": environment.masked_variables(),
        "source_auth": function.source_access.source_auth, "source_username": function.source_access.source_username,
        "source_known_hosts": function.source_access.source_known_hosts,
        "source_secret_set": bool(function.source_access.source_secret),
        "live": release_out(live or None),
        "url": request.build_absolute_uri(reverse("portal-function", args=[function.name])),
    }


def _form_data(values: dict, function: Function | None) -> dict:
    """API values -> the form's data: the values as sent (the form's fields take the
    API's objects and lists as they take the page's text: portal/functions/fields.py),
    over the function's current ones for an edit."""
    base = {}
    if function is not None:
        initial = FunctionForm(instance=function)
        for name, field in initial.fields.items():
            value = initial.initial.get(name, field.initial)
            base[name] = value
    for form_name in FunctionForm.base_fields:
        name = api_name(form_name)
        if values.get(name) is None:
            continue
        base[form_name] = values[name]
    if base.get("auto_deploy") in (False, None):
        base.pop("auto_deploy", None)
    if function is None and values.get("auto_deploy") is None:
        base["auto_deploy"] = True
    return base


def _form_errors(form) -> ApiError:
    """400 for a request to fix; 409 when all that is wrong is a name another function holds."""
    fields = {api_name(name): [str(e) for e in errors] for name, errors in form.errors.items()}
    if all(error.code == "unique" for errors in form.errors.as_data().values() for error in errors):
        return ApiError(409, "taken", "another function already has this name or Lambda", fields)
    return ApiError(400, "invalid", "the function's settings are not valid", fields)


@router.get("/functions", response={200: FunctionPage, **ERRORS}, summary="List the functions you may see")
def list_functions(request, name: str = "", page: int = 1):
    full_only(request)
    functions = (access.visible_functions(request.user).filter(archived_at__isnull=True)
               .select_related("source_access").prefetch_related("environments").order_by("name"))
    token = request.api_token
    if token and token.function_id:
        functions = functions.filter(pk=token.function_id)
    if name:
        functions = functions.filter(name__icontains=name[:64])
    return page_out(functions, page, lambda function: function_out(request, function))


@router.post("/functions", response={201: FunctionOut, **ERRORS},
             summary="Register a function (you become its owner)")
def create_function(request, payload: FunctionIn):
    full_only(request)
    if getattr(request, "api_token", None) and request.api_token.function_id:
        raise ApiError(403, "token-scope", "a token limited to one function cannot register another")
    if not access.can_register(request.user):
        raise ApiError(403, "forbidden", "only staff may register functions here")
    form = FunctionForm(_form_data(payload.dict(), None), user=request.user)
    if not form.is_valid():
        raise _form_errors(form)
    return Status(201, function_out(request, functions.register_function(form, user=request.user), live=None))


@router.get("/functions/{name}", response={200: FunctionOut, **ERRORS}, summary="One function, with what is live")
def get_function(request, name: str):
    return function_out(request, function_for(request, name, access.VIEW))


@router.patch("/functions/{name}", response={200: FunctionOut, **ERRORS}, summary="Edit a function (owner)")
def edit_function(request, name: str, payload: FunctionPatch):
    function = function_for(request, name, access.ADMIN)
    values = payload.dict(exclude_unset=True)
    if values.get("name") not in (None, function.name):
        raise ApiError(400, "invalid", "a function cannot be renamed", {"name": ["cannot be changed"]})
    form = FunctionForm(_form_data(values, function), instance=function, user=request.user)
    if not form.is_valid():
        raise _form_errors(form)
    return function_out(request, functions.update_function(form, user=request.user))
