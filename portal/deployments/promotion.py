"""Promotion: the digest verified in one environment, shipped unchanged to the next.

A push builds once and deploys to the first environment. Each later environment
gets a release only by promotion of a digest that went live in the environment
before it: the build and its digest are pinned on the row when the promotion is
requested, and the pipeline ships exactly that digest (plan.PROMOTION: check, the
Lambda steps, shift; no source, build or push).

A digest counts as verified upstream when a deployment made it live in the
previous environment, and no rollback there moved its alias off a version of that
digest since (`not-verified-upstream` otherwise).

Promotion rules per environment: manual (the Promote button, the API), or automatic
once the previous environment's deployment succeeded, after the environment's soak
time. A soaking promotion waits in status SOAKING until promote_at; the beat's
promote_due queues the due ones.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from portal.core.errors import RequestRefused
from portal.deployments import events, queue
from portal.deployments.models import Deployment
from portal.deployments.releases import went_live
from portal.functions import AuditEvent, Environment, Function

log = logging.getLogger(__name__)
Status, Kind, Trigger = Deployment.Status, Deployment.Kind, Deployment.Trigger
NOT_VERIFIED = "not-verified-upstream"
# What makes a release in an environment, and so may go on to the next one.
RELEASES = (Kind.DEPLOY, Kind.REDEPLOY, Kind.PROMOTION)


def previous_environment(environment: Environment) -> Environment | None:
    """The environment before `environment` in its function's promotion order; None for the first."""
    return (Environment.objects.in_order().filter(function_id=environment.function_id,
                                                  position__lt=environment.position)
            .order_by("-position").first())


def next_environment(environment: Environment) -> Environment | None:
    """The environment after `environment`; None for the last."""
    return (Environment.objects.in_order().filter(function_id=environment.function_id,
                                                  position__gt=environment.position)
            .order_by("position").first())


def deployment_digest(deployment: Deployment) -> str:
    """The image digest a deployment shipped: the one pinned on a promotion, else its build's."""
    return deployment.digest or (deployment.build.digest if deployment.build_id else "")


def rolled_back_from(environment: Environment, digest: str, since=None) -> Deployment | None:
    """The latest succeeded rollback in `environment` (after `since`, if given) that moved its
    alias off a version carrying `digest`."""
    versions = [d.version for d in went_live(environment).select_related("build")
                if deployment_digest(d) == digest]
    if not versions:
        return None
    rollbacks = Deployment.objects.filter(environment=environment, kind=Kind.ROLLBACK, status=Status.SUCCEEDED,
                                          previous_version__in=versions)
    if since is not None:
        rollbacks = rollbacks.filter(finished_at__gt=since)
    return rollbacks.order_by("-finished_at", "-pk").first()


def verified_upstream(previous: Environment, digest: str) -> Deployment | None:
    """The newest deployment that made `digest` live in `previous` and that no rollback there
    has undone since; None: the digest is not verified there."""
    for done in went_live(previous).select_related("build"):
        if deployment_digest(done) != digest:
            continue
        if rolled_back_from(previous, digest, since=done.finished_at) is None:
            return done
        return None
    return None


def choose_release(previous: Environment, release: str = "") -> Deployment:
    """What to promote out of `previous`: what is live there. `release` (a version number,
    a commit SHA prefix or a digest sha256:…) names what the requester expects to be live
    there; another release is refused, since the claim and the shift check that the
    previous environment's alias still serves the pinned digest (roll it back to an older
    release first to promote that one)."""
    where = f"{previous.function.name} ({previous.name})"
    live = went_live(previous).select_related("build").first()
    if live is None or not live.build_id:
        raise RequestRefused(f"nothing is live in {where} to promote", code=NOT_VERIFIED)
    if not release:
        return live
    if release.isdigit():
        matches = live.version == release
    elif release.startswith("sha256:"):
        matches = deployment_digest(live) == release
    elif re.fullmatch(r"[0-9a-f]{7,40}", release):
        matches = live.commit_sha.startswith(release)
    else:
        raise RequestRefused(f"{release!r} is neither a version number, a commit SHA nor a digest", status=400)
    if not matches:
        raise RequestRefused(f"{release!r} is not what {where} serves (version {live.version}, "
                             f"{live.commit_sha[:12]}, {deployment_digest(live)}): a promotion ships only what is "
                             f"live in {previous.name}", code=NOT_VERIFIED)
    return live


