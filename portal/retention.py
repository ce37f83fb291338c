"""Retention that cannot break a rollback.

Per function: delete the published Lambda versions older than its last N
releases that no alias references, then the ECR images that no remaining
version references. The order is the point: on AWS a version whose image is
deleted goes to `Failed`, so an image goes only once nothing that could be put
back runs it.

What is kept, and why (every kept item carries its reason in the report):

- a version an alias points at (its main version or a weighted one);
- the versions of the last N releases (successful deploys, redeploys and
  rollbacks, newest first, each version once), and anything newer than the
  oldest of them (e.g. a version whose verify failed yesterday);
- versions Slipway did not publish (no deployment row names them), $LATEST;
- an image a remaining version (or $LATEST) runs, read from Lambda by digest;
  the image of any of the last N releases even when its version is gone (a
  rollback to it deploys that image again); images Slipway did not push for
  this function; images built after the oldest kept release.

It works like a deployment: the function row is locked first (the queue's
lock order, portal/queue.py), so no deployment of the function is requested,
claimed or dispatched while it deletes, and a function with an unfinished
deployment (queued or running) is skipped. What it deletes is marked in the
database (Deployment.version_gone, Build.image_gone_at), so pages and
services refuse those rollback targets without asking AWS. Each run of a
function that deleted, would delete (dry run), was skipped or failed leaves an
AuditEvent with the report.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from django.db import transaction
from django.db.models import Max
from django.db.models.functions import Coalesce, Now

from deploy import ecr, lambdas
from deploy.errors import DeployError
from portal.models import AuditEvent, Build, Deployment, Function

log = logging.getLogger(__name__)
RELEASE_KINDS = (Deployment.Kind.DEPLOY, Deployment.Kind.REDEPLOY, Deployment.Kind.ROLLBACK)


@dataclass
class Report:
    """What one function's run kept and why, and what it deleted (or would, in a dry run)."""

    function: str
    keep: int
    dry_run: bool
    skipped: str = ""
    kept_versions: dict[str, str] = field(default_factory=dict)  # version -> why
    deleted_versions: list[str] = field(default_factory=list)
    kept_images: dict[str, str] = field(default_factory=dict)  # digest -> why
    deleted_images: dict[str, str] = field(default_factory=dict)  # digest -> its tag
    errors: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.deleted_versions or self.deleted_images)

    def summary(self) -> str:
        if self.skipped:
            return f"{self.function}: skipped: {self.skipped}"
        verb = "would delete" if self.dry_run else "deleted"
        versions = ", ".join(self.deleted_versions) or "none"
        text = (f"{self.function}: {verb} versions {versions} and {len(self.deleted_images)} image(s); "
                f"kept {len(self.kept_versions)} version(s) and {len(self.kept_images)} image(s) "
                f"(last {self.keep} releases)")
        return text + (f"; {len(self.errors)} error(s)" if self.errors else "")

    def lines(self) -> list[str]:
        """The whole report, for the command line."""
        out = [self.summary()]
        out += [f"  keep version {v}: {why}" for v, why in sorted(self.kept_versions.items(), key=_version_key)]
        out += [f"  {'would delete' if self.dry_run else 'deleted'} version {v}" for v in self.deleted_versions]
        out += [f"  keep image {d}: {why}" for d, why in self.kept_images.items()]
        out += [f"  {'would delete' if self.dry_run else 'deleted'} image {d} ({tag or 'untagged'})"
                for d, tag in self.deleted_images.items()]
        out += [f"  error: {e}" for e in self.errors]
        return out

    def as_dict(self) -> dict:
        fields = asdict(self)
        del fields["function"]  # the event's own function
        return {"summary": self.summary(), **fields}


def _version_key(item) -> tuple:
    version = item[0]
    return (0, int(version)) if version.isdigit() else (1, 0)


def run(*, keep: int, dry_run: bool, names: list[str] | None = None) -> list[Report]:
    """Apply the rule to every function (or those named), one at a time, each under its own lock."""
    if keep < 1:
        raise ValueError("retention keeps at least the last release")
    functions = Function.objects.order_by("pk")
    if names:
        functions = functions.filter(name__in=names)
    reports = []
    for pk, name in functions.values_list("pk", "name"):
        try:
            reports.append(retain(pk, keep=keep, dry_run=dry_run))
        except Exception as exc:  # one function's trouble does not keep the others from their cleanup
            log.exception("retention of %s failed", name)
            reports.append(Report(name, keep, dry_run, errors=[f"{type(exc).__name__}: {exc}"]))
    return reports


def retain(function_id: int, *, keep: int, dry_run: bool) -> Report:
    with transaction.atomic():
        function = Function.objects.select_for_update().get(pk=function_id)  # function row first, as the queue
        report = Report(function.name, keep, dry_run)
        unfinished = (Deployment.objects.filter(function=function).exclude(status__in=Deployment.TERMINAL)
                      .order_by("pk").first())
        if unfinished is not None:
            report.skipped = (f"deployment #{unfinished.pk} ({unfinished.kind}) is {unfinished.status}: "
                              "nothing is deleted while a deployment waits or runs")
        else:
            try:
                _apply(function, report)
            except DeployError as exc:  # a listing failed: nothing more is decided without it
                report.errors.append(str(exc))
        if unfinished is not None or report.changed or report.errors:  # a never-deployed function: no news
            action = "retention.skipped" if report.skipped else (
                "retention.dry_run" if dry_run else "retention.applied")
            AuditEvent.record(action, actor_label="retention", function=function, **report.as_dict())
    log.info("retention %s", report.summary())
    return report


