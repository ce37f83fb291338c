"""A rollout's health signals, scoped to the new version: CloudWatch alarms (one made
from the environment's template for each rollout, plus the owner's own) and Slipway's
probes of the new version. The engine (rollout.py) calls these; it decides what a
failing signal does.

An alarm already in ALARM when the rollout starts is reported and does not block it
(the fix for what set it off must get through); it fails the rollout only on a later
transition into ALARM. CloudWatch evaluates an alarm once per period: what Slipway
bounds is its reaction to a state change, not the metric's.
"""

from __future__ import annotations

import logging

from django.utils import timezone

from deploy import alarms, lambdas
from deploy.errors import DeployError, UserError
from portal.deployments import checks
from portal.deployments.models import Deployment, Rollout, RolloutEvent

log = logging.getLogger(__name__)
ALARM_MISSING = "rollout-alarm-missing"
SWEEP_BATCH = 500  # rollouts delete_ended() cleans up per sweep


def alarm_name(rollout: Rollout) -> str:
    """`slipway-<function>-<env>-v<N>-<metric>`: under the worker's IAM (alarm:slipway-*)
    and unique per rollout of a version."""
    environment = rollout.deployment.environment
    metric = {**alarms.DEFAULTS, **environment.rollout_alarm}["metric"]
    return (f"slipway-{environment.function.name}-{environment.name}-v{rollout.new_version}-"
            f"{str(metric).lower()}")[:alarms.NAME_LIMIT]


def alarm_dimensions(rollout: Rollout) -> dict[str, str]:
    """The new version's own traffic through the alias: Lambda's per-version metrics."""
    environment = rollout.deployment.environment
    return {"FunctionName": environment.lambda_name, "Resource": f"{environment.lambda_name}:{environment.alias}",
            "ExecutedVersion": str(rollout.new_version)}


def prepare(rollout: Rollout) -> None:
    """Create the template's alarm for this rollout, check that every owner's alarm exists,
    and note which are in ALARM already (reported, not blocking). A missing alarm is a
    setup error: UserError rollout-alarm-missing, and the alarm just created is deleted again."""
    environment = rollout.deployment.environment
    created = []
    if environment.rollout_alarm:
        problems = alarms.template_problems(environment.rollout_alarm)
        if problems:
            raise UserError("rollout-alarm-invalid", f"the environment's alarm template: {'; '.join(problems)}")
        made = alarms.spec(environment.rollout_alarm, alarm_name(rollout), alarm_dimensions(rollout))
        alarms.put(made)
        created.append(made.name)
    names = list(dict.fromkeys(created + list(environment.rollout_extra_alarms)))
    states = alarms.describe(names) if names else {}
    missing = [name for name in names if name not in states]
    if missing:
        alarms.delete(created)
        raise UserError(ALARM_MISSING, f"alarm(s) {', '.join(missing)} not found in CloudWatch: create them, or "
                                       f"remove them from {environment.name}'s rollout settings")
    already = [name for name in names if states[name].value == alarms.ALARM]
    rollout.alarms, rollout.alarms_created, rollout.alarms_already = names, created, already
    rollout.save(update_fields=["alarms", "alarms_created", "alarms_already"])
    for name in already:
        _event(rollout, RolloutEvent.Action.ALARM, f"{name} was in ALARM before the rollout: reported, not blocking "
                                                   "(only a later transition into ALARM aborts)")


def alarm_failures(rollouts: list[Rollout]) -> dict[int, str]:
    """rollout pk -> "alarm:<name>" for each rollout one of whose alarms is in ALARM and
    either was not at the start or went into ALARM again since. One DescribeAlarms per
    100 names covers every rollout. An alarm deleted meanwhile is logged, not a failure."""
    names = [name for rollout in rollouts for name in rollout.alarms]
    if not names:
        return {}
    states = alarms.describe(names)
    failures = {}
    for rollout in rollouts:
        for name in rollout.alarms:
            state = states.get(name)
            if state is None:
                log.warning("rollout %s: alarm %s no longer exists", rollout.pk, name)
                continue
            if state.value == alarms.ALARM and (name not in rollout.alarms_already
                                                or state.changed_at > rollout.started_at):
                failures[rollout.pk] = f"alarm:{name}"
                break
    return failures


def probe(rollout: Rollout) -> str:
    """Invoke the new version (qualified) probe_count times with the smoke event, then
    each golden case once. "" when at most probe_max_failures failed, else why (counts
    and the first failure). A RolloutEvent PROBE records the counts either way."""
    deployment = rollout.deployment
    environment, function, version = deployment.environment, deployment.function, rollout.new_version
    smoke_failed = []
    for _ in range(environment.probe_count):
        try:
            invocation = lambdas.invoke(environment.lambda_name, version, function.smoke_event or {})
        except DeployError as exc:
            smoke_failed.append(f"not answered ({exc.code})")
            continue
        problem = checks.smoke_problem(version, invocation)
        if problem:
            smoke_failed.append(problem.message)
    lines: list[str] = []
    cases, golden_failed = checks.golden_failures(function, environment, version, lines.append, unanswered_fail=True)
    failed, total = len(smoke_failed) + len(golden_failed), environment.probe_count + cases
    counts = (f"{failed} of {total} probe(s) of version {version} failed (smoke {len(smoke_failed)} of "
              f"{environment.probe_count}, golden cases {len(golden_failed)} of {cases}; at most "
              f"{environment.probe_max_failures} allowed)")
    first = (smoke_failed + golden_failed)[:1]
    _event(rollout, RolloutEvent.Action.PROBE, counts + (f": {first[0]}" if first else ""))
    if failed <= environment.probe_max_failures:
        return ""
    return f"{counts}: {first[0]}"


def delete_alarms(rollout: Rollout) -> None:
    """Delete the alarms Slipway created for the rollout (those already gone are fine) and
    note it; the owner's own alarms stay."""
    if rollout.alarms_created:
        alarms.delete(rollout.alarms_created)
    rollout.alarms_deleted_at = timezone.now()
    Rollout.objects.filter(pk=rollout.pk).update(alarms_deleted_at=rollout.alarms_deleted_at)


def delete_ended() -> int:
    """The sweeper's: delete the created alarms of ended rollouts that still have them
    (a worker lost before it cleaned up), 100 names per call. Returns how many rollouts."""
    ended = list(Rollout.objects.filter(alarms_deleted_at__isnull=True, deployment__status__in=Deployment.TERMINAL)
                 .order_by("pk")[:SWEEP_BATCH])
    if not ended:
        return 0
    alarms.delete(name for rollout in ended for name in rollout.alarms_created)
    Rollout.objects.filter(pk__in=[rollout.pk for rollout in ended]).update(alarms_deleted_at=timezone.now())
    return len(ended)


def _event(rollout: Rollout, action: str, note: str) -> None:
    RolloutEvent.objects.create(rollout=rollout, action=action, weight=rollout.weight, note=note[:500])
