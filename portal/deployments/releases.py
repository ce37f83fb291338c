"""Which deployment is live, published versions of a function, and the console's
choice of what to invoke: the alias, then each version.
"""

from __future__ import annotations

from django.db.models import OuterRef, QuerySet

from portal.deployments.models import Deployment
from portal.functions import Function


def went_live(function: Function | OuterRef) -> QuerySet[Deployment]:
    """The deployments that made a version live (succeeded, with the version they put
    behind the alias), newest first: the first is what the alias serves, by Slipway's
    record. `function` may be an OuterRef, for a subquery per row of a list."""
    return (Deployment.objects.filter(function=function, status=Deployment.Status.SUCCEEDED).exclude(version="")
            .order_by("-finished_at", "-pk"))


def live_deployment(function: Function) -> Deployment | None:
    """What the alias serves, by Slipway's record: the newest successful deployment."""
    return went_live(function).select_related("build", "requested_by").first()


def published_versions(function: Function) -> dict[str, str]:
    """Version -> the status of the deployment that published it, newest first. A version
    whose deploy failed its verify step is there too: it is the one worth looking at."""
    found: dict[str, str] = {}
    rows = (Deployment.objects.filter(function=function, version_gone=False).exclude(version="")
            .order_by("-pk").values_list("version", "status"))
    for version, status in rows:
        if found.get(version) != Deployment.Status.SUCCEEDED:
            found[version] = status
    return dict(sorted(found.items(), key=lambda item: int(item[0]) if item[0].isdigit() else 0, reverse=True))


def targets(function: Function) -> list[tuple[str, str]]:
    """(value, label) choices: the alias first, then each published version. None until
    something was published."""
    versions = published_versions(function)
    if not versions:
        return []
    labels = [(v, f"version {v}" + ("" if status == Deployment.Status.SUCCEEDED else f" (its deploy {status})"))
              for v, status in versions.items()]
    return [(function.alias, f"{function.alias} (what is live)"), *labels]
