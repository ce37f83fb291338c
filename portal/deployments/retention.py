"""Retention that cannot break a rollback.

Per function: in each of its environments' Lambdas, delete the published
versions older than that environment's last N releases that no alias
references, then the ECR images that no remaining version of any environment
references (an image live or kept in any environment of any function on the
repository is never deleted). The order is the point: on AWS a version whose image is
deleted goes to `Failed`, so an image goes only once nothing that could be put
back runs it.

Kept, each with its reason in the report:

- a version an alias points at (main or weighted); the versions of the last N
  releases (deploys, redeploys, rollbacks), and anything newer than the oldest;
  in the preview environment only what an alias (mr-<iid>) points at: previews are no releases;
- versions Slipway did not publish (no deployment row names them), $LATEST;
- an image a remaining version (or $LATEST) runs, read from Lambda by digest;
  an image live in any environment of any function (by Slipway's record), and
  the digest a promotion that soaks, waits or runs has pinned, or a deploy a gate
  holds after its push (a soaking or held request never blocks a run: it has not
  touched the Lambda yet);
  the image of any of the last N releases even when its version is gone (a
  rollback to it deploys that image again); images Slipway did not push for
  this function; images built after the oldest kept release.

It works like a deployment: the rows of every function on the function's ECR
repository are locked first, in primary-key order (the queue's lock order), so
none of them requests, claims or dispatches a deployment while it decides. A
function with an unfinished deployment is skipped; while another function on the
repository has one, no image there is deleted (the next run tries again).

A repository may hold several functions' images (an owner may share it), and the
same build inputs give the same tag. So an image goes only when no function on
the repository needs it. It is marked (ImageDeletion) under those locks, the
marks are committed, then the images are deleted outside the locks and unmarked;
the source step never adopts a marked image (steps.py).

What it deletes is marked in the database (Deployment.version_gone,
Build.image_gone_at), so pages refuse those rollback targets without asking AWS.
Each run that deleted, would delete (dry run), was skipped, deferred or failed
leaves an AuditEvent with the report. Does I/O: Lambda and ECR, through deploy/.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import timedelta

from django.db import transaction
from django.db.models import Max, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from deploy import ecr, lambdas
from deploy.errors import DeployError
from portal.deployments.models import Build, Deployment, ImageDeletion
from portal.deployments.releases import went_live
from portal.functions import AuditEvent, Environment, Function

log = logging.getLogger(__name__)
RELEASE_KINDS = (Deployment.Kind.DEPLOY, Deployment.Kind.REDEPLOY, Deployment.Kind.ROLLBACK,
                 Deployment.Kind.PROMOTION)
# A promotion that soaks, waits or runs ships its pinned digest later, and so does a deploy a
# gate holds after its push: the image stays meanwhile.
PINNING = (Deployment.Status.SOAKING, Deployment.Status.QUEUED, *Deployment.GATED, *Deployment.RUNNING,
           *Deployment.ROLLOUT)
# Waiting for their time or a gate, not on the Lambda: they block no run (their digests are held).
NOT_BLOCKING = (*Deployment.TERMINAL, Deployment.Status.SOAKING, *Deployment.GATED)
# A batch delete takes seconds: a mark this old was left by a run that died before unmarking.
MARK_STALE = timedelta(minutes=30)


@dataclass
class Report:
    """What one function's run kept and why, and what it deleted (or would, in a dry run)."""

    function: str
    keep: int
    dry_run: bool
    skipped: str = ""
    deferred: str = ""  # why no image was deleted this time (the next run tries again)
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
        text += f"; images deferred: {self.deferred}" if self.deferred else ""
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


def on_repository(repository: str):
    """Every function whose images may be in `repository`: the ones registered with it, and
    the ones that pushed or adopted a build there (before they moved to another)."""
    return Function.objects.filter(
        Q(ecr_repository=repository) | Q(pk__in=Build.objects.filter(repository=repository).values("function_id")))


