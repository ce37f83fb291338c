"""API resource: a function's feedback — where it reports (GitLab commit status,
notification webhook, who is emailed) and its drift (what AWS reports that
differs from what Slipway left there: read, check now, accept).

Owns these endpoints and `feedback_out` / `drift_out`. The GitLab token is
write-only: the answers say only whether one is set.

May import: Django, ninja, deploy.errors, the functions, deployments and feedback
packages (access, environment_named, drift, the feedback form), portal.models, and auth, errors and schemas
from this package.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from ninja import Router

from deploy.errors import DeployError
from portal import deployments, feedback
from portal.api.auth import function_for
from portal.api.errors import ApiError
from portal.api.schemas import ERRORS, DriftOut, FeedbackOut, FeedbackPatch
from portal.feedback import drift
from portal.feedback.forms import FeedbackForm
from portal.functions import access
from portal.models import Environment, Function

router = Router()


def feedback_out(function: Function) -> dict:
    reports = function.feedback_settings
    return {"gitlab_api_url": reports.gitlab_api_url, "gitlab_project": reports.gitlab_project,
            "gitlab_token_set": bool(reports.gitlab_status_token), "notify_webhook_url": reports.notify_webhook_url,
            "notify_webhook_secret_set": bool(reports.notify_webhook_secret),
            "notify_members": sorted(reports.notify_members.values_list("username", flat=True))}


def drift_out(function: Function, environment: Environment, outcome: str = "") -> dict:
    """The drift of one environment of the function."""
    environment.drift_state.refresh_from_db()  # as a check or an accept just left it
    shown = drift.current(function, environment)
    state = environment.drift_state
    return {"changed_outside_slipway": bool(shown), "differences": shown,
            "checked_at": state.drift_checked_at, "detected_at": state.drift_detected_at, "outcome": outcome}


@router.get("/functions/{name}/feedback", response={200: FeedbackOut, **ERRORS},
            summary="Where a function reports: GitLab commit status and notifications (owner)")
def get_feedback(request, name: str):
    return feedback_out(function_for(request, name, access.ADMIN))


@router.patch("/functions/{name}/feedback", response={200: FeedbackOut, **ERRORS},
              summary="Set the GitLab project and token, the notification webhook and who is emailed (owner)")
def edit_feedback(request, name: str, payload: FeedbackPatch):
    function = function_for(request, name, access.ADMIN)
    values = payload.dict(exclude_unset=True)
    reports = function.feedback_settings
    data = {"gitlab_api_url": reports.gitlab_api_url, "gitlab_project": reports.gitlab_project,
            "notify_webhook_url": reports.notify_webhook_url,
            "notify_members": list(reports.notify_members.values_list("pk", flat=True))}
    data.update({k: v for k, v in values.items() if k != "notify_members" and v is not None})
    if values.get("notify_members") is not None:
        names = values["notify_members"]
        users = dict(get_user_model().objects.filter(username__in=names).values_list("username", "pk"))
        unknown = sorted(set(names) - set(users))
        if unknown:
            raise ApiError(400, "invalid", "not valid", {"notify_members": [f"no such user: {', '.join(unknown)}"]})
        data["notify_members"] = list(users.values())
    form = FeedbackForm(data, instance=reports)
    if not form.is_valid():
        fields = {name: [str(e) for e in errors] for name, errors in form.errors.items()}
        raise ApiError(400, "invalid", "the feedback settings are not valid", fields)
    return feedback_out(feedback.update_feedback(form, user=request.user))


@router.get("/functions/{name}/drift", response={200: DriftOut, **ERRORS},
            summary="What AWS reported that differs from what Slipway left there")
def get_drift(request, name: str, environment: str = ""):
    """`environment`: required when the function has several (400 `environment-required`)."""
    function = function_for(request, name, access.VIEW)
    return drift_out(function, deployments.environment_named(function, environment))


@router.post("/functions/{name}/drift/check", response={200: DriftOut, **ERRORS},
             summary="Compare the function in AWS with what Slipway left there now (deployer)")
def check_drift(request, name: str, environment: str = ""):
    function = function_for(request, name, access.DEPLOY)
    chosen = deployments.environment_named(function, environment)
    try:
        result = drift.check(function, user=request.user, environment=chosen)
    except DeployError as exc:
        raise ApiError(409, "aws-unavailable", f"the check could not read the function from AWS: {exc.message}"
                       ) from None
    return drift_out(function, chosen, result.outcome)


@router.post("/functions/{name}/drift/accept", response={200: DriftOut, **ERRORS},
             summary="Accept what AWS reports as the new expected state (owner)")
def accept_drift(request, name: str, environment: str = ""):
    function = function_for(request, name, access.ADMIN)
    chosen = deployments.environment_named(function, environment)
    drift.accept(function, user=request.user, environment=chosen)
    return drift_out(function, chosen, "accepted")
