"""Gates: what holds a deploy or promotion before it touches a protected or frozen
environment's Lambda. Rollbacks pass every gate.

A held row waits in status FROZEN or AWAITING_APPROVAL (Deployment.GATED): neither
queued nor running, so it holds no lock, sends no heartbeat and blocks nothing.
Where a request is held:

- a promotion at its request (request_promotion), and when a worker claims it
  (queue.claim): it has its digest from the start, so it waits before its first step;
- a deploy in the transaction that enters its Lambda steps (queue.enter_lambda_steps),
  once it has built and pushed: an approval binds a digest, which a deploy has only
  then. It pins that digest and resumes at its update step (resume_at="update").
  A freeze found when a worker claims a fresh deploy holds it before it builds.

The gates are checked again whenever a held row is claimed and as it enters the
Lambda steps, so one that a freeze or a raised requirement caught meanwhile goes
back to waiting instead of failing. Once nothing holds it, reconsider() puts it
back in the queue in its request's place. The beat's gates_due() releases what a
freeze that ended held — the newest request per environment; older ones are
superseded — re-checks what awaits approval, and ends rows held longer than
SLIPWAY_GATE_MAX_WAIT cancelled `gate-expired`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from portal.core.errors import RequestRefused
from portal.deployments import approvals, events, freezes, queue
from portal.deployments.models import Deployment, FreezeWindow
from portal.deployments.promotion import deployment_digest
from portal.deployments.recording import finish
from portal.functions import Environment

Status, Kind = Deployment.Status, Deployment.Kind
FROZEN_CODE = "frozen"  # a request refused during a freeze (Environment.during_freeze = refuse)
EXPIRED = "gate-expired"


def describe(window: FreezeWindow) -> str:
    """A freeze window in words, for a refusal or a hold: its reason, where, and when."""
    where = "every environment" if window.environment_id is None else f"environment {window.environment.name}"
    if window.start_cron:
        when = f"from '{window.start_cron}' to '{window.end_cron}' ({window.timezone})"
    else:
        when = f"from {window.starts_at:%Y-%m-%d %H:%M} to {window.ends_at:%Y-%m-%d %H:%M} UTC"
    return f"freeze window #{window.pk} '{window.reason}' ({where}, {when})"


def hold_reason(deployment: Deployment, at: datetime | None = None) -> tuple[str, str] | None:
    """(status, why) for the gate holding `deployment` at `at` (default now); None: none does.
    A rollback is never held; an owner's override passes a freeze. Approvals bind a digest:
    a deploy that has not pushed yet has none to approve, and is asked again before its
    update step."""
    if deployment.kind in (Kind.ROLLBACK, Kind.PREVIEW):  # a preview is exempt from freezes and approvals
        return None
    at = at or timezone.now()
    environment = deployment.environment
    if not deployment.override_reason:
        window = freezes.active_freeze(environment, at)
        if window is not None:
            where = "every environment" if window.environment_id is None else environment.name
            return Status.FROZEN, f"frozen: {window.reason} ({where})"
    if not deployment_digest(deployment):
        return None
    need = approvals.required(deployment)
    if need and not approvals.satisfied(deployment, at):
        have = approvals.counting(deployment, at).count()
        return Status.AWAITING_APPROVAL, f"awaiting approval: {have} of {need} in {environment.name}"
    return None


def at_claim(deployment: Deployment) -> tuple[str, str] | None:
    """What holds a queued row a worker is claiming (queue.claim, under the lock order)."""
    return hold_reason(deployment)


def refuse_if_frozen(environment: Environment, what: str, at: datetime | None = None) -> None:
    """Raise RequestRefused `frozen` when a freeze holds `environment` and it refuses requests
    during a freeze (during_freeze = refuse). An environment that waits costs no query (the
    webhook receiver's budget): its requests are held later, where they wait."""
    if environment.during_freeze != Environment.DuringFreeze.REFUSE:
        return
    window = freezes.active_freeze(environment, at)
    if window is not None:
        raise RequestRefused(f"{environment.name} is frozen by {describe(window)}, and refuses {what} requests "
                             "during a freeze (Environment.during_freeze = refuse): request it again once the "
                             "window ends", code=FROZEN_CODE)


def at_request(environment: Environment, what: str) -> tuple[str, str] | None:
    """A new promotion into `environment` (read under its row lock): (status, why) when a
    gate holds it from the start, None when it is queued. A new row has no approval yet,
    nor an override. Raises RequestRefused `frozen` where a freeze refuses requests."""
    refuse_if_frozen(environment, what)
    window = freezes.active_freeze(environment)
    if window is not None:
        where = "every environment" if window.environment_id is None else environment.name
        return Status.FROZEN, f"frozen: {window.reason} ({where})"
    if environment.required_approvals:
        return (Status.AWAITING_APPROVAL,
                f"awaiting approval: 0 of {environment.required_approvals} in {environment.name}")
    return None


def passed_by(environment: Environment, at: datetime | None = None) -> list[str]:
    """The gates a rollback of `environment` passes by (for its audit entry): an active
    freeze, a required number of approvals, a soak. Empty: none would hold anything there."""
    passed = []
    window = freezes.active_freeze(environment, at)
    if window is not None:
        passed.append(describe(window))
    if environment.required_approvals:
        passed.append(f"{environment.required_approvals} approval(s) required")
    if environment.soak_seconds:
        passed.append(f"a soak of {environment.soak_seconds} s")
    return passed


def reconsider(pk: int) -> Deployment | None:
    """Re-check a held row under the lock order (function, environment, deployment) and, when
    no gate holds it any more, queue it again (sent if it may start now). Moves it between
    FROZEN and AWAITING_APPROVAL when the other gate now holds it. None: not held (ended,
    superseded, or released meanwhile); else the row as it is now."""
    with transaction.atomic():
        row = Deployment.objects.filter(pk=pk).values_list("environment_id", "function_id").first()
        if row is None:
            return None
        queue._lock(*row)
        deployment = (Deployment.objects.select_for_update(of=("self",))  # build is nullable: an outer join
                      .select_related("function", "environment", "build")
                      .filter(pk=pk, status__in=Deployment.GATED).first())
        if deployment is None:
            return None
        held = hold_reason(deployment)
        if held is not None:
            if held[0] != deployment.status:
                Deployment.objects.filter(pk=pk).update(status=held[0])
                deployment.status = held[0]
                events.status_changed.send(Deployment, deployment=deployment)
            return deployment
        # Older held requests of the environment would run after it and undo it: it replaces them.
        _supersede_older(deployment, f"{deployment.kind} #{pk}, a newer request, was released before it")
        return queue.release_held(deployment)


def _supersede_older(newest: Deployment, message: str) -> list[int]:
    """Supersede the held requests of `newest`'s environment made before it (under its lock)."""
    rows = Deployment.objects.filter(environment_id=newest.environment_id, status__in=Deployment.GATED,
                                     pk__lt=newest.pk)
    older = list(rows.order_by("pk").values_list("pk", flat=True))
    if older:
        events.superseding.send(Deployment, function=newest.function, queued=rows)
        rows.update(status=Status.SUPERSEDED, superseded_by=newest, finished_at=Now(), error_code="superseded",
                    error_message=message)
    return older


def expire(deployment: Deployment) -> bool:
    """End a row held longer than SLIPWAY_GATE_MAX_WAIT: cancelled `gate-expired`."""
    limit = timedelta(seconds=settings.SLIPWAY_GATE_MAX_WAIT)
    message = (f"held ({deployment.get_status_display().lower()}) since {deployment.gated_since:%Y-%m-%d %H:%M} "
               f"UTC, longer than SLIPWAY_GATE_MAX_WAIT ({_span(limit)}): request it again")
    finish(deployment, Status.CANCELLED, EXPIRED, message)
    return deployment.status == Status.CANCELLED


def _span(limit: timedelta) -> str:
    seconds = int(limit.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} s"


def release_thawed(environment_id: int, at: datetime | None = None) -> tuple[int | None, list[int]]:
    """The freeze holding `environment_id` ended: its newest held request goes on (queued,
    or awaiting approval if that gate holds it), the older held ones are superseded by it.
    Returns (the newest's pk or None, the superseded pks); nothing when a freeze still holds it."""
    with transaction.atomic():
        environment = queue._lock(environment_id)
        if freezes.active_freeze(environment, at) is not None:
            return None, []
        held = list(Deployment.objects.select_for_update().filter(environment_id=environment_id,
                                                                  status__in=Deployment.GATED).order_by("-pk"))
        if not held:
            return None, []
        newest = held[0]
        older = _supersede_older(newest, f"{newest.kind} #{newest.pk}, the newest request the freeze on "
                                         f"{environment.name} held, runs in its place")
    reconsider(newest.pk)
    return newest.pk, older


def gates_due(at: datetime | None = None) -> dict:
    """The beat's tick: end rows held longer than SLIPWAY_GATE_MAX_WAIT (`gate-expired`);
    release what freezes that ended held (the newest request per environment, the older
    superseded); re-check what awaits approval (approvals that expired, protection raised
    or approvals that arrived without a reconsider)."""
    at = at or timezone.now()
    cutoff = at - timedelta(seconds=settings.SLIPWAY_GATE_MAX_WAIT)
    expired = [row.pk for row in Deployment.objects.filter(status__in=Deployment.GATED, gated_since__lt=cutoff)
               .select_related("function", "environment").order_by("pk") if expire(row)]
    released, superseded = [], []
    frozen_in = (Deployment.objects.filter(status=Status.FROZEN).order_by("environment_id")
                 .values_list("environment_id", flat=True).distinct())
    for environment_id in list(frozen_in):
        newest, older = release_thawed(environment_id, at)
        superseded += older
        if newest is not None and Deployment.objects.filter(pk=newest, status=Status.QUEUED).exists():
            released.append(newest)
    for pk in list(Deployment.objects.filter(status=Status.AWAITING_APPROVAL).order_by("pk")
                   .values_list("pk", flat=True)):
        row = reconsider(pk)
        if row is not None and row.status == Status.QUEUED:
            released.append(pk)
    return {"expired": expired, "released": released, "superseded": superseded}
