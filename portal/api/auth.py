"""Who is calling the API, and what their token lets them reach.

Owns the two ways in — `TokenAuth` (`Authorization: Bearer slp_…`, an ApiToken)
and `SessionAuth` (the browser's session, CSRF-checked for unsafe methods) —
and the token-scope access layer over portal.access: a token limited to one
function sees every other as absent (404), a deploy-only token may only
trigger, read and follow deployments (403 `token-scope`). Every endpoint
reaches a function or deployment through `function_for` / `deployment_for`.

May import: Django, ninja, the functions package (access), portal.models, and
errors from this package.
"""

from __future__ import annotations

from django.conf import settings
from django.db.models.functions import Now
from django.http import Http404, HttpRequest
from django.middleware.csrf import CsrfViewMiddleware
from ninja.security import APIKeyCookie, HttpBearer

from portal.api.errors import ApiError
from portal.functions import access
from portal.models import ApiToken, Deployment, Function

DEPLOY_SCOPE = "deploy"  # what a deploy-only token may do


class TokenAuth(HttpBearer):
    """`Authorization: Bearer slp_…`: a token that is unknown, revoked or expired is refused outright."""

    def authenticate(self, request: HttpRequest, token: str):
        # Not the function too: only a token limited to one reads it, and joining its wide row
        # costs every request more than the one query it saves them.
        found = ApiToken.objects.select_related("user").filter(token_hash=ApiToken.digest(token)).first()
        if found is None or not found.user.is_active:
            raise ApiError(401, "invalid-token", "this token is not valid")
        if found.revoked_at:
            raise ApiError(401, "token-revoked", f"token {found.name!r} was revoked")
        if not found.is_active:
            raise ApiError(401, "token-expired", f"token {found.name!r} expired at {found.expires_at:%Y-%m-%d %H:%M}")
        ApiToken.objects.filter(pk=found.pk).update(last_used_at=Now())
        request.user = found.user
        request.api_token = found
        return found.user


class SessionAuth(APIKeyCookie):
    """The browser's session, for the UI's own fetches; unsafe methods need the CSRF token."""

    param_name = settings.SESSION_COOKIE_NAME

    def _get_key(self, request):
        return request.COOKIES.get(self.param_name)

    def authenticate(self, request: HttpRequest, key):
        if not request.user.is_authenticated:
            return None
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            check = CsrfViewMiddleware(lambda r: None)
            check.process_request(request)
            if check.process_view(request, lambda r: None, (), {}) is not None:
                raise ApiError(403, "csrf-failed", "a session request needs the X-CSRFToken header")
        request.api_token = None
        return request.user


def function_for(request, name: str, action: str, *, scope: str = "") -> Function:
    """The function if the caller may do `action`; a token limited to another function sees 404."""
    token: ApiToken | None = getattr(request, "api_token", None)
    if token and token.function_id and token.function.name != name:
        raise Http404("no such function")
    function = access.function_for(request.user, name, action)
    if scope != DEPLOY_SCOPE:
        full_only(request)
    return function


def deployment_for(request, pk: int, action: str, *, scope: str = "") -> Deployment:
    """The deployment if the caller may do `action` on its function; otherwise the 404 of one that does not exist."""
    deployment = (Deployment.objects.select_related("function", "environment", "build", "requested_by")
                  .prefetch_related("steps").filter(pk=pk).first())
    if deployment is None:
        raise Http404("no such deployment")
    try:
        function_for(request, deployment.function.name, action, scope=scope)
    except Http404:
        raise Http404("no such deployment") from None  # the same answer as for one that does not exist
    return deployment


def full_only(request) -> None:
    """403 `token-scope` for a deploy-only token, on anything outside its deployments."""
    token = getattr(request, "api_token", None)
    if token and token.deploy_only:
        raise ApiError(403, "token-scope", "this token may only trigger, read and follow deployments")
