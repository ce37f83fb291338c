"""A canary or linear rollout: the alias weighted between the stable version and the new one,
advanced by short ticks of the beat (never one long task), watched by health signals.

The deployment's status says where it is: ROLLING_OUT between ticks, ABORTING once an abort
is decided (slipway.rollout_abort puts the alias back on the stable version, routing cleared),
then FAILED `canary-aborted` or SUCCEEDED. The Rollout row holds the plan's position; every
change is a RolloutEvent. Manual control (pause, resume, promote now, abort) only writes rows:
the next tick (or the abort task) does the AWS calls, in a pool process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from deploy import lambdas, testing
from deploy.errors import DeployError, UserError
from portal.celery import ROLLOUT_ABORT_TASK
from portal.core import sending
from portal.deployments import events, health, queue, routing
from portal.deployments.models import Deployment, Rollout, RolloutEvent
from portal.deployments.recording import StepLog, finish
from portal.functions import AuditEvent, Environment

log = logging.getLogger(__name__)
Status = Deployment.Status
Action = RolloutEvent.Action
# How long one tick (or one abort) may hold a rollout: a step's probes included.
LEASE = timedelta(seconds=120)
# The sweeper acts on a rollout whose tick is this many ticks overdue.
OVERDUE_TICKS = 3


def current(environment: Environment) -> Rollout | None:
    """The environment's rollout that holds its alias now (rolling out or aborting)."""
    return (Rollout.objects.select_related("deployment")
            .filter(deployment__environment=environment, deployment__status__in=Deployment.ROLLOUT)
            .order_by("-pk").first())


def record(rollout: Rollout, action: str, note: str = "", weight: float | None = None) -> RolloutEvent:
    return RolloutEvent.objects.create(rollout=rollout, action=action, note=note[:500],
                                       weight=rollout.weight if weight is None else weight)


def _audit(deployment: Deployment, action: str, user, **detail) -> None:
    AuditEvent.record(f"deployment.rollout_{action}", actor=user, actor_label="" if user else "system",
                      function=deployment.function, deployment=deployment.pk,
                      environment=deployment.environment.name, **detail)


def _running(deployment: Deployment) -> Rollout:
    """The deployment's rollout, locked, while it is rolling out; else `rollout-not-running`."""
    rollout = (Rollout.objects.select_for_update().filter(deployment=deployment,
                                                          deployment__status=Status.ROLLING_OUT).first())
    if rollout is None:
        deployment.refresh_from_db(fields=["status"])
        raise UserError("rollout-not-running", f"deployment #{deployment.pk} is {deployment.status}, not rolling "
                        "out: nothing to pause, resume, promote or abort", status=409)
    return rollout


def _control(deployment: Deployment, user, action: str, audited: str, said: str,
             change: Callable[[Rollout], dict | None]) -> Deployment:
    """One manual control under the rollout's row lock: `change` gives the fields to write,
    or None when the rollout already is so (then nothing is written, recorded or audited)."""
    with transaction.atomic():
        rollout = _running(deployment)
        fields = change(rollout)
        if fields is not None:
            Rollout.objects.filter(pk=rollout.pk).update(**fields)
            record(rollout, action, f"{said} by {user.get_username() if user else 'system'}")
            _audit(deployment, audited, user, weight=rollout.weight)
    deployment.refresh_from_db()
    return deployment


def pause(deployment: Deployment, user) -> Deployment:
    """Hold the weight where it is: the tick still watches the signals, and aborts once it was
    paused longer than SLIPWAY_ROLLOUT_PAUSE_MAX."""
    return _control(deployment, user, Action.PAUSE, "paused", "paused",
                    lambda rollout: {"paused_at": Now()} if rollout.paused_at is None else None)


def resume(deployment: Deployment, user) -> Deployment:
    """Go on from where it was paused: the step keeps the time it had left."""
    def change(rollout: Rollout) -> dict | None:
        if rollout.paused_at is None:
            return None
        now = timezone.now()
        started = rollout.step_started_at or now
        return {"paused_at": None, "next_tick_at": now, "step_started_at": started + (now - rollout.paused_at)}

    return _control(deployment, user, Action.RESUME, "resumed", "resumed", change)


def promote_now(deployment: Deployment, user) -> Deployment:
    """Skip the remaining steps: the next tick (due now) moves the alias to the new version."""
    return _control(deployment, user, Action.PROMOTE, "promoted", "promoted now",
                    lambda rollout: None if rollout.promote_now else {
                        "promote_now": True, "paused_at": None, "next_tick_at": Now()})


