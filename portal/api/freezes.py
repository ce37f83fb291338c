"""API resource: freeze windows — an environment's (owners write, members read) under
/functions/{name}/environments/{env}/freezes, and the global ones (staff write, anyone
signed in reads) under /freezes.

Additions and edits go through portal/deployments/freezing.py's FreezeWindowForm and its
create/update/delete, so the API applies the pages' rules exactly (two valid crons and an
IANA zone, or two instants with the end after the start; a reason; who may). What a
deleted or ended freeze held is released at once. Overriding a freeze is not an API
endpoint: like approving, it needs a signed-in session and a fresh CSRF form (the
deployment page's Override form).

May import: Django, ninja, pydantic, the deployments package's freezes and freezing
modules, portal.models, and auth, errors and schemas from this package.
"""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import PermissionDenied
from ninja import Field, Router, Schema, Status
from pydantic import ConfigDict

from portal import deployments
from portal.api.auth import full_only, function_for
from portal.api.errors import ApiError
from portal.api.schemas import ERRORS, page_out
from portal.deployments import freezes, freezing
from portal.functions import access
from portal.models import Environment, FreezeWindow

router = Router()

WHEN = "An ISO 8601 date-time (UTC unless it has an offset); one-off windows only."


class FreezeIn(Schema):
    """A window: `start_cron`, `end_cron` and `timezone` (recurring), or `starts_at` and `ends_at` (one-off)."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"reason": "weekend", "start_cron": "0 17 * * 5", "end_cron": "0 8 * * 1", "timezone": "Europe/Berlin"},
        {"reason": "launch", "starts_at": "2030-06-01T00:00:00Z", "ends_at": "2030-06-02T00:00:00Z"}]})
    reason: str = Field(..., max_length=200, description="Why deployments stop.")
    start_cron: str = Field("", max_length=100, description="Recurring: a cron expression (croniter's).")
    end_cron: str = Field("", max_length=100, description="Recurring: a cron expression (croniter's).")
    timezone: str = Field("UTC", max_length=64, description="An IANA time zone the crons read.")
    starts_at: str | None = Field(None, max_length=40, description=WHEN)
    ends_at: str | None = Field(None, max_length=40, description=WHEN)


class FreezePatch(Schema):
    """Any of a window's fields; the result must still be one valid window."""

    model_config = ConfigDict(extra="forbid", strict=True)
    reason: str | None = Field(None, max_length=200)
    start_cron: str | None = Field(None, max_length=100)
    end_cron: str | None = Field(None, max_length=100)
    timezone: str | None = Field(None, max_length=64)
    starts_at: str | None = Field(None, max_length=40, description=WHEN)
    ends_at: str | None = Field(None, max_length=40, description=WHEN)


class FreezeOut(Schema):
    id: int
    environment: str | None = Field(..., description="None: a global window (every environment).")
    reason: str
    start_cron: str
    end_cron: str
    timezone: str
    starts_at: datetime | None
    ends_at: datetime | None
    active: bool = Field(..., description="Whether it holds deployments now.")
    created_by: str | None
    created_at: datetime


class FreezePage(Schema):
    items: list[FreezeOut]
    page: int
    pages: int
    count: int


def freeze_out(window: FreezeWindow) -> dict:
    return {"id": window.pk, "environment": window.environment.name if window.environment else None,
            **{name: getattr(window, name) for name in ("reason", "start_cron", "end_cron", "timezone", "starts_at",
                                                         "ends_at", "created_at")},
            "active": freezes.active(window),
            "created_by": window.created_by.get_username() if window.created_by else None}


def _data(values: dict, window: FreezeWindow | None) -> dict:
    """API values -> the form's data, over the window's current ones for an edit."""
    fields = freezing.FreezeWindowForm.Meta.fields
    base = {} if window is None else {name: getattr(window, name) or "" for name in fields}
    base.update({name: "" if value is None else value for name, value in values.items()})
    return base


