"""Manual control of a rollout: pause, resume, promote now, abort. Each only writes rows
(audited, a RolloutEvent); the tick or the abort task does the AWS calls."""

from datetime import timedelta

import pytest
from django.utils import timezone

from deploy.errors import UserError
from portal.celery import ROLLOUT_ABORT_TASK
from portal.deployments import rollout
from portal.models import AuditEvent, Deployment, Rollout

Status = Deployment.Status


def rolling_out(function, **fields) -> Deployment:
    """A deployment in the middle of a canary: 10 % on version 2, stable version 1."""
    deployment = Deployment.objects.create(function=function, trigger="cli", status=Status.ROLLING_OUT,
                                           version="2", previous_version="1")
    Rollout.objects.create(deployment=deployment, strategy="canary", percent=10, minutes=5, stable_version="1",
                           new_version="2", weight=0.1, step_started_at=timezone.now(),
                           next_tick_at=timezone.now(), **fields)
    return deployment


def actions(deployment) -> list[str]:
    return list(deployment.rollout.events.values_list("action", flat=True))


def test_pause_then_resume_keeps_the_time_the_step_had_left(function, cast):
    deployment = rolling_out(function)
    started = deployment.rollout.step_started_at
    rollout.pause(deployment, cast["bob"])
    Rollout.objects.filter(deployment=deployment).update(paused_at=timezone.now() - timedelta(seconds=100))
    rollout.resume(deployment, cast["bob"])
    row = Rollout.objects.get(deployment=deployment)
    assert row.paused_at is None
    assert (row.step_started_at - started).total_seconds() == pytest.approx(100, abs=2)
    assert actions(deployment) == ["pause", "resume"]
    assert set(AuditEvent.objects.values_list("action", flat=True)) == {"deployment.rollout_paused",
                                                                        "deployment.rollout_resumed"}


def test_promote_now_makes_the_rollout_due_and_clears_a_pause(function, cast):
    deployment = rolling_out(function, paused_at=timezone.now())
    Rollout.objects.filter(deployment=deployment).update(next_tick_at=timezone.now() + timedelta(hours=1))
    rollout.promote_now(deployment, cast["alice"])
    row = Rollout.objects.get(deployment=deployment)
    assert row.promote_now and row.paused_at is None
    assert row.next_tick_at <= timezone.now()
    assert actions(deployment) == ["promote"]


def test_request_abort_marks_it_aborting_and_sends_the_abort_after_commit(function, cast, sent,
                                                                          django_capture_on_commit_callbacks):
    deployment = rolling_out(function)
    with django_capture_on_commit_callbacks(execute=True):
        assert rollout.request_abort(deployment, "manual", "looks wrong", user=cast["alice"])
    deployment.refresh_from_db()
    assert deployment.status == Status.ABORTING
    assert (deployment.rollout.abort_signal, deployment.rollout.abort_reason) == ("manual", "looks wrong")
    assert sent.call_args.args == (ROLLOUT_ABORT_TASK,) and sent.call_args.kwargs["args"] == [deployment.pk]
    assert actions(deployment) == ["abort"]
    assert not rollout.request_abort(deployment, "manual", "again"), "an abort is decided once"


@pytest.mark.parametrize("control", [rollout.pause, rollout.resume, rollout.promote_now])
def test_control_of_a_deployment_not_rolling_out_is_refused(function, cast, control):
    deployment = rolling_out(function)
    Deployment.objects.filter(pk=deployment.pk).update(status=Status.ABORTING)
    with pytest.raises(UserError) as caught:
        control(deployment, cast["bob"])
    assert (caught.value.code, caught.value.status) == ("rollout-not-running", 409)
    assert actions(deployment) == []


def test_current_is_the_environments_rollout_while_it_holds_the_alias(function):
    environment = function.first_environment
    assert rollout.current(environment) is None
    deployment = rolling_out(function)
    assert rollout.current(environment).deployment_id == deployment.pk
    Deployment.objects.filter(pk=deployment.pk).update(status=Status.FAILED)
    assert rollout.current(environment) is None
