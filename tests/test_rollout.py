"""The rollout engine against a Lambda alias that checks RevisionIds: start at the shift step,
the tick (wait, probe, next weight, adopt, abort on drift, alarm, probe or a pause too long,
promote now), completion, the abort, the sweeper and the lost-worker release. Health signals
are portal/deployments/health.py's (tests/test_rollout_health.py): patched here."""

from datetime import timedelta
from unittest import mock

import pytest
from billiard.exceptions import WorkerLostError
from django.utils import timezone

from portal.celery import ROLLOUT_ABORT_TASK, ROLLOUT_TICK_TASK
from portal.deployments import health, queue, rollout
from portal.deployments.models import Deployment, DeploymentStep, Rollout
from portal.deployments.recording import StepLog
from portal.functions import Environment
from tests.conftest import released
from tests.rollout_plane import Plane
from workers import lost, tasks

Status = Deployment.Status


@pytest.fixture
def signals():
    """health's functions, healthy unless a test says otherwise."""
    with mock.patch.multiple(health, prepare=mock.DEFAULT, alarm_failures=mock.DEFAULT, probe=mock.DEFAULT,
                             delete_alarms=mock.DEFAULT, delete_ended=mock.DEFAULT) as patched:
        patched["alarm_failures"].return_value = {}
        patched["probe"].return_value = ""
        patched["delete_ended"].return_value = 0
        yield patched


def weighted(function, strategy="canary", percent=10, minutes=5, **fields):
    Environment.objects.filter(pk=function.first_environment.pk).update(
        rollout_strategy=strategy, rollout_percent=percent, rollout_minutes=minutes, **fields)
    function.refresh_from_db()


def shifting(function) -> Deployment:
    """A deploy of version 2 in its shift step; version 1 is live."""
    released(function, "1", "a" * 40)
    deployment = Deployment.objects.create(function=function, trigger="cli", version="2", status=Status.SHIFTING,
                                           commit_sha="b" * 40)
    return Deployment.objects.select_related("environment", "function").get(pk=deployment.pk)


def log_of(deployment) -> StepLog:
    step = DeploymentStep.objects.create(deployment=deployment, name="shift", position=9)
    return StepLog(step)


def started(function, plane, **plan) -> Deployment:
    weighted(function, **plan)
    deployment = shifting(function)
    with plane.serving():
        assert rollout.start(deployment, log_of(deployment))
    deployment.refresh_from_db()
    return deployment


def step_over(deployment) -> None:
    """Make the current step's time be up (minutes are SLIPWAY_ROLLOUT_MINUTE seconds each)."""
    Rollout.objects.filter(deployment=deployment).update(step_started_at=timezone.now() - timedelta(hours=2),
                                                         next_tick_at=timezone.now())


def ticked(plane, holder="tick-1") -> dict:
    with plane.serving():
        return rollout.tick(holder)


def actions(deployment) -> list[str]:
    return list(Rollout.objects.get(deployment=deployment).events.values_list("action", flat=True))


def test_a_canary_starts_with_its_percent_on_the_new_version_guarded_by_the_revision(function, signals):
    plane = Plane()
    deployment = started(function, plane)
    assert deployment.status == Status.ROLLING_OUT and deployment.previous_version == "1"
    assert plane.writes == [("1", {"2": 0.1})]
    row = deployment.rollout
    assert (row.stable_version, row.new_version, row.weight, row.step) == ("1", "2", 0.1, 0)
    assert row.next_tick_at <= timezone.now()  # due at once: the next beat checks its alarms
    assert actions(deployment) == ["start", "shift"]
    signals["prepare"].assert_called_once()


def test_all_at_once_when_the_alias_does_not_exist_yet(function, signals):
    weighted(function)
    deployment = shifting(function)
    out = log_of(deployment)
    with Plane().serving() as lam:
        lam.get_alias.side_effect = None
        lam.get_alias.return_value = None
        assert not rollout.start(deployment, out)
    assert "does not exist yet" in "\n".join(out.lines)
    assert not Rollout.objects.exists()