def request_abort(deployment: Deployment, signal: str, reason: str, *, user=None) -> bool:
    """ROLLING_OUT -> ABORTING in one conditional UPDATE, the signal recorded, and
    slipway.rollout_abort sent after commit. False: it was not rolling out (any more)."""
    return _decide_abort(deployment, signal, reason, user=user, allowed=(Status.ROLLING_OUT,))


def _decide_abort(deployment: Deployment, signal: str, reason: str, *, user=None, allowed, condition=Q(),
                  send: bool = True) -> bool:
    """Move the row from `allowed` (and `condition`) to ABORTING with the signal recorded; the
    abort is due now (the sweeper performs it once it is OVERDUE_TICKS late)."""
    with transaction.atomic():
        if not Deployment.objects.filter(condition, pk=deployment.pk, status__in=allowed).update(
                status=Status.ABORTING):
            return False
        rollout = Rollout.objects.get(deployment_id=deployment.pk)
        Rollout.objects.filter(pk=rollout.pk).update(abort_signal=signal[:300], abort_reason=reason,
                                                     tick_task_id="", tick_lease_until=None, next_tick_at=Now())
        record(rollout, Action.ABORT, f"{signal}: {reason}")
        deployment.refresh_from_db()
        events.status_changed.send(Deployment, deployment=deployment)
        _audit(deployment, "aborted", user, signal=signal[:300], reason=reason[:500])
        if send:
            pk = deployment.pk
            transaction.on_commit(lambda: send_abort(pk))
    return True


def send_abort(pk: int) -> None:
    """Send the abort task; a broker that is down leaves the row aborting for the sweeper."""
    try:
        sending.send_task(ROLLOUT_ABORT_TASK, args=[pk], deployment=pk)
    except Exception:  # QueueDown and the broker's errors: the sweeper performs aborts left behind
        pass


# --- The plan on the alias ------------------------------------------------------------------


def steps_of(rollout: Rollout) -> list[routing.Step]:
    return routing.plan(rollout.strategy, rollout.percent, rollout.minutes, minute_s=settings.SLIPWAY_ROLLOUT_MINUTE)


def shape(rollout: Rollout, weight: float) -> tuple[str, dict[str, float]]:
    """The alias (primary, weights) at the new version's share `weight`."""
    if weight >= 1:
        return rollout.new_version, {}
    return rollout.stable_version, {rollout.new_version: weight}


def _seen(found: dict | None) -> tuple[str, dict[str, float]]:
    weights = {version: round(float(weight), 6) for version, weight in lambdas.routing(found).items()}
    return (found or {}).get("FunctionVersion", ""), weights


def _same(seen: tuple, wanted: tuple) -> bool:
    return seen[0] == wanted[0] and seen[1] == {v: round(w, 6) for v, w in wanted[1].items()}


def _write(rollout: Rollout, weight: float, revision: str) -> None:
    """One UpdateAlias to `weight`, validated first (the local plane would take anything)."""
    primary, weights = shape(rollout, weight)
    if weights:
        routing.validate_routing(primary, weights)
    environment = rollout.deployment.environment
    lambdas.write_alias(environment.lambda_name, environment.alias, primary, weights, revision=revision)


def _next_tick() -> datetime:
    return timezone.now() + timedelta(seconds=settings.SLIPWAY_ROLLOUT_TICK)


# --- Start: at the shift step, in place of the plain alias move -----------------------------


def _unweighable(name: str, stable: str, new: str) -> str:
    """Why the two versions cannot share a weighted alias (Lambda requires the same execution
    role and dead-letter configuration), "" when they can."""
    before, after = lambdas.get_configuration(name, stable) or {}, lambdas.get_configuration(name, new) or {}
    if before.get("Role") != after.get("Role"):
        return f"the execution role changed ({before.get('Role')} -> {after.get('Role')})"
    dead = [(config.get("DeadLetterConfig") or {}).get("TargetArn", "") for config in (before, after)]
    if dead[0] != dead[1]:
        return f"the dead-letter configuration changed ({dead[0] or 'none'} -> {dead[1] or 'none'})"
    return ""


