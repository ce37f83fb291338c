"""The pages' one handler of Slipway's error type (deploy.errors.SlipwayError: the
domain's RequestRefused and every kind under it): a refusal a view lets out is shown
as a message on the page the view names. Views that show a refusal inside their own
page (a form's error, the console's error box) catch it there instead.
"""

from __future__ import annotations

import functools
import inspect

from django.contrib import messages
from django.shortcuts import redirect

from deploy.errors import SlipwayError


def shown_on(page: str, *arguments: str):
    """Decorate a view: a SlipwayError it raises becomes an error message on `page`,
    reversed with the view's own `arguments` (by name, e.g. "name", "pk")."""
    def decorate(view):
        signature = inspect.signature(view)

        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            try:
                return view(request, *args, **kwargs)
            except SlipwayError as exc:
                messages.error(request, exc.message)
                given = signature.bind(request, *args, **kwargs).arguments
                return redirect(page, **{name: given[name] for name in arguments})
        return wrapped
    return decorate