def marked(repository: str, digest: str) -> bool:
    """Is retention deleting this image? (A mark older than MARK_STALE counts for nothing.)"""
    return ImageDeletion.objects.filter(repository=repository, digest=digest,
                                        marked_at__gt=timezone.now() - MARK_STALE).exists()


def retain(function_id: int, *, keep: int, dry_run: bool) -> Report:
    repository = Function.objects.values_list("ecr_repository", flat=True).get(pk=function_id)
    doomed: dict[str, str] = {}
    marks: list[int] = []
    with transaction.atomic():
        # Every function on the repository, in primary-key order (the queue's order, one function
        # after another): none of them requests, claims or dispatches a deployment while this decides.
        locked = list(on_repository(repository).select_for_update().order_by("pk"))
        function = next((f for f in locked if f.pk == function_id), None)
        if function is None:  # it moved to another repository before the lock: skipped below
            function = Function.objects.get(pk=function_id)
        report = Report(function.name, keep, dry_run)
        # A soaking promotion waits for its time, a held request for its gate, not on the Lambda: they
        # block nothing (their digests are held).
        unfinished = list(Deployment.objects.filter(function__in=locked).exclude(status__in=NOT_BLOCKING)
                          .order_by("pk").values("pk", "kind", "status", "function_id"))
        own = next((d for d in unfinished if d["function_id"] == function.pk), None)
        noteworthy = own is not None or function.ecr_repository != repository
        if function.ecr_repository != repository:
            report.skipped = "its ECR repository changed meanwhile: the next run tries again"
        elif own is not None:
            report.skipped = (f"deployment #{own['pk']} ({own['kind']}) is {own['status']}: "
                              "nothing is deleted while a deployment waits or runs")
        else:
            names = {f.pk: f.name for f in locked}
            if unfinished:
                busy = unfinished[0]
                report.deferred = (f"deployment #{busy['pk']} ({busy['kind']}) of {names[busy['function_id']]} is "
                                   f"{busy['status']}: no image in {repository} is deleted while a function on it "
                                   "has a deployment waiting or running")
            try:
                doomed = _apply(function, report, [f for f in locked if f.pk != function.pk])
            except DeployError as exc:  # a listing failed: nothing more is decided without it
                report.errors.append(str(exc))
                doomed = {}
            if doomed and not dry_run:
                marks = _mark(repository, doomed)
    try:
        if marks:  # committed: the source step of any function on the repository now leaves these alone
            _delete(repository, doomed, report)
    finally:
        ImageDeletion.objects.filter(pk__in=marks).delete()
    if noteworthy or report.deferred or report.changed or report.errors:  # a never-deployed function: no news
        action = "retention.skipped" if report.skipped else (
            "retention.dry_run" if dry_run else "retention.applied")
        AuditEvent.record(action, actor_label="retention", function=function, **report.as_dict())
    log.info("retention %s", report.summary())
    return report


def _mark(repository: str, doomed: dict[str, str]) -> list[int]:
    ImageDeletion.objects.filter(repository=repository, digest__in=list(doomed)).delete()  # stale ones
    created = ImageDeletion.objects.bulk_create(
        [ImageDeletion(repository=repository, digest=digest) for digest in doomed])
    if any(mark.pk is None for mark in created):  # backends that return no ids from a bulk insert
        return list(ImageDeletion.objects.filter(repository=repository, digest__in=list(doomed))
                    .values_list("pk", flat=True))
    return [mark.pk for mark in created]


def _delete(repository: str, doomed: dict[str, str], report: Report) -> None:
    """Outside the locks: delete the marked images by digest, and mark every build of them gone."""
    try:
        gone, refused = ecr.delete_images(repository, list(doomed))
    except DeployError as exc:
        report.errors.append(f"images: {exc}")
        for digest in doomed:
            report.kept_images[digest] = "its delete failed"
        return
    Build.objects.filter(repository=repository, digest__in=gone, image_gone_at__isnull=True).update(
        image_gone_at=Now())
    report.deleted_images.update({digest: doomed.get(digest, "") for digest in gone})
    for digest, why in refused.items():
        report.errors.append(f"image {digest}: {why}")
        report.kept_images[digest] = "its delete failed"