def request_promotion(function: Function, environment: str | Environment, *, trigger: str, user=None,
                      release: str = "", upstream: Deployment | None = None, soak: bool = False) -> Deployment:
    """Queue a promotion of what is live in the previous environment into `environment` (a
    name or the row). `release` names the release the requester expects live there
    (choose_release refuses another), or `upstream` names the deployment itself
    (automatic promotion). `soak`: wait the environment's soak time first (automatic
    promotion), superseding an older soak."""
    if function.is_archived:
        raise RequestRefused(f"{function.name} is archived: it accepts no promotions")
    if not isinstance(environment, Environment):
        environment = _named(function, environment)
    with transaction.atomic():  # the function row, then the environment's (queue.py's lock order)
        Function.objects.select_for_update().get(pk=function.pk)
        environment = Environment.objects.select_for_update().get(pk=environment.pk)
        previous = previous_environment(environment)
        if previous is None:
            raise RequestRefused(f"{environment.name} is where {function.name} deploys: deploy to it instead",
                                 status=400, code="deploy-instead")
        chosen = upstream or choose_release(previous, release)
        digest = deployment_digest(chosen)
        verified = verified_upstream(previous, digest) if digest else None
        if verified is None:
            raise RequestRefused(f"{digest or 'that release'} is not verified in {previous.name}: it never went "
                                 f"live there, or {previous.name} was rolled back from it", code=NOT_VERIFIED)
        if chosen.build and chosen.build.image_gone_at:
            raise RequestRefused(f"the image {digest} is gone from ECR: deploy its commit again")
        fields = dict(kind=Kind.PROMOTION, trigger=trigger, requested_by=user, ref=chosen.commit_sha,
                      commit_sha=chosen.commit_sha, commit_message=chosen.commit_message,
                      commit_author=chosen.commit_author, build=chosen.build, digest=digest, upstream=verified)
        # Held from the start when a gate holds it (a soak is asked again when its worker claims it);
        # a freeze refuses it outright where the environment says so. gates imports approvals,
        # which imports this module: imported here.
        from portal.deployments import gates

        held = gates.at_request(environment, "promotion")
        if soak and environment.soak_seconds:
            promote_at = timezone.now() + timedelta(seconds=environment.soak_seconds)
            promotion = queue.request(function, environment=environment, locked=True, status=Status.SOAKING,
                                      promote_at=promote_at, **fields)
        elif held is not None:
            promotion = queue.request(function, environment=environment, locked=True, status=held[0], **fields)
        else:
            promotion = queue.request(function, environment=environment, locked=True, **fields)
        who = {"actor": user, "actor_label": user.get_username() if user else trigger}
        AuditEvent.record("deployment.promotion_requested", function=function, deployment=promotion.pk,
                          environment=environment.name, source=previous.name, digest=digest,
                          commit=chosen.commit_sha, **({"held": held[1]} if held and not soak else {}), **who)
    return promotion


def _named(function: Function, name: str) -> Environment:
    found = function.environments.in_order().filter(name=name).first()
    if found is None:
        known = ", ".join(function.environments.in_order().values_list("name", flat=True))
        raise RequestRefused(f"{function.name} has no environment {name!r} (it has {known})", status=404,
                             code="environment-unknown")
    return found


def soaking(environment: Environment):
    """The promotions waiting out their soak into `environment`."""
    return Deployment.objects.filter(environment=environment, status=Status.SOAKING)


def cancel_soaks_from(previous: Environment, reason: str) -> int:
    """A failed deploy, a rollback or drift in `previous` cancels every promotion soaking
    out of it: what it would promote is no longer what `previous` vouches for."""
    rows = Deployment.objects.filter(Q(upstream__environment=previous), status=Status.SOAKING)
    cancelled = 0
    for row in rows:
        if row.finish(Status.CANCELLED, NOT_VERIFIED, reason):
            cancelled += 1
            events.status_changed.send(Deployment, deployment=row)
    return cancelled


def promote_due() -> list[int]:
    """The beat's tick: queue every soaking promotion whose soak ended, unless what it would
    promote is no longer verified upstream (then it is cancelled `not-verified-upstream`)."""
    released = []
    due = (Deployment.objects.filter(status=Status.SOAKING, promote_at__lte=timezone.now())
           .select_related("build", "environment", "upstream__environment").order_by("pk"))
    for row in due:
        previous = row.upstream.environment if row.upstream_id else previous_environment(row.environment)
        if previous is None or verified_upstream(previous, row.digest) is None:
            if row.finish(Status.CANCELLED, NOT_VERIFIED,
                          f"{row.digest} is no longer verified in {previous.name if previous else 'the previous'}"
                          " environment"):
                events.status_changed.send(Deployment, deployment=row)
            continue
        if queue.release_soak(row.pk) is not None:
            released.append(row.pk)
    return released


def after_finished(deployment: Deployment) -> None:
    """Called once a row settles (recording.finish, the sweeper): a release that succeeded
    is promoted automatically into the next environment when that one says so (after its
    soak); a failed release or a succeeded rollback cancels the soaks out of its
    environment. Never raises: the row is settled already, and the next request must go."""
    try:
        _after_finished(deployment)
    except Exception:  # the settle has happened; a promotion the user can request by hand is the lesser loss
        log.exception("what follows deployment %s (%s) could not be done", deployment.pk, deployment.status)


def _after_finished(deployment: Deployment) -> None:
    environment = deployment.environment
    if deployment.kind == Kind.ROLLBACK and deployment.status == Status.SUCCEEDED:
        cancel_soaks_from(environment, f"rollback #{deployment.pk} of {environment.name} moved its alias off what "
                                       "was to be promoted")
        return
    if deployment.kind not in RELEASES:
        return
    if deployment.status == Status.FAILED:
        cancel_soaks_from(environment, f"{deployment.kind} #{deployment.pk} failed in {environment.name} during the "
                                       "soak")
        return
    if deployment.status != Status.SUCCEEDED or not deployment.version:
        return
    following = next_environment(environment)
    if following is None or following.promotion != Environment.Promotion.AUTOMATIC:
        return
    function = deployment.function
    why = ""
    if following.paused_reason:
        why = f"{following.name} is paused: {following.paused_reason}"
    else:
        try:
            request_promotion(function, following, trigger=Trigger.PROMOTION, upstream=deployment, soak=True)
        except RequestRefused as refused:
            why = refused.message
    if why:
        AuditEvent.record("deployment.promotion_skipped", actor_label=Trigger.PROMOTION, function=function,
                          deployment=deployment.pk, environment=following.name, source=environment.name,
                          digest=deployment_digest(deployment), reason=why[:500])
