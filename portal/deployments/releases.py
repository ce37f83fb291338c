"""Which deployment is live, published versions of an environment's Lambda, and the
console's choice of what to invoke: the alias, then each version. Per environment:
each has its own Lambda and alias.
"""

from __future__ import annotations

from django.db.models import OuterRef, QuerySet

from portal.deployments.models import Deployment
from portal.functions import Environment


def went_live(environment: Environment | OuterRef) -> QuerySet[Deployment]:
    """The deployments that made a version live in `environment` (succeeded, with the
    version they put behind its alias), newest first: the first is what the alias
    serves, by Slipway's record. `environment` may be an OuterRef, for a subquery per
    row of a list. A preview is never what is live: it moves its own alias."""
    return (Deployment.objects.filter(environment=environment, status=Deployment.Status.SUCCEEDED)
            .exclude(version="").exclude(kind=Deployment.Kind.PREVIEW).order_by("-finished_at", "-pk"))


def live_deployment(environment: Environment) -> Deployment | None:
    """What the environment's alias serves, by Slipway's record: its newest successful deployment."""
    return went_live(environment).select_related("build", "requested_by").first()


def published_versions(environment: Environment) -> dict[str, str]:
    """Version -> the status of the deployment that published it, newest first. A version
    whose deploy failed its verify step is there too: it is the one worth looking at."""
    found: dict[str, str] = {}
    rows = (Deployment.objects.filter(environment=environment, version_gone=False).exclude(version="")
            .order_by("-pk").values_list("version", "status"))
    for version, status in rows:
        if found.get(version) != Deployment.Status.SUCCEEDED:
            found[version] = status
    return dict(sorted(found.items(), key=lambda item: int(item[0]) if item[0].isdigit() else 0, reverse=True))


def targets(environment: Environment) -> list[tuple[str, str]]:
    """(value, label) choices: the environment's alias first, then each version published
    to its Lambda. None until something was published."""
    versions = published_versions(environment)
    if not versions:
        return []
    labels = [(v, f"version {v}" + ("" if status == Deployment.Status.SUCCEEDED else f" (its deploy {status})"))
              for v, status in versions.items()]
    return [(environment.alias, f"{environment.alias} (what is live)"), *labels]