def test_a_preview_never_rolls_out_even_when_its_environment_says_canary(function, signals):
    weighted(function)  # set behind the form's back, which refuses it for a preview environment
    Environment.objects.filter(pk=function.first_environment.pk).update(preview=True)
    deployment = shifting(function)
    plane = Plane()
    with plane.serving():
        assert not rollout.start(deployment, log_of(deployment))
    assert plane.writes == [] and not Rollout.objects.exists()


def test_a_changed_execution_role_falls_back_to_all_at_once_on_the_timeline(function, signals):
    weighted(function)
    deployment = shifting(function)
    plane = Plane()
    plane.roles["2"] = "arn:aws:iam::000000000000:role/other"
    out = log_of(deployment)
    with plane.serving():
        assert not rollout.start(deployment, out)
    assert plane.writes == [], "the pipeline's plain alias move does it"
    assert actions(deployment) == ["fallback"]
    assert "execution role changed" in "\n".join(out.lines)
    signals["prepare"].assert_not_called()


def test_a_missing_alarm_stops_the_rollout_before_the_alias_moves(function, signals):
    from deploy.errors import UserError

    weighted(function)
    deployment = shifting(function)
    signals["prepare"].side_effect = UserError("rollout-alarm-missing", "gone")
    plane = Plane()
    with plane.serving(), pytest.raises(UserError):
        rollout.start(deployment, log_of(deployment))
    assert plane.writes == []
    assert Rollout.objects.get(deployment=deployment).ended_at is not None


def test_the_tick_waits_out_the_step_then_probes_and_completes_the_canary(function, signals):
    plane = Plane()
    deployment = started(function, plane)
    Rollout.objects.filter(deployment=deployment).update(next_tick_at=timezone.now())
    assert ticked(plane) == {deployment.rollout.pk: "waiting"}
    signals["probe"].assert_not_called()
    step_over(deployment)
    assert ticked(plane) == {deployment.rollout.pk: "done"}
    signals["probe"].assert_called_once()
    assert plane.writes[-1] == ("2", {}), "the last step: the new version alone, routing cleared"
    deployment.refresh_from_db()
    assert deployment.status == Status.SUCCEEDED
    row = Rollout.objects.get(deployment=deployment)
    assert (row.weight, row.ended_at is not None, row.tick_task_id) == (1.0, True, "")
    assert actions(deployment) == ["start", "shift", "done"]
    signals["delete_alarms"].assert_called_once()


def test_a_linear_rollout_writes_each_step_in_order(function, signals):
    plane = Plane()
    deployment = started(function, plane, strategy="linear", percent=30)
    for _ in range(3):
        step_over(deployment)
        ticked(plane)
    assert plane.writes == [("1", {"2": 0.3}), ("1", {"2": 0.6}), ("1", {"2": 0.9}), ("2", {})]
    assert Deployment.objects.get(pk=deployment.pk).status == Status.SUCCEEDED
    assert actions(deployment) == ["start", "shift", "shift", "shift", "done"]


def test_the_tick_adopts_the_planned_next_weight_a_dead_tick_wrote(function, signals):
    plane = Plane()
    deployment = started(function, plane, strategy="linear", percent=30)
    plane.move("1", {"2": 0.6})  # the UpdateAlias of a tick that died before its database write
    Rollout.objects.filter(deployment=deployment).update(next_tick_at=timezone.now())
    assert ticked(plane) == {deployment.rollout.pk: "adopted"}
    row = Rollout.objects.get(deployment=deployment)
    assert (row.weight, row.step) == (0.6, 1)
    assert actions(deployment) == ["start", "shift", "adopt"]
    assert len(plane.writes) == 1, "adopting writes nothing"