def _save(values: dict, environment: Environment | None, user, window: FreezeWindow | None = None) -> FreezeWindow:
    if not freezing.may_manage(user, environment):  # before the body is judged: a 403 tells no rules
        raise PermissionDenied("only staff manage global freeze windows" if environment is None
                               else "only owners manage an environment's freeze windows")
    form = freezing.FreezeWindowForm(_data(values, window), instance=window)
    if not form.is_valid():
        fields = {name: [str(e) for e in errors] for name, errors in form.errors.items()}
        raise ApiError(400, "invalid", "the freeze window is not valid", fields)
    if window is None:
        return freezing.create(form, environment, user)
    return freezing.update(form, user)


def _environment(request, name: str, env: str, action: str) -> Environment:
    return deployments.environment_named(function_for(request, name, action), env)


def _window(environment: Environment | None, window_id: int) -> FreezeWindow:
    found = freezing.windows(environment).filter(pk=window_id).first()
    if found is None:
        raise ApiError(404, "not-found", "no such freeze window")
    return found


# --- An environment's windows -----------------------------------------------------------------


@router.get("/functions/{name}/environments/{env}/freezes", response={200: FreezePage, **ERRORS},
            summary="An environment's own freeze windows (global ones: /freezes)")
def list_freezes(request, name: str, env: str, page: int = 1):
    return page_out(freezing.windows(_environment(request, name, env, access.VIEW)), page, freeze_out)


@router.post("/functions/{name}/environments/{env}/freezes", response={201: FreezeOut, **ERRORS},
             summary="Add a freeze window to an environment (owner)")
def create_freeze(request, name: str, env: str, payload: FreezeIn):
    environment = _environment(request, name, env, access.ADMIN)
    return Status(201, freeze_out(_save(payload.dict(), environment, request.user)))


@router.get("/functions/{name}/environments/{env}/freezes/{window_id}", response={200: FreezeOut, **ERRORS},
            summary="One freeze window of an environment")
def get_freeze(request, name: str, env: str, window_id: int):
    return freeze_out(_window(_environment(request, name, env, access.VIEW), window_id))


@router.patch("/functions/{name}/environments/{env}/freezes/{window_id}", response={200: FreezeOut, **ERRORS},
              summary="Edit a freeze window of an environment (owner)")
def edit_freeze(request, name: str, env: str, window_id: int, payload: FreezePatch):
    environment = _environment(request, name, env, access.ADMIN)
    window = _window(environment, window_id)
    return freeze_out(_save(payload.dict(exclude_unset=True), environment, request.user, window))


@router.delete("/functions/{name}/environments/{env}/freezes/{window_id}", response={204: None, **ERRORS},
               summary="Delete a freeze window of an environment (owner); what it held is released")
def delete_freeze(request, name: str, env: str, window_id: int):
    environment = _environment(request, name, env, access.ADMIN)
    freezing.delete(_window(environment, window_id), request.user)
    return Status(204, None)


# --- Global windows ---------------------------------------------------------------------------


def _staff_writes(request) -> None:
    full_only(request)
    if not request.user.is_staff:
        raise PermissionDenied("only staff manage global freeze windows")


@router.get("/freezes", response={200: FreezePage, **ERRORS}, summary="The global freeze windows")
def list_global_freezes(request, page: int = 1):
    return page_out(freezing.windows(None), page, freeze_out)


@router.post("/freezes", response={201: FreezeOut, **ERRORS},
             summary="Add a global freeze window: every environment (staff)")
def create_global_freeze(request, payload: FreezeIn):
    _staff_writes(request)
    return Status(201, freeze_out(_save(payload.dict(), None, request.user)))


@router.get("/freezes/{window_id}", response={200: FreezeOut, **ERRORS}, summary="One global freeze window")
def get_global_freeze(request, window_id: int):
    return freeze_out(_window(None, window_id))


@router.patch("/freezes/{window_id}", response={200: FreezeOut, **ERRORS},
              summary="Edit a global freeze window (staff)")
def edit_global_freeze(request, window_id: int, payload: FreezePatch):
    _staff_writes(request)
    return freeze_out(_save(payload.dict(exclude_unset=True), None, request.user, _window(None, window_id)))


@router.delete("/freezes/{window_id}", response={204: None, **ERRORS}, summary="Delete a global freeze window (staff)")
def delete_global_freeze(request, window_id: int):
    _staff_writes(request)
    freezing.delete(_window(None, window_id), request.user)
    return Status(204, None)