def _releases(environment: Environment, keep: int) -> tuple[dict[str, Deployment], object]:
    """The environment's last `keep` releases by version (newest first; a version rolled back
    to counts once, at its latest), and the time of the oldest of them once there are `keep`.
    The preview environment has no releases and keeps nothing for being recent: its versions
    (previews') are unkept, deleted once no alias (mr-<iid>) points at them."""
    if environment.preview:
        return {}, timezone.now()
    releases = (went_live(environment).filter(kind__in=RELEASE_KINDS)
                .annotate(at=Coalesce("finished_at", "created_at")).order_by("-at", "-pk").select_related("build"))
    kept: dict[str, Deployment] = {}
    for release in releases:
        if len(kept) == keep:
            break
        kept.setdefault(release.version, release)
    # Anything Slipway published after the oldest kept release became live stays too.
    cutoff = min(r.at for r in kept.values()) if len(kept) == keep else None
    return kept, cutoff


def _all_releases(environments: list[Environment], keep: int) -> tuple[list[Deployment], object]:
    """The kept releases of every environment, and the cutoff for images: the oldest of
    theirs, or None while any environment has fewer than `keep` (an image is needed by
    any environment that may still put it back)."""
    kept, cutoffs = [], []
    for environment in environments:
        releases, cutoff = _releases(environment, keep)
        kept += releases.values()
        cutoffs.append(cutoff)
    return kept, (None if None in cutoffs or not cutoffs else min(cutoffs))


def _apply(function: Function, report: Report, others: list[Function]) -> dict[str, str]:
    """Delete the versions the rule lets go in each environment's Lambda; return the images
    to delete ({digest: tag}). With several environments, a version is named with its
    environment in the report (env:version)."""
    environments = list(function.environments.all())
    deployed = [env for env in environments if lambdas.get_configuration(env.lambda_name) is not None]
    if not deployed:
        report.skipped = f"the Lambda {environments[0].lambda_name} does not exist (never deployed)"
        return {}
    for environment in deployed:
        _apply_versions(environment, report, "" if len(environments) == 1 else f"{environment.name}:")
    return _images(function, deployed, report, others)


def _apply_versions(environment: Environment, report: Report, label: str) -> None:
    """Delete the versions of the environment's Lambda that the rule lets go."""
    name = environment.lambda_name
    deployments = Deployment.objects.filter(environment=environment).exclude(version="")
    kept_releases, cutoff = _releases(environment, report.keep)
    published = dict(deployments.order_by().values_list("version").annotate(
        at=Max(Coalesce("finished_at", "created_at"))))  # version -> when Slipway last published or released it

    on_lambda = [v["Version"] for v in lambdas.list_versions(name) if v["Version"].isdigit()]
    held = {v: f"one of the last {report.keep} releases (deployment #{r.pk})" for v, r in kept_releases.items()}
    aliased = lambdas.aliased_versions(lambdas.list_aliases(name))
    held.update((v, f"alias {', '.join(sorted(names))} points at it") for v, names in aliased.items())
    kept: dict[str, str] = {}
    doomed = _sort_out(on_lambda, report, kept, held, published, cutoff,
                       not_ours="not published by Slipway", newer="newer than the oldest kept release")
    report.kept_versions.update((label + version, why) for version, why in kept.items())
    # A version the database still offers but Lambda no longer holds: mark it, as check_release would.
    missing = set(published) - set(on_lambda)
    if missing and not report.dry_run:
        deployments.filter(version__in=missing, version_gone=False).update(version_gone=True)

    for version in doomed:  # versions first: nothing that could be put back may lose its image
        if report.dry_run:
            report.deleted_versions.append(label + version)
            continue
        try:
            lambdas.delete_version(name, version)
        except DeployError as exc:
            report.errors.append(f"version {label}{version}: {exc}")
            report.kept_versions[label + version] = "its delete failed"
            continue
        Deployment.objects.filter(environment=environment, version=version).update(version_gone=True)
        report.deleted_versions.append(label + version)


