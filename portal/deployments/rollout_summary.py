"""What a rollout looks like from outside, the same on the pages, in the API and in the
metrics: its state and weight, its timeline, the weight over time; and the one entry the
pages and the API use for manual control (promote now, pause, resume, abort), which calls
the engine's functions (rollout.py) and only writes rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from deploy.errors import UserError
from portal.deployments import rollout, routing, strategies
from portal.deployments.models import Deployment, Rollout

Status = Deployment.Status
ACTIONS = ("promote", "pause", "resume", "abort")


def state(item: Rollout) -> str:
    """rolling_out, paused, promoting, aborting, succeeded, aborted (failed) or the deployment's status."""
    status = item.deployment.status
    if status == Status.ROLLING_OUT:
        return "promoting" if item.promote_now else "paused" if item.paused_at else "rolling_out"
    if status == Status.FAILED and item.abort_signal:
        return "aborted"
    return status


def planned_steps(item: Rollout) -> list[routing.Step]:
    """The plan it follows (seconds as the installation counts minutes)."""
    return routing.plan(item.strategy, item.percent, item.minutes, minute_s=settings.SLIPWAY_ROLLOUT_MINUTE)


def summary(item: Rollout) -> dict:
    """The rollout as the API and the pages show it (JSON-ready apart from the datetimes)."""
    steps = planned_steps(item)
    return {
        "state": state(item), "strategy": item.strategy, "percent": item.percent, "minutes": item.minutes,
        "described": strategies.describe(item.strategy, item.percent, item.minutes),
        "stable_version": item.stable_version, "new_version": item.new_version, "weight": item.weight,
        "step": item.step, "steps": len(steps), "started_at": item.started_at, "ended_at": item.ended_at,
        "next_tick_at": item.next_tick_at, "paused_at": item.paused_at, "promote_now": item.promote_now,
        "abort_signal": item.abort_signal, "abort_reason": item.abort_reason, "alarms": list(item.alarms),
        "alarms_already": list(item.alarms_already),
        "events": [{"action": e.action, "weight": e.weight, "note": e.note, "at": e.at} for e in item.events.all()],
    }


def of(deployment: Deployment) -> Rollout | None:
    """The deployment's rollout, if it had one."""
    try:
        return deployment.rollout
    except Rollout.DoesNotExist:
        return None


@dataclass(frozen=True)
class Point:
    at: datetime
    weight: float


def weight_series(item: Rollout, now: datetime | None = None) -> list[Point]:
    """The new version's share over time, as steps: each event's weight from its time on, held
    until the rollout ended (or now, while it runs)."""
    points = [Point(item.started_at, 0.0)]
    for event in item.events.all():
        if event.weight != points[-1].weight:
            points.append(Point(event.at, points[-1].weight))  # held until this event (a step, not a slope)
            points.append(Point(event.at, event.weight))
    points.append(Point(item.ended_at or now or timezone.now(), points[-1].weight))
    return points


def control(deployment: Deployment, action: str, user) -> Deployment:
    """Promote now, pause, resume or abort `deployment`'s rollout (the engine's rules: each
    refused `rollout-not-running`, 409, unless it is rolling out). The deployment as it is after."""
    if action == "abort":
        name = user.get_username() if user else "system"
        if not rollout.request_abort(deployment, "manual", f"aborted by {name}", user=user):
            deployment.refresh_from_db(fields=["status"])
            raise UserError("rollout-not-running", f"deployment #{deployment.pk} is {deployment.status}, not "
                            "rolling out: nothing to abort", status=409)
        deployment.refresh_from_db()
        return deployment
    operations = {"promote": rollout.promote_now, "pause": rollout.pause, "resume": rollout.resume}
    if action not in operations:
        raise ValueError(f"{action!r} is not one of {ACTIONS}")
    return operations[action](deployment, user)
