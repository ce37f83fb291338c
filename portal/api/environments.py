"""API resource: a function's environments — list, add, read, edit, delete, and promote
into one.

Owns these endpoints and `environment_out` (an environment as the API shows it, with
what is live in it). Additions and edits go through the UI's EnvironmentForm and the
functions registry, so the API applies the pages' rules exactly (one Lambda per
environment, the allowed prefixes and roles, the position); deleting and reordering
are refused by the deployments package's guards while work is in progress
(`environment-in-use`). A promotion is requested through
portal.deployments.request_promotion and answered like a deploy (202, the deployment).

May import: Django, ninja, the feature packages' public modules (deployments,
functions), the functions package's form, portal.models, and auth, errors, limits,
schemas and the deployments resource (deployment_out) from this package.
"""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse
from ninja import Router, Status

from portal import deployments, functions
from portal.api.auth import DEPLOY_SCOPE, deployment_for, function_for
from portal.api.deployments import deployment_out
from portal.api.errors import ApiError
from portal.api.functions import release_out
from portal.api.limits import spend_deploy
from portal.api.schemas import (
    ERRORS,
    DeploymentOut,
    EnvironmentIn,
    EnvironmentOut,
    EnvironmentPage,
    EnvironmentPatch,
    PromoteIn,
    api_name,
    page_out,
)
from portal.deployments import strategies
from portal.deployments.forms import RolloutEnvironmentForm as EnvironmentForm
from portal.functions import access
from portal.models import Deployment, Environment, Function

router = Router()


def environment_out(request, environment: Environment) -> dict:
    function = environment.function
    return {
        **{name: getattr(environment, name) for name in (
            "name", "position", "lambda_name", "alias", "memory_mb", "timeout_s", "execution_role_arn",
            "secret_keys", "paused_reason", "promotion", "soak_seconds", "required_approvals", "during_freeze",
            "gitlab_tier", "preview")},
        "region": settings.AWS_REGION,
        "rollout": rollout_settings_out(environment),
        "environment": environment.masked_variables(),
        "live": release_out(deployments.live_deployment(environment)),
        "url": request.build_absolute_uri(reverse("portal-environment-edit", args=[function.name, environment.name])),
    }


def rollout_settings_out(environment: Environment) -> dict:
    env = environment
    strategy, percent, minutes = env.rollout_strategy, env.rollout_percent, env.rollout_minutes
    return {"strategy": strategy, "preset": strategies.preset_of(strategy, percent, minutes) or None,
            "percent": percent, "minutes": minutes,
            "total_minutes": strategies.total_minutes(strategy, percent, minutes),
            "alarm": environment.rollout_alarm, "extra_alarms": environment.rollout_extra_alarms,
            "probe_count": environment.probe_count, "probe_max_failures": environment.probe_max_failures}


def _environment(function: Function, env: str) -> Environment:
    """The function's environment named `env` (404 `environment-unknown` otherwise): one of the
    promotion order, or its preview environment (its settings are edited like the others')."""
    preview = function.environments.filter(preview=True, name=env).first()
    return preview or deployments.environment_named(function, env)


def _flat(values: dict) -> dict:
    """The request's values by API name, the `rollout` object's as "rollout.<key>"; a preset
    sent with a strategy, percent or minutes that differ from it is refused (400)."""
    rollout = values.pop("rollout", None) or {}
    preset = strategies.PRESETS.get(rollout.get("preset") or "")
    if preset is not None:
        wrong = {key: [f"the preset {preset.name} sets {key} to {wanted}"] for key, wanted in (
            ("strategy", preset.strategy), ("percent", preset.percent), ("minutes", preset.minutes))
            if wanted is not None and rollout.get(key) not in (None, wanted)}
        if wrong:
            raise ApiError(400, "invalid", f"the preset {preset.name} disagrees with the settings sent with it",
                           {f"rollout.{key}": messages for key, messages in wrong.items()})
    return {**values, **{f"rollout.{key}": value for key, value in rollout.items()}}