def test_any_other_routing_on_the_alias_aborts(function, signals, sent, django_capture_on_commit_callbacks):
    plane = Plane()
    deployment = started(function, plane)
    plane.move("1", {"2": 0.5})  # not what the plan holds next: someone else
    Rollout.objects.filter(deployment=deployment).update(next_tick_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        assert ticked(plane) == {deployment.rollout.pk: "aborted: drift"}
    deployment.refresh_from_db()
    assert deployment.status == Status.ABORTING and deployment.rollout.abort_signal == "drift"
    assert sent.call_args.args == (ROLLOUT_ABORT_TASK,)
    with plane.serving():
        assert rollout.perform_abort(deployment.pk, "abort-1") == "aborted"
    assert plane.writes[-1] == ("1", {}), "the stable version alone, routing cleared"
    deployment.refresh_from_db()
    assert (deployment.status, deployment.error_code) == (Status.FAILED, "canary-aborted")
    assert "(drift)" in deployment.error_message and "back on version 1" in deployment.error_message
    assert "aborted (drift)" in Environment.objects.get(pk=deployment.environment_id).paused_reason
    assert actions(deployment) == ["start", "shift", "abort", "abort"]


def test_an_alarm_aborts_at_the_next_tick_without_touching_the_alias(function, signals):
    plane = Plane()
    deployment = started(function, plane)
    signals["alarm_failures"].side_effect = lambda due: {row.pk: "alarm:slipway-hello-errors" for row in due}
    Rollout.objects.filter(deployment=deployment).update(next_tick_at=timezone.now())
    ticked(plane)
    deployment.refresh_from_db()
    assert deployment.status == Status.ABORTING
    assert deployment.rollout.abort_signal == "alarm:slipway-hello-errors"
    assert len(plane.writes) == 1


def test_a_failed_probe_aborts_before_the_next_weight(function, signals):
    plane = Plane()
    deployment = started(function, plane)
    signals["probe"].return_value = "2 of 3 probe(s) of version 2 failed"
    step_over(deployment)
    ticked(plane)
    deployment.refresh_from_db()
    assert (deployment.status, deployment.rollout.abort_signal) == (Status.ABORTING, "probe")
    assert plane.writes == [("1", {"2": 0.1})]


def test_a_paused_rollout_holds_its_weight_then_aborts_past_the_maximum(function, signals, settings, cast):
    plane = Plane()
    deployment = started(function, plane)
    rollout.pause(deployment, cast["bob"])
    step_over(deployment)
    assert ticked(plane) == {deployment.rollout.pk: "paused"}
    assert len(plane.writes) == 1
    Rollout.objects.filter(deployment=deployment).update(
        paused_at=timezone.now() - timedelta(seconds=settings.SLIPWAY_ROLLOUT_PAUSE_MAX + 5),
        next_tick_at=timezone.now())
    ticked(plane)
    deployment.refresh_from_db()
    assert (deployment.status, deployment.rollout.abort_signal) == (Status.ABORTING, "paused")


def test_promote_now_skips_the_remaining_steps(function, signals, cast):
    plane = Plane()
    deployment = started(function, plane, strategy="linear", percent=10)
    rollout.promote_now(deployment, cast["alice"])
    assert ticked(plane) == {deployment.rollout.pk: "done"}
    assert plane.writes == [("1", {"2": 0.1}), ("2", {})]
    signals["probe"].assert_not_called()
    assert Deployment.objects.get(pk=deployment.pk).status == Status.SUCCEEDED


def test_a_write_that_meets_precondition_failed_is_read_again_at_the_next_tick(function, signals):
    plane = Plane()
    deployment = started(function, plane)
    step_over(deployment)
    plane.fail_next_write = "PreconditionFailedException"
    assert ticked(plane) == {deployment.rollout.pk: "conflict"}
    row = Rollout.objects.get(deployment=deployment)
    assert (row.weight, row.tick_task_id) == (0.1, "") and row.next_tick_at <= timezone.now()
    assert ticked(plane) == {deployment.rollout.pk: "done"}


def test_a_rollout_held_by_another_tick_is_left_alone(function, signals):
    plane = Plane()
    deployment = started(function, plane)
    Rollout.objects.filter(deployment=deployment).update(next_tick_at=timezone.now(), tick_task_id="other",
                                                         tick_lease_until=timezone.now() + timedelta(minutes=1))
    assert ticked(plane) == {}


def test_a_lost_tick_makes_its_rollouts_due_now(transactional_db, function, signals):
    plane = Plane()
    deployment = started(function, plane)
    Rollout.objects.filter(deployment=deployment).update(tick_task_id="dead-tick", next_tick_at=None,
                                                         tick_lease_until=timezone.now() + timedelta(minutes=1))
    lost.settle_after_lost_worker(sender=tasks.rollout_tick, task_id="dead-tick", exception=WorkerLostError("killed"),
                                  args=[])
    row = Rollout.objects.get(deployment=deployment)
    assert (row.tick_task_id, row.tick_lease_until) == ("", None)
    assert row.next_tick_at <= timezone.now()
    assert tasks.rollout_tick.name == ROLLOUT_TICK_TASK


def test_the_sweeper_aborts_a_rollout_whose_ticks_stopped_and_leaves_a_fresh_one(function, signals, settings):
    from portal.deployments import sweeper

    plane = Plane()
    deployment = started(function, plane)
    assert ticked(plane) == {deployment.rollout.pk: "waiting"}
    assert sweeper_result(plane)["rollouts_aborted"] == [], "a fresh rollout is left alone"
    late = timezone.now() - timedelta(seconds=(rollout.OVERDUE_TICKS + 1) * settings.SLIPWAY_ROLLOUT_TICK)
    Rollout.objects.filter(deployment=deployment).update(next_tick_at=late)
    result = sweeper_result(plane)
    assert result["rollouts_aborted"] == [deployment.pk] and result["aborts_performed"] == [deployment.pk]
    assert plane.writes[-1] == ("1", {})
    deployment.refresh_from_db()
    assert (deployment.status, deployment.rollout.abort_signal) == (Status.FAILED, "worker-lost")
    assert sweeper is not None


def sweeper_result(plane) -> dict:
    from portal.deployments import sweeper

    with plane.serving():
        return sweeper.sweep()


def test_a_deploy_requested_during_a_rollout_queues_behind_it(function, signals, sent):
    plane = Plane()
    deployment = started(function, plane)
    later = Deployment.objects.create(function=function, trigger="cli")
    assert queue.dispatch(function.first_environment.pk) is None
    assert Deployment.objects.get(pk=later.pk).status == Status.QUEUED
    step_over(deployment)
    with mock.patch.object(queue, "_mark_sent", autospec=True) as mark:
        ticked(plane)
    assert mark.call_args.args[0] == later.pk, "the finished rollout dispatches the queue"


def test_a_rollback_supersedes_the_rollout_targets_its_stable_version_and_ends_it(function, signals, sent, cast):
    from portal.deployments import requesting

    plane = Plane()
    deployment = started(function, plane)
    rollback = requesting.request_rollback(function, trigger="cli", user=cast["alice"])
    assert rollback.target_version == "1", "the stable version, not the release before it"
    deployment.refresh_from_db()
    assert deployment.superseded_by_id == rollback.pk and deployment.status == Status.ROLLING_OUT
    assert queue._blockers(rollback).count() == 0, "a rollback never waits for a rollout"
    Rollout.objects.filter(deployment=deployment).update(next_tick_at=timezone.now())
    assert ticked(plane) == {deployment.rollout.pk: "superseded: waiting for the rollback"}
    assert len(plane.writes) == 1, "the tick stops touching the alias"
    Deployment.objects.filter(pk=rollback.pk).update(status=Status.SUCCEEDED, version="1")
    rollback.refresh_from_db()
    assert rollout.end_superseded(rollback) == [deployment.pk]
    deployment.refresh_from_db()
    assert (deployment.status, deployment.error_code) == (Status.FAILED, "canary-aborted")
    assert "rollback" in deployment.error_message


def test_the_pipelines_shift_step_hands_a_rollout_to_the_ticks_without_finishing_it(function, signals):
    from portal.deployments import pipeline, steps
    from portal.deployments.recording import Held, Recorder

    weighted(function)
    deployment = shifting(function)
    plane = Plane()
    with plane.serving(), pytest.raises(Held) as held:
        pipeline.shift(steps.Run(deployment), Recorder(deployment))
    assert held.value.status == Status.ROLLING_OUT
    step = DeploymentStep.objects.get(deployment=deployment, name="shift")
    assert step.status == DeploymentStep.Status.SUCCEEDED and "the beat's ticks take it on" in step.output
    assert Deployment.objects.get(pk=deployment.pk).status == Status.ROLLING_OUT
    assert plane.writes == [("1", {"2": 0.1})]


def test_the_pipelines_shift_step_moves_all_at_once_with_routing_cleared(function, signals):
    from portal.deployments import pipeline, steps
    from portal.deployments.recording import Recorder

    deployment = shifting(function)  # all at once: the environment's default
    plane = Plane()
    plane.move("1", {"3": 0.2})  # weights someone left: an alias move must not keep them
    with plane.serving():
        pipeline.shift(steps.Run(deployment), Recorder(deployment))
    assert plane.writes == [("2", {})]
    assert not Rollout.objects.exists()


def test_a_worker_lost_as_its_rollout_began_aborts_instead_of_leaving_the_split(function, signals, sent,
                                                                                django_capture_on_commit_callbacks):
    from django.db.models import Q

    from portal.deployments import sweeper

    weighted(function)
    deployment = shifting(function)
    plane = Plane()
    Rollout.objects.create(deployment=deployment, strategy="canary", percent=10, minutes=5, stable_version="1",
                           new_version="2")
    plane.move("1", {"2": 0.1})  # its first weight written, then the worker died
    with django_capture_on_commit_callbacks(execute=True):
        assert sweeper.settle_lost(deployment, Q(), "the worker process running it died", "sweeper")
    deployment.refresh_from_db()
    assert (deployment.status, deployment.rollout.abort_signal) == (Status.ABORTING, "worker-lost")
    assert sent.call_args.args == (ROLLOUT_ABORT_TASK,)
    with plane.serving():
        assert rollout.perform_abort(deployment.pk, "abort-1") == "aborted"
    assert (plane.primary, plane.weights) == ("1", {})
    assert Deployment.objects.get(pk=deployment.pk).error_code == "canary-aborted"


def test_gitlab_sees_a_rollout_as_running_until_it_ends():
    from portal.feedback import status as feedback

    assert feedback.gitlab_state(Status.ROLLING_OUT) == feedback.gitlab_state(Status.ABORTING) == feedback.RUNNING


def test_a_webhook_deploy_of_an_older_commit_is_stale_behind_a_rolling_out_newer_one(function, signals):
    from portal.deployments import steps

    plane = Plane()
    deployment = started(function, plane)
    Deployment.objects.filter(pk=deployment.pk).update(trigger="webhook", commit_sha="c" * 40)
    older = Deployment.objects.create(function=function, trigger="webhook", commit_sha="d" * 40, ref="main",
                                      status=Status.SOURCE)
    run = steps.Run(Deployment.objects.select_related("function", "environment").get(pk=older.pk))
    with mock.patch("deploy.source.resolve_cached", return_value="e" * 40), \
            mock.patch("deploy.source.is_ancestor", side_effect=lambda _, mine, sha: sha == "c" * 40):
        reason = steps.stale_reason(run)
    assert reason.startswith("stale") and f"#{deployment.pk}" in reason, reason


def test_a_tick_goes_on_without_alarms_when_cloudwatch_does_not_answer(function, signals):
    from deploy.errors import AppError

    plane = Plane()
    deployment = started(function, plane)
    signals["alarm_failures"].side_effect = AppError("cloudwatch-Throttling", "slow down")
    step_over(deployment)
    assert ticked(plane) == {deployment.rollout.pk: "done"}
