"""The API's one error shape and its handlers.

Every refusal has one body — `{"error": {"code", "message", "fields"}}`. Anything of
Slipway's one error type (deploy.errors.SlipwayError: the domain's RequestRefused, a
rate limit, `ApiError` raised by the endpoints) is answered by one handler with its
own status, code, fields and headers; the other handlers turn what ninja or Django
raise into the same body. `install(api)` registers them on the NinjaAPI.

May import: Django, ninja, deploy.errors. Nothing of the portal: every other API
module imports this one.
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from deploy.errors import SlipwayError

log = logging.getLogger(__name__)


class ApiError(SlipwayError):
    """A SlipwayError written as the endpoints read best: the status first."""

    def __init__(self, status: int, code: str, message: str, fields: dict | None = None,
                 headers: dict | None = None):
        super().__init__(code, message, status=status, fields=fields, headers=headers)


class NotAnObject(ValueError):
    """A request body that is JSON but not an object (raised by limits.ObjectParser)."""


def error_response(status: int, code: str, message: str, fields: dict | None = None,
                   headers: dict | None = None) -> JsonResponse:
    response = JsonResponse({"error": {"code": code, "message": message, "fields": fields or {}}}, status=status)
    for key, value in (headers or {}).items():
        response[key] = value
    return response


def _refused(request, exc: SlipwayError):
    """The one handler of the one error type."""
    return error_response(exc.status, exc.code, exc.message, exc.fields, exc.headers)


def _unauthenticated(request, exc):
    return error_response(401, "unauthenticated", "send `Authorization: Bearer <token>` or sign in")


def _not_found(request, exc):
    return error_response(404, "not-found", str(exc) or "not found")


def _forbidden(request, exc):
    return error_response(403, "forbidden", str(exc) or "not allowed")


def _http_error(request, exc: HttpError):
    if isinstance(exc.__cause__, NotAnObject):  # ninja wraps what the parser raised
        return error_response(400, "invalid", "the request is not valid", {"body": [str(exc.__cause__)]})
    return error_response(exc.status_code, "http-error", str(exc))


def _invalid(request, exc: ValidationError):
    fields: dict[str, list[str]] = {}
    for error in exc.errors:
        location = [str(part) for part in error.get("loc", ()) if part not in ("body", "payload", "query")]
        fields.setdefault(".".join(location) or "body", []).append(error.get("msg", "invalid"))
    return error_response(400, "invalid", "the request is not valid", fields)


def _crash(request, exc):
    log.exception("API request %s %s failed", request.method, request.path)
    return error_response(500, "internal-error", "Slipway failed to answer; the error is logged")


HANDLERS = {SlipwayError: _refused, AuthenticationError: _unauthenticated, Http404: _not_found,
            PermissionDenied: _forbidden, HttpError: _http_error, ValidationError: _invalid, Exception: _crash}


def install(api: NinjaAPI) -> None:
    """Every exception answered in the one shape; anything unforeseen is a logged 500."""
    for exc_class, handler in HANDLERS.items():
        api.add_exception_handler(exc_class, handler)
