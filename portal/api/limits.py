"""What the API refuses before an endpoint acts: an oversized body, a body that is
not a JSON object, and a deploy over the caller's rate.

Owns the body-cap middleware (`BodyCap`, named by its dotted path in
settings.MIDDLEWARE), the request parser every body goes through
(`ObjectParser`) and the one deploy-rate check (`spend_deploy`).

May import: Django, ninja, portal.core.ratelimit, and errors from this package.
"""

from __future__ import annotations

from django.conf import settings
from ninja.parser import Parser

from portal.api.errors import NotAnObject, error_response
from portal.core import ratelimit


class BodyCap:
    """Middleware: an API request body over SLIPWAY_API_MAX_BODY bytes is refused
    with 413 before anything reads it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/api/"):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > settings.SLIPWAY_API_MAX_BODY:
                return error_response(413 if length > 0 else 400, "too-large",
                                      f"request bodies are capped at {settings.SLIPWAY_API_MAX_BODY} bytes")
        return self.get_response(request)


class ObjectParser(Parser):
    """Every request body is a JSON object: a list, a number or `null` is refused, where
    pydantic would otherwise read `[null, null]` as an object with no fields and the
    endpoint would act on its defaults."""

    def parse_body(self, request):
        data = super().parse_body(request)
        if not isinstance(data, dict):
            raise NotAnObject("must be a JSON object")
        return data


def spend_deploy(request) -> None:
    """Count one deploy against the caller's token (or signed-in user): 429 `rate-limited`
    with Retry-After once SLIPWAY_API_DEPLOY_RATE are spent in the window.

    A call the endpoint makes after its access check rather than a decorator around it: a
    caller refused with 404 or 403 must spend nothing and must not be told 429 instead."""
    ratelimit.check_deploy(request.api_token or request.user)  # Limited: a SlipwayError, answered by errors.py