def start(deployment: Deployment, out: StepLog) -> bool:
    """Begin a canary or linear rollout of the deployment's verified version, in its shift
    step. False: the alias moves all at once (the strategy says so, or no weighted alias is
    possible: said on the step's log, and as a FALLBACK event when the versions differ in
    role or dead-letter configuration). True: the first weight is on the alias and the row
    is ROLLING_OUT; the beat's ticks take it on."""
    environment = deployment.environment
    strategy = environment.rollout_strategy
    if strategy not in (routing.CANARY, routing.LINEAR) or environment.preview or deployment.kind in (
            Deployment.Kind.ROLLBACK, Deployment.Kind.PREVIEW):  # a preview's mr-<iid> alias has no stable version
        return False
    name, alias, new = environment.lambda_name, environment.alias, deployment.version
    found = lambdas.get_alias(name, alias)
    stable = (found or {}).get("FunctionVersion", "")
    why = ""
    if found is None:
        why = f"the alias {alias} does not exist yet"
    elif not stable.isdigit():
        why = f"{alias} points at {stable}, not a published version"
    elif stable == new:
        why = f"{alias} already serves version {new}"
    elif lambdas.routing(found):
        why = f"{alias} already carries weights {lambdas.routing(found)}"
    if why:
        out(f"no {strategy} rollout: {why}; the alias moves all at once")
        return False
    rollout = Rollout.objects.create(deployment=deployment, strategy=strategy, percent=environment.rollout_percent,
                                     minutes=environment.rollout_minutes, stable_version=stable, new_version=new)
    changed = _unweighable(name, stable, new)
    if changed:
        Rollout.objects.filter(pk=rollout.pk).update(weight=1.0, ended_at=Now())
        record(rollout, Action.FALLBACK, f"{changed}: Lambda cannot weight the two versions; all at once", 1.0)
        out(f"no {strategy} rollout: {changed}, and Lambda weights only versions that share them; "
            "the alias moves all at once")
        return False
    try:
        health.prepare(rollout)  # a missing alarm: the rollout does not start (the step fails)
        first = steps_of(rollout)[0]
        _write(rollout, first.weight, found.get("RevisionId", ""))
    except BaseException:
        Rollout.objects.filter(pk=rollout.pk).update(ended_at=Now())  # its alarms: the sweeper deletes them
        raise
    with transaction.atomic():
        moved = Deployment.objects.filter(Deployment.NOT_STOPPED, pk=deployment.pk, status=Status.SHIFTING).update(
            status=Status.ROLLING_OUT, previous_version=stable)
        if moved:
            # Due at once: the next beat checks its alarms, whatever its phase against this moment
            # (a tick later could be up to a tick and a half later: bench/rollout_abort.py).
            Rollout.objects.filter(pk=rollout.pk).update(weight=first.weight, step=0, step_started_at=Now(),
                                                         next_tick_at=Now())
            rollout.weight = first.weight
            record(rollout, Action.START, f"{strategy} {environment.rollout_percent} % / "
                   f"{environment.rollout_minutes} min: {stable} -> {new}", 0.0)
            record(rollout, Action.SHIFT, f"{first.weight:.0%} on version {new}")
            deployment.refresh_from_db()
            events.status_changed.send(Deployment, deployment=deployment)
    if not moved:  # a rollback superseded it meanwhile (it waits for this step): leave it the stable version
        lambdas.point_alias(name, alias, stable)
        Rollout.objects.filter(pk=rollout.pk).update(weight=0.0, ended_at=Now())
        out(f"a stop was asked for: {alias} put back on version {stable}")
        return False
    out(f"{alias}: {stable} with {first.weight:.0%} on {new} ({strategy}, "
        f"{len(steps_of(rollout))} steps of {environment.rollout_minutes} min); the beat's ticks take it on")
    return True


# --- The tick -------------------------------------------------------------------------------


def _take(rollout: Rollout, holder: str, statuses) -> bool:
    """Hold the rollout for this tick or abort (a conditional UPDATE), for at most LEASE."""
    now = timezone.now()
    free = Q(tick_lease_until__isnull=True) | Q(tick_lease_until__lt=now) | Q(tick_task_id=holder)
    return bool(Rollout.objects.filter(free, pk=rollout.pk, deployment__status__in=statuses).update(
        tick_task_id=holder, tick_lease_until=now + LEASE))


def _release(rollout: Rollout, holder: str, **fields) -> None:
    Rollout.objects.filter(pk=rollout.pk, tick_task_id=holder).update(tick_task_id="", tick_lease_until=None,
                                                                      **fields)


def _still_held(rollout: Rollout, holder: str) -> bool:
    """Still this tick's, still rolling out, no rollback superseding it: the last check before a write."""
    return Rollout.objects.filter(pk=rollout.pk, tick_task_id=holder, deployment__status=Status.ROLLING_OUT,
                                  deployment__superseded_by__isnull=True).exists()


