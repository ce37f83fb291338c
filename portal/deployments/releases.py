"""Which deployment is live, published versions of an environment's Lambda, and the
console's choice of what to invoke: the alias, then each version. Per environment:
each has its own Lambda and alias.
"""

from __future__ import annotations

from django.db.models import OuterRef, QuerySet

from portal.deployments.models import Deployment, Preview, alias_for
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
    to its Lambda. None until something was published. The preview environment's: each
    live preview's alias, then what is live in the first environment (`<name>:<alias>`, to
    compare a preview with)."""
    if environment.preview:
        return _preview_targets(environment)
    versions = published_versions(environment)
    if not versions:
        return []
    labels = [(v, f"version {v}" + ("" if status == Deployment.Status.SUCCEEDED else f" (its deploy {status})"))
              for v, status in versions.items()]
    return [(environment.alias, f"{environment.alias} (what is live)"), *labels]


def _preview_targets(environment: Environment) -> list[tuple[str, str]]:
    aliases = [(alias_for(p.mr_iid), f"{alias_for(p.mr_iid)} (!{p.mr_iid} {p.title[:60]}, version {p.version})")
               for p in Preview.objects.filter(environment=environment, state=Preview.State.OPEN).exclude(version="")
               .order_by("-mr_iid")]
    if not aliases:
        return []
    first = Environment.objects.in_order().filter(function_id=environment.function_id).order_by("position").first()
    live = [(f"{first.name}:{first.alias}", f"{first.alias} of {first.name} (what is live)")] \
        if went_live(first).exists() else []
    return [*aliases, *live]


def resolve_target(environment: Environment, target: str) -> tuple[Environment, str]:
    """The environment and alias or version a console target names (`<name>:<alias>`: another
    environment's, offered by the preview environment's targets)."""
    name, sep, rest = target.partition(":")
    if not sep:
        return environment, target
    other = Environment.objects.in_order().filter(function_id=environment.function_id, name=name).first()
    if other is None:
        raise ValueError(f"no environment {name!r}")
    return other, rest