def _images(function: Function, environments: list[Environment], report: Report,
            others: list[Function]) -> dict[str, str]:
    """The images no remaining version of any of its environments runs and no other
    function on the repository needs."""
    repository = function.ecr_repository
    kept_releases, cutoff = _all_releases(list(function.environments.all()), report.keep)
    runs: dict[str, list[str]] = {}
    for environment in environments:
        label = "" if len(environments) == 1 else f"{environment.name}:"
        remaining = [v["Version"] for v in lambdas.list_versions(environment.lambda_name)]
        if report.dry_run:
            remaining = [v for v in remaining if label + v not in report.deleted_versions]
        for version in remaining:
            digest = _version_digest(environment, version, repository)
            if digest is None:
                report.kept_images["*"] = (f"the image of version {label}{version} could not be told: "
                                           "no image is deleted")
                return {}
            if digest:
                runs.setdefault(digest, []).append(label + version)
    held = {_digest(r): f"the image of deployment #{r.pk}, one of the last {report.keep} releases (a rollback "
            "deploys it again)" for r in kept_releases if _digest(r)}
    held.update((digest, f"version {', '.join(versions)} runs it") for digest, versions in runs.items())
    built = dict(Build.objects.filter(function=function, repository=repository).exclude(digest="")
                 .values_list("digest", "created_at"))
    tags = {image.digest: image.tag for image in ecr.list_images(repository)}
    let_go = _sort_out(list(tags), report, report.kept_images, held, built, cutoff,
                       not_ours="not pushed by Slipway for this function", newer="built after the oldest kept release")
    doomed = {digest: tags[digest] for digest in let_go}
    if doomed and report.deferred:
        for digest in doomed:
            report.kept_images[digest] = "deferred: " + report.deferred
        return {}
    doomed = _not_needed_elsewhere(repository, doomed, report, others)
    if doomed:  # the last word: whatever the repository or function, what is live or pinned stays
        anywhere = held_anywhere()
        for digest in [d for d in doomed if d in anywhere]:
            report.kept_images[digest] = anywhere[digest]
            doomed.pop(digest)
    if report.dry_run:
        report.deleted_images.update(doomed)
        return {}
    return doomed


def _sort_out(keys: list[str], report: Report, kept: dict[str, str], held: dict[str, str], made: dict, cutoff,
              *, not_ours: str, newer: str) -> list[str]:
    """The rule, for versions and images alike: note in `kept` why each key stays; return the others. `held`:
    kept whatever its age, with why ("in use" written over "a kept release's"); `made`: when Slipway made it."""
    doomed = []
    for key in keys:
        if key in held:
            kept[key] = held[key]
        elif key not in made:
            kept[key] = not_ours
        elif cutoff is None:
            kept[key] = f"fewer than {report.keep} releases so far"
        elif made[key] >= cutoff:
            kept[key] = newer
        else:
            doomed.append(key)
    return doomed


def _not_needed_elsewhere(repository: str, doomed: dict[str, str], report: Report,
                          others: list[Function]) -> dict[str, str]:
    """`doomed` without what another function on the repository needs, or another run is deleting."""
    if not doomed:
        return doomed
    ImageDeletion.objects.filter(repository=repository, marked_at__lte=timezone.now() - MARK_STALE).delete()
    for digest in ImageDeletion.objects.filter(repository=repository, digest__in=list(doomed)).values_list(
            "digest", flat=True):
        report.kept_images[digest] = "another retention run is deleting it"
        doomed.pop(digest)
    for other in others:
        if not doomed:
            break
        needs = _needs(other, repository, report.keep)
        if needs is None:
            for digest in doomed:
                report.kept_images[digest] = (f"what {other.name}, which uses {repository} too, runs could not be "
                                              "told: none of its images is deleted")
            return {}
        for digest in [d for d in doomed if d in needs]:
            report.kept_images[digest] = f"{other.name} needs it: {needs[digest]}"
            doomed.pop(digest)
    return doomed