def tick(holder: str) -> dict[int, str]:
    """Beat: advance every rolling-out rollout that is due, with ONE batched alarm check for
    them all. Returns rollout pk -> what happened."""
    now = timezone.now()
    free = Q(tick_lease_until__isnull=True) | Q(tick_lease_until__lt=now)
    # Half a tick early counts as due: the last tick set next_tick_at a tick after it released the
    # rollout, a few ms after its beat fired, so this beat would find it not quite due and every
    # other beat (alarm checks every 2 ticks: an abort up to 2 ticks late) would be skipped.
    due_by = now + timedelta(seconds=settings.SLIPWAY_ROLLOUT_TICK / 2)
    due = list(Rollout.objects.filter(free, deployment__status=Status.ROLLING_OUT, next_tick_at__lte=due_by)
               .select_related("deployment__environment", "deployment__function").order_by("next_tick_at"))
    if not due:
        return {}
    try:
        failures = health.alarm_failures(due)
    except DeployError as exc:  # CloudWatch unreadable: this tick goes on without alarms, the next asks again
        log.warning("alarm check of %d rollout(s) failed: %s", len(due), exc)
        failures = {}
    outcomes = {}
    for rollout in due:
        try:
            outcomes[rollout.pk] = advance(rollout, holder, failures.get(rollout.pk, ""))
        except Exception as exc:  # AWS trouble: the weight stays, the next tick tries again
            log.warning("tick of rollout %s failed: %s", rollout.pk, exc)
            _release(rollout, holder, next_tick_at=_next_tick())
            outcomes[rollout.pk] = f"error: {exc}"
    return outcomes


def advance(rollout: Rollout, holder: str, alarm: str = "") -> str:
    """One tick of one rollout: take it, compare the alias with the row, then abort, wait,
    adopt, or probe and write the next weight."""
    if not _take(rollout, holder, (Status.ROLLING_OUT,)):
        return "held elsewhere"
    rollout.refresh_from_db()
    deployment = Deployment.objects.select_related("environment", "function").get(pk=rollout.deployment_id)
    rollout.deployment = deployment
    try:
        return _advance(rollout, deployment, holder, alarm)
    finally:
        _release(rollout, holder)


def _advance(rollout: Rollout, deployment: Deployment, holder: str, alarm: str) -> str:
    if deployment.superseded_by_id:
        return _superseded(rollout, deployment, holder)
    if alarm:
        request_abort(deployment, alarm, f"{alarm.removeprefix('alarm:')} went into ALARM")
        return "aborted: alarm"
    now = timezone.now()
    pause_max = timedelta(seconds=settings.SLIPWAY_ROLLOUT_PAUSE_MAX)
    if rollout.paused_at and now - rollout.paused_at > pause_max:
        request_abort(deployment, "paused", f"paused longer than {settings.SLIPWAY_ROLLOUT_PAUSE_MAX} s")
        return "aborted: paused too long"
    environment = deployment.environment
    found = lambdas.get_alias(environment.lambda_name, environment.alias)
    steps = steps_of(rollout)
    seen, expected = _seen(found), shape(rollout, rollout.weight)
    if not _same(seen, expected):
        following = rollout.step + 1
        if following < len(steps) and _same(seen, shape(rollout, steps[following].weight)):
            return _adopt(rollout, deployment, holder, following, steps)
        request_abort(deployment, "drift", f"{environment.alias} shows {seen[0]} with {seen[1] or 'no weights'}, "
                      f"not {expected[0]} with {expected[1] or 'no weights'}: changed outside this rollout")
        return "aborted: drift"
    final = len(steps) - 1
    if rollout.paused_at:
        _release(rollout, holder, next_tick_at=_next_tick())
        return "paused"
    if rollout.promote_now:
        target = final
    else:
        target = min(rollout.step + 1, final)
        lasts = timedelta(seconds=steps[target].at_s - steps[rollout.step].at_s)
        if rollout.step_started_at and now < rollout.step_started_at + lasts:
            _release(rollout, holder, next_tick_at=_next_tick())
            return "waiting"
        failed = health.probe(rollout)
        if failed:
            request_abort(deployment, "probe", failed)
            return "aborted: probe"
    testing.pause("before-rollout-update-alias", deployment.function.name)
    if not _still_held(rollout, holder):
        return "stopped"
    try:
        _write(rollout, steps[target].weight, (found or {}).get("RevisionId", ""))
    except DeployError as exc:
        if exc.code != "revision-mismatch":
            raise
        _release(rollout, holder, next_tick_at=Now())  # moved meanwhile: the next tick reads it again
        return "conflict"
    testing.pause("after-rollout-update-alias", deployment.function.name)
    if target == final:
        complete(rollout, deployment, "promoted now" if rollout.promote_now else "the last step")
        return "done"
    _moved(rollout, holder, target, steps[target].weight, Action.SHIFT, f"{steps[target].weight:.0%} on version "
           f"{rollout.new_version}")
    return "shift"


