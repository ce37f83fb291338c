"""What must not change under work in progress: the guards the functions registry asks
(its `environment_changing` signal, connected by portal/apps.py) before an environment
is deleted or the promotion order changes. The functions package cannot ask itself: what
is live and what is unfinished are this package's records.
"""

from __future__ import annotations

from portal.core.errors import RequestRefused
from portal.deployments.models import Deployment
from portal.deployments.releases import live_deployment

IN_USE = "environment-in-use"


def _unfinished(**where) -> Deployment | None:
    return Deployment.objects.filter(**where).exclude(status__in=Deployment.TERMINAL).order_by("pk").first()


def refuse_environment_in_use(sender, *, function, environment, change: str, **kwargs) -> None:
    """Refuse (`environment-in-use`) to delete an environment something is live in or a
    deployment to it is unfinished (queued, soaking, running); and to change the promotion
    order while any deployment of the function is unfinished: it was requested, and a
    promotion's upstream pinned, for the order it was made in."""
    if change == "delete":
        live = live_deployment(environment)
        if live is not None:
            raise RequestRefused(f"version {live.version} is live in {environment.name} (deployment #{live.pk}): "
                                 "an environment that serves a release cannot be deleted", code=IN_USE)
        busy = _unfinished(environment=environment)
        if busy is not None:
            raise RequestRefused(f"deployment #{busy.pk} to {environment.name} is {busy.status}: cancel it or let it "
                                 "finish before deleting the environment", code=IN_USE)
    elif change == "reorder":
        busy = _unfinished(function=function)
        if busy is not None:
            where = busy.environment.name if busy.environment_id else ""
            raise RequestRefused(f"deployment #{busy.pk} of {function.name} ({where}) is {busy.status}: the "
                                 "promotion order cannot change until it finishes", code=IN_USE)
