"""API resource: previews — a function's merge-request previews (list, one), enabling them
and their policy (owners), redeploy and remove (deployers), and approving a fork's head.

Approving runs a fork's Dockerfile on the builder, so, like approving a deployment, it is
never done with a token: the endpoint answers a signed-in session (with CSRF) only.

May import: Django, ninja, the feature packages' public modules (deployments,
functions), portal.models, and auth, deployments, errors, limits and schemas from
this package.
"""

from __future__ import annotations

from django.http import Http404
from django.urls import reverse
from ninja import Router, Status

from portal import deployments, functions
from portal.api.auth import deployment_for, function_for
from portal.api.deployments import deployment_out
from portal.api.errors import ApiError
from portal.api.limits import spend_deploy
from portal.api.schemas import (
    ERRORS,
    ApprovePreviewIn,
    DeploymentOut,
    PreviewOut,
    PreviewPage,
    PreviewSettingsIn,
    PreviewSettingsOut,
    page_out,
)
from portal.functions import access
from portal.models import Deployment, Preview

router = Router()


def preview_out(request, preview: Preview) -> dict:
    latest = preview.deployments.order_by("-pk").values_list("pk", flat=True).first()
    return {
        **{name: getattr(preview, name) for name in (
            "mr_iid", "state", "title", "author", "source_branch", "target_branch", "fork", "head_sha",
            "awaiting_approval", "approved_sha", "version", "alias", "url", "removed_reason", "created_at",
            "last_commit_at", "closed_at")},
        "latest_deployment": latest,
        "page": request.build_absolute_uri(reverse("portal-previews", args=[preview.function.name])),
    }


def _preview(request, name: str, iid: int, action: str) -> Preview:
    function = function_for(request, name, action)
    preview = Preview.objects.select_related("function").filter(function=function, mr_iid=iid).first()
    if preview is None:
        raise Http404("no such preview")
    return preview


def _settings_out(environment) -> dict:
    policy = environment.preview_policy
    return {"environment": environment.name, "lambda_name": environment.lambda_name,
            "execution_role_arn": environment.execution_role_arn,
            **{name: getattr(policy, name) for name in functions.previews.POLICY_FIELDS}}


@router.get("/functions/{name}/previews", response={200: PreviewPage, **ERRORS},
            summary="A function's merge-request previews, open ones first")
def list_previews(request, name: str, page: int = 1, state: str = ""):
    """`state`: open, closed or removed (default: all)."""
    function = function_for(request, name, access.VIEW)
    found = Preview.objects.filter(function=function).select_related("function").order_by("state", "-mr_iid")
    if state:
        if state not in Preview.State.values:
            raise ApiError(400, "invalid", f"state is one of {', '.join(Preview.State.values)}",
                           {"state": ["not a preview state"]})
        found = found.filter(state=state)
    return page_out(found, page, lambda preview: preview_out(request, preview))


@router.get("/functions/{name}/previews/settings", response={200: PreviewSettingsOut, **ERRORS},
            summary="Whether previews are on, their Lambda and policy (404 while they are off)")
def get_preview_settings(request, name: str):
    environment = functions.preview_environment(function_for(request, name, access.VIEW))
    if environment is None:
        raise ApiError(404, "previews-off", f"previews are off for {name}")
    return _settings_out(environment)


@router.put("/functions/{name}/previews/settings", response={200: PreviewSettingsOut, **ERRORS},
            summary="Enable previews, or set their policy (owners)")
def put_preview_settings(request, name: str, payload: PreviewSettingsIn):
    function = function_for(request, name, access.ADMIN)
    values = payload.dict()
    data = {**{key: value for key, value in values.items() if value not in (None, False)},
            "target_branches": "\n".join(values["target_branches"])}
    form = functions.PreviewsForm(data, function=function)
    if not form.is_valid():
        if form.non_field_errors():  # the installation's preview role: nothing the caller can fix
            raise ApiError(409, "preview-role", "; ".join(form.non_field_errors()))
        fields = {key: [str(e) for e in errors] for key, errors in form.errors.items()}
        raise ApiError(400, "invalid", "the preview settings are not valid", fields)
    return _settings_out(functions.save_previews(form, user=request.user))


@router.get("/functions/{name}/previews/{iid}", response={200: PreviewOut, **ERRORS},
            summary="One merge request's preview")
def get_preview(request, name: str, iid: int):
    return preview_out(request, _preview(request, name, iid, access.VIEW))


@router.post("/functions/{name}/previews/{iid}/redeploy", response={202: DeploymentOut, **ERRORS},
             summary="Build and publish a preview's head again (a removed one comes back)")
def redeploy_preview(request, name: str, iid: int):
    preview = _preview(request, name, iid, access.DEPLOY)
    spend_deploy(request)
    deployment = deployments.redeploy_preview(preview, user=request.user, trigger=Deployment.Trigger.API)
    return Status(202, deployment_out(request, deployment_for(request, deployment.pk, access.VIEW)))


@router.post("/functions/{name}/previews/{iid}/remove", response={200: PreviewOut, **ERRORS},
             summary="Remove a preview: its alias and URL are deleted")
def remove_preview(request, name: str, iid: int):
    preview = deployments.remove_preview(_preview(request, name, iid, access.DEPLOY), user=request.user)
    return preview_out(request, preview)


@router.post("/functions/{name}/previews/{iid}/approve", response={202: DeploymentOut, **ERRORS},
             summary="Approve a fork's head (deployers; a signed-in session only, never a token)")
def approve_preview(request, name: str, iid: int, payload: ApprovePreviewIn):
    preview = _preview(request, name, iid, access.DEPLOY)
    if getattr(request, "api_token", None) is not None:
        raise ApiError(403, "session-only", "approving a fork's preview runs its Dockerfile on the builder: "
                                            "a signed-in session only, never a token")
    deployment = deployments.approve_preview(preview, user=request.user, commit=payload.commit,
                                             trigger=Deployment.Trigger.API)
    return Status(202, deployment_out(request, deployment_for(request, deployment.pk, access.VIEW)))