def _moved(rollout: Rollout, holder: str, step: int, weight: float, action: str, note: str) -> None:
    with transaction.atomic():
        if Rollout.objects.filter(pk=rollout.pk, tick_task_id=holder).update(
                weight=weight, step=step, step_started_at=Now(), next_tick_at=_next_tick()):
            rollout.weight, rollout.step = weight, step
            record(rollout, action, note)


def _adopt(rollout: Rollout, deployment: Deployment, holder: str, step: int, steps: list[routing.Step]) -> str:
    """The alias shows the plan's next weight: a tick wrote it and died before recording it."""
    weight = steps[step].weight
    if step == len(steps) - 1:
        record(rollout, Action.ADOPT, "the alias already served the new version alone: a tick wrote it and "
               "died before recording it", 1.0)
        complete(rollout, deployment, "adopted")
        return "adopted: done"
    _moved(rollout, holder, step, weight, Action.ADOPT, f"the alias already showed {weight:.0%}: a tick wrote it "
           "and died before recording it")
    return "adopted"


def complete(rollout: Rollout, deployment: Deployment, how: str) -> bool:
    """The alias serves the new version alone: the deployment succeeds, as any deploy does."""
    with transaction.atomic():
        if not finish(deployment, Status.SUCCEEDED, only_from=(Status.ROLLING_OUT,)):
            return False  # an abort was decided meanwhile: it puts the stable version back
        Rollout.objects.filter(pk=rollout.pk).update(weight=1.0, step=len(steps_of(rollout)) - 1, ended_at=Now(),
                                                     next_tick_at=None, tick_task_id="", tick_lease_until=None)
        rollout.weight = 1.0
        record(rollout, Action.DONE, f"version {rollout.new_version} alone, routing cleared ({how})")
        events.shifted.send(Deployment, deployment=deployment, written=None)
    _ended(rollout, deployment)
    return True


def _ended(rollout: Rollout, deployment: Deployment) -> None:
    try:
        health.delete_alarms(rollout)
    except Exception as exc:  # the sweeper deletes the alarms of ended rollouts
        log.warning("alarms of rollout %s not deleted yet: %s", rollout.pk, exc)
    queue.dispatch(deployment.environment_id)


# --- Abort ----------------------------------------------------------------------------------


def _superseded(rollout: Rollout, deployment: Deployment, holder: str) -> str:
    """A rollback superseded it: the rollback moves the alias. Once it succeeded the rollout
    ends; if it failed, the rollout aborts itself (the stable version back)."""
    rollback = Deployment.objects.get(pk=deployment.superseded_by_id)
    if not rollback.is_terminal:
        _release(rollout, holder, next_tick_at=_next_tick())
        return "superseded: waiting for the rollback"
    if rollback.status == Status.SUCCEEDED:
        end_superseded(rollback)
        return "superseded: ended"
    request_abort(deployment, "rollback", f"rollback #{rollback.pk} {rollback.status}: aborting to the stable version")
    return "superseded: aborting"


def end_superseded(rollback: Deployment) -> list[int]:
    """After a rollback's alias move: the rollouts it superseded end failed (`canary-aborted`,
    signal "rollback"); the rollback put the alias where it belongs, routing cleared."""
    ended = []
    for deployment in Deployment.objects.filter(superseded_by=rollback, status__in=Deployment.ROLLOUT,
                                                rollout__isnull=False).select_related("function", "environment"):
        rollout = deployment.rollout
        message = (f"rollout aborted (rollback): rollback #{rollback.pk} put version {rollback.version} back "
                   f"behind {deployment.environment.alias}, routing cleared, in one alias move")
        with transaction.atomic():
            if not finish(deployment, Status.FAILED, "canary-aborted", message, only_from=Deployment.ROLLOUT):
                continue
            Rollout.objects.filter(pk=rollout.pk).update(weight=0.0, ended_at=Now(), next_tick_at=None,
                                                         abort_signal=rollout.abort_signal or "rollback",
                                                         abort_reason=rollout.abort_reason or message)
            record(rollout, Action.ABORT, message, 0.0)
        _ended(rollout, deployment)
        ended.append(deployment.pk)
    return ended