def _form_data(values: dict, environment: Environment | None) -> dict:
    """API values -> the form's data, over the environment's current ones for an edit (as
    portal/api/functions.py does for the function form)."""
    values = _flat(values)
    base = {}
    if environment is not None:
        initial = EnvironmentForm(function=environment.function, instance=environment)
        base = {name: initial.initial.get(name, field.initial) for name, field in initial.fields.items()}
    for form_name in EnvironmentForm.base_fields:
        if values.get(api_name(form_name)) is not None:
            base[form_name] = values[api_name(form_name)]
    return base


def _form_errors(form) -> ApiError:
    """400 for a request to fix; 409 when all that is wrong is a name or a Lambda another environment holds."""
    fields = {api_name(name): [str(e) for e in errors] for name, errors in form.errors.items()}
    if all(error.code == "unique" for errors in form.errors.as_data().values() for error in errors):
        return ApiError(409, "taken", "another environment already has this name or Lambda", fields)
    return ApiError(400, "invalid", "the environment's settings are not valid", fields)


@router.get("/functions/{name}/environments", response={200: EnvironmentPage, **ERRORS},
            summary="A function's environments, in promotion order")
def list_environments(request, name: str, page: int = 1):
    function = function_for(request, name, access.VIEW)
    return page_out(function.environments.order_by("position"), page,
                    lambda environment: environment_out(request, environment))


@router.post("/functions/{name}/environments", response={201: EnvironmentOut, **ERRORS},
             summary="Add an environment (owner); at `position`, the others move down")
def create_environment(request, name: str, payload: EnvironmentIn):
    function = function_for(request, name, access.ADMIN)
    form = EnvironmentForm(_form_data(payload.dict(), None), function=function, user=request.user)
    if not form.is_valid():
        raise _form_errors(form)
    return Status(201, environment_out(request, functions.create_environment(form, user=request.user)))


@router.get("/functions/{name}/environments/{env}", response={200: EnvironmentOut, **ERRORS},
            summary="One environment, with what is live in it")
def get_environment(request, name: str, env: str):
    return environment_out(request, _environment(function_for(request, name, access.VIEW), env))


@router.patch("/functions/{name}/environments/{env}", response={200: EnvironmentOut, **ERRORS},
              summary="Edit an environment or move it in the promotion order (owner)")
def edit_environment(request, name: str, env: str, payload: EnvironmentPatch):
    environment = _environment(function_for(request, name, access.ADMIN), env)
    values = payload.dict(exclude_unset=True)
    if values.get("name") not in (None, environment.name):
        raise ApiError(400, "invalid", "an environment cannot be renamed", {"name": ["cannot be changed"]})
    form = EnvironmentForm(_form_data(values, environment), function=environment.function, instance=environment,
                           user=request.user)
    if not form.is_valid():
        raise _form_errors(form)
    return environment_out(request, functions.update_environment(form, user=request.user))


@router.delete("/functions/{name}/environments/{env}", response={204: None, **ERRORS},
               summary="Delete an environment nothing is live in and nothing is deploying to (owner)")
def delete_environment(request, name: str, env: str):
    """Its Lambda is left in AWS as it is. Refused `environment-in-use` while a release is
    live in it or a deployment to it is unfinished, and for the function's last one."""
    environment = _environment(function_for(request, name, access.ADMIN), env)
    functions.delete_environment(environment, user=request.user)
    return Status(204, None)


@router.post("/functions/{name}/environments/{env}/promote", response={202: DeploymentOut, **ERRORS},
             summary="Promote what is live in the previous environment into this one (deployer)")
def promote(request, name: str, env: str, payload: PromoteIn):
    """The digest live in the previous environment is pinned on the deployment and shipped
    as it is: no source, build or push. Refused `not-verified-upstream` when `release` is not
    what is live there (or nothing is), `deploy-instead` for the first environment."""
    function = function_for(request, name, access.DEPLOY, scope=DEPLOY_SCOPE)
    environment = _environment(function, env)
    spend_deploy(request)
    promotion = deployments.request_promotion(function, environment, trigger=Deployment.Trigger.API,
                                              user=request.user, release=payload.release or "")
    out = deployment_out(request, deployment_for(request, promotion.pk, access.VIEW, scope=DEPLOY_SCOPE))
    return Status(202, {**out, "notice": deployments.queue_notice(promotion)})