def _needs(function: Function, repository: str, keep: int) -> dict[str, str] | None:
    """The images of `repository` the function's own rule keeps ({digest: why}): what its
    versions run, its last `keep` releases, what it built after the oldest of them (or
    everything while it has fewer). None when what a version runs cannot be told."""
    needs: dict[str, str] = {}
    environments = list(function.environments.all())
    for environment in environments:
        if lambdas.get_configuration(environment.lambda_name) is None:
            continue
        label = "" if len(environments) == 1 else f"{environment.name}:"
        versions = [v["Version"] for v in lambdas.list_versions(environment.lambda_name)]
        for version in sorted(versions, key=lambda v: v == "$LATEST"):  # a published version is the better why
            digest = _version_digest(environment, version, repository)
            if digest is None:
                return None
            if digest:
                needs.setdefault(digest, f"its version {label}{version} runs it")
    kept, cutoff = _all_releases(environments, keep)
    for release in kept:
        if _digest(release):
            needs.setdefault(_digest(release), f"the image of its deployment #{release.pk}, one of its last "
                                               f"{keep} releases")
    for digest, created in (Build.objects.filter(function=function, repository=repository).exclude(digest="")
                            .values_list("digest", "created_at")):
        if cutoff is None:
            needs.setdefault(digest, f"it has fewer than {keep} releases so far")
        elif created >= cutoff:
            needs.setdefault(digest, "it built it after its oldest kept release")
    return needs


def _version_digest(environment: Environment, version: str, repository: str) -> str | None:
    """The digest of the image `version` of the environment's Lambda runs in `repository`:
    "" when it runs another repository's image, None when it cannot be told (then nothing
    is deleted)."""
    uri = lambdas.version_image(environment.lambda_name, version)
    digest = tag = ""
    if "@" in uri:
        location, digest = uri.rsplit("@", 1)
    elif ":" in uri.rsplit("/", 1)[-1]:
        location, tag = uri.rsplit(":", 1)
    else:
        location = uri
    if uri and location.split("/", 1)[-1] != repository:
        return ""
    if digest.startswith("sha256:"):
        return digest
    if tag:  # by tag (e.g. the bootstrap image Terraform created the function from): what it holds now
        held = ecr.find(repository, tag=tag)
        if held:
            return held.digest
    # Lambda did not say: the image Slipway recorded for the deployment that published it.
    recorded = (Deployment.objects.filter(environment=environment, version=version, build__isnull=False)
                .exclude(build__digest="").values_list("digest", "build__digest").first())
    return (recorded[0] or recorded[1]) if recorded else None


def _digest(deployment: Deployment) -> str:
    """The image a deployment shipped: a promotion's pinned digest, else its build's."""
    return deployment.digest or (deployment.build.digest if deployment.build_id else "")


def held_anywhere() -> dict[str, str]:
    """Digests kept whatever the repository or function ({digest: why}): what is live in any
    environment of any function (by Slipway's record), and what a promotion that soaks,
    waits or runs has pinned. Digests are of the content, so keeping one by its digest
    alone never deletes what another needs."""
    held: dict[str, str] = {}
    live = Environment.objects.annotate(live=Subquery(went_live(OuterRef("pk")).values("pk")[:1])).exclude(
        live=None).values_list("live", flat=True)
    for deployment in Deployment.objects.filter(pk__in=list(live)).select_related("function", "environment", "build"):
        if _digest(deployment):
            held.setdefault(_digest(deployment), f"live in {deployment.function.name} ({deployment.environment.name}),"
                                                 f" deployment #{deployment.pk}")
    for pk, kind, digest, name, environment in (Deployment.objects.filter(status__in=PINNING).exclude(digest="")
                                                .values_list("pk", "kind", "digest", "function__name",
                                                             "environment__name")):
        held.setdefault(digest, f"{kind} #{pk} into {name} ({environment}) ships it")
    return held