def perform_abort(pk: int, holder: str) -> str:
    """Put the stable version back (routing cleared, RevisionId-guarded, re-read after
    PreconditionFailed), then end the deployment failed `canary-aborted` naming the signal and
    pause the environment's auto-deploy, as after a rollback. The abort task's work, and the
    sweeper's when that task was lost."""
    deployment = Deployment.objects.select_related("function", "environment").filter(
        pk=pk, status=Status.ABORTING).first()
    if deployment is None:
        return "not aborting"
    rollout = deployment.rollout
    if not _take(rollout, holder, (Status.ABORTING,)):
        return "held elsewhere"
    try:
        rollout.refresh_from_db()
        environment = deployment.environment
        rollback = Deployment.objects.filter(pk=deployment.superseded_by_id).first()
        if rollback is None or rollback.status != Status.SUCCEEDED:  # a rollback that succeeded moved it already
            lambdas.point_alias(environment.lambda_name, environment.alias, rollout.stable_version)
        signal = rollout.abort_signal or "manual"
        message = (f"rollout aborted ({signal}): {rollout.abort_reason or 'no reason given'}; {environment.alias} is "
                   f"back on version {rollout.stable_version}, routing cleared")
        with transaction.atomic():
            if not finish(deployment, Status.FAILED, "canary-aborted", message, only_from=(Status.ABORTING,)):
                return "ended meanwhile"
            Rollout.objects.filter(pk=rollout.pk).update(weight=0.0, ended_at=Now(), next_tick_at=None)
            rollout.weight = 0.0
            record(rollout, Action.ABORT, f"{environment.alias} back on version {rollout.stable_version}", 0.0)
            Environment.objects.filter(pk=environment.pk).update(
                paused_reason=f"rollout of version {rollout.new_version} aborted ({signal}); resume auto-deploy "
                              "when fixed")
            events.shifted.send(Deployment, deployment=deployment, written=None, version=rollout.stable_version)
        _ended(rollout, deployment)
        return "aborted"
    finally:
        _release(rollout, holder)


def overdue() -> datetime:
    return timezone.now() - timedelta(seconds=OVERDUE_TICKS * settings.SLIPWAY_ROLLOUT_TICK)


def sweep(holder: str = "sweeper") -> dict:
    """The sweeper's part: a rollout whose tick is OVERDUE_TICKS late (its ticks stopped) is
    aborted, here; an abort left undone as long is performed here; the alarms of ended rollouts
    are deleted. A rollout a tick holds (its lease running) is left alone."""
    late, now = overdue(), timezone.now()
    free = Q(rollout__tick_lease_until__isnull=True) | Q(rollout__tick_lease_until__lt=now)
    stuck = Deployment.objects.filter(free, status=Status.ROLLING_OUT, rollout__next_tick_at__lt=late)
    aborted = []
    for deployment in stuck.select_related("function", "environment"):
        if _decide_abort(deployment, "worker-lost", f"no tick since {deployment.rollout.next_tick_at:%H:%M:%S}: "
                         "the rollout's ticks stopped", allowed=(Status.ROLLING_OUT,), send=False):
            aborted.append(deployment.pk)
    stuck_aborts = Deployment.objects.filter(free, Q(rollout__next_tick_at__lt=late) | Q(pk__in=aborted),
                                             status=Status.ABORTING)
    performed = []
    for pk in stuck_aborts.values_list("pk", flat=True):
        try:
            if perform_abort(pk, holder) == "aborted":
                performed.append(pk)
        except Exception as exc:  # AWS down: the next sweep tries again
            log.warning("abort of deployment %s failed: %s", pk, exc)
    try:
        deleted = health.delete_ended()
    except Exception as exc:
        log.warning("alarms of ended rollouts not deleted: %s", exc)
        deleted = 0
    return {"rollouts_aborted": aborted, "aborts_performed": performed, "rollout_alarms_deleted": deleted}


def abort_lost_start(deployment: Deployment, condition: Q, why: str) -> bool:
    """A worker lost in its shift step after its rollout began: abort (the stable version
    back) instead of failing the row with the split left in place. False: no rollout began."""
    if not Rollout.objects.filter(deployment=deployment, ended_at__isnull=True).exists():
        return False
    return _decide_abort(deployment, "worker-lost", why, allowed=(Status.SHIFTING,), condition=condition)
