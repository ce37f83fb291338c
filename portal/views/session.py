"""Views that act only for a signed-in person at a page, never for a script."""

from __future__ import annotations

import functools

from django.core.exceptions import PermissionDenied


def session_only(view):
    """403 for a request that carries an API token (`Authorization: Bearer …`), signed in or
    not, before anything else: approving, rejecting, overriding a freeze and managing freeze
    windows need a signed-in session and its fresh CSRF form; the API never does them."""
    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        if request.headers.get("Authorization", "").strip().lower().startswith("bearer"):
            raise PermissionDenied("a signed-in session and its CSRF form only: an API token cannot do this")
        return view(request, *args, **kwargs)
    return wrapped