def _apply(function: Function, report: Report) -> None:
    name = function.lambda_name
    if lambdas.get_configuration(name) is None:
        report.skipped = f"the Lambda {name} does not exist (never deployed)"
        return
    deployments = Deployment.objects.filter(function=function).exclude(version="")
    releases = list(deployments.filter(status=Deployment.Status.SUCCEEDED, kind__in=RELEASE_KINDS)
                    .annotate(at=Coalesce("finished_at", "created_at")).order_by("-at", "-pk")
                    .select_related("build"))
    kept_releases: dict[str, Deployment] = {}
    for release in releases:  # newest first; a version rolled back to counts once, at its latest
        if len(kept_releases) == report.keep:
            break
        kept_releases.setdefault(release.version, release)
    # Anything Slipway published after the oldest kept release became live stays too.
    cutoff = min(r.at for r in kept_releases.values()) if len(kept_releases) == report.keep else None
    published = dict(deployments.order_by().values_list("version").annotate(
        at=Max(Coalesce("finished_at", "created_at"))))  # version -> when Slipway last published or released it

    on_lambda = [v["Version"] for v in lambdas.list_versions(name) if v["Version"].isdigit()]
    aliased = lambdas.aliased_versions(lambdas.list_aliases(name))
    doomed = []
    for version in on_lambda:
        if version in aliased:
            report.kept_versions[version] = f"alias {', '.join(sorted(aliased[version]))} points at it"
        elif version in kept_releases:
            report.kept_versions[version] = (f"one of the last {report.keep} releases "
                                             f"(deployment #{kept_releases[version].pk})")
        elif version not in published:
            report.kept_versions[version] = "not published by Slipway"
        elif cutoff is None:
            report.kept_versions[version] = f"fewer than {report.keep} releases so far"
        elif published[version] >= cutoff:
            report.kept_versions[version] = "newer than the oldest kept release"
        else:
            doomed.append(version)
    # A version the database still offers but Lambda no longer holds: mark it, as check_release would.
    missing = set(published) - set(on_lambda)
    if missing and not report.dry_run:
        deployments.filter(version__in=missing, version_gone=False).update(version_gone=True)

    for version in doomed:  # versions first: nothing that could be put back may lose its image
        if report.dry_run:
            report.deleted_versions.append(version)
            continue
        try:
            lambdas.delete_version(name, version)
        except DeployError as exc:
            report.errors.append(f"version {version}: {exc}")
            report.kept_versions[version] = "its delete failed"
            continue
        Deployment.objects.filter(function=function, version=version).update(version_gone=True)
        report.deleted_versions.append(version)

    _images(function, report, kept_releases, cutoff)


def _images(function: Function, report: Report, kept_releases: dict[str, Deployment], cutoff) -> None:
    """Delete the images no remaining version runs, by digest (never by tag)."""
    name, repository = function.lambda_name, function.ecr_repository
    remaining = [v["Version"] for v in lambdas.list_versions(name)]
    if report.dry_run:
        remaining = [v for v in remaining if v not in report.deleted_versions]
    runs: dict[str, list[str]] = {}
    for version in remaining:
        digest = _version_digest(function, version)
        if digest is None:
            report.kept_images["*"] = f"the image of version {version} could not be told: no image is deleted"
            return
        if digest:
            runs.setdefault(digest, []).append(version)
    release_images = {r.build.digest: r for r in kept_releases.values() if r.build and r.build.digest}
    builds = {b.digest: b for b in Build.objects.filter(function=function).exclude(digest="")}
    doomed: dict[str, str] = {}
    for image in ecr.list_images(repository):
        digest = image.digest
        if digest in runs:
            report.kept_images[digest] = f"version {', '.join(runs[digest])} runs it"
        elif digest in release_images:
            report.kept_images[digest] = (f"the image of deployment #{release_images[digest].pk}, one of the last "
                                          f"{report.keep} releases (a rollback deploys it again)")
        elif digest not in builds:
            report.kept_images[digest] = "not pushed by Slipway for this function"
        elif cutoff is None:
            report.kept_images[digest] = f"fewer than {report.keep} releases so far"
        elif builds[digest].created_at >= cutoff:
            report.kept_images[digest] = "built after the oldest kept release"
        else:
            doomed[digest] = image.tag
    if not doomed:
        return
    if report.dry_run:
        report.deleted_images.update(doomed)
        return
    try:
        gone, refused = ecr.delete_images(repository, list(doomed))
    except DeployError as exc:
        report.errors.append(f"images: {exc}")
        return
    Build.objects.filter(function=function, digest__in=gone, image_gone_at__isnull=True).update(image_gone_at=Now())
    report.deleted_images.update({digest: doomed.get(digest, "") for digest in gone})
    for digest, why in refused.items():
        report.errors.append(f"image {digest}: {why}")
        report.kept_images[digest] = "its delete failed"


def _version_digest(function: Function, version: str) -> str | None:
    """The digest of the image `version` runs in the function's repository: "" when it runs
    another repository's image, None when it cannot be told (then nothing is deleted)."""
    uri = lambdas.version_image(function.lambda_name, version)
    digest = tag = ""
    if "@" in uri:
        location, digest = uri.rsplit("@", 1)
    elif ":" in uri.rsplit("/", 1)[-1]:
        location, tag = uri.rsplit(":", 1)
    else:
        location = uri
    if uri and location.split("/", 1)[-1] != function.ecr_repository:
        return ""
    if digest.startswith("sha256:"):
        return digest
    if tag:  # by tag (e.g. the bootstrap image Terraform created the function from): what it holds now
        held = ecr.find(function.ecr_repository, tag=tag)
        if held:
            return held.digest
    # Lambda did not say: the image Slipway recorded for the deployment that published it.
    recorded = (Deployment.objects.filter(function=function, version=version, build__isnull=False)
                .exclude(build__digest="").values_list("build__digest", flat=True).first())
    return recorded or None
