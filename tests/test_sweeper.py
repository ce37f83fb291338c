"""Heartbeats, the sweeper and the worker's main process: a live worker's row is
never failed as worker-lost, and a settled row says what really happened."""

import time
from datetime import timedelta
from unittest import mock

import pytest
from billiard.exceptions import WorkerLostError
from django.db import OperationalError
from django.utils import timezone

from portal.celery import DEPLOY_TASK
from portal.deployments import recording, steps, sweeper
from portal.models import Deployment, DeploymentStep
from workers import lost, tasks

pytestmark = pytest.mark.postgres
Status = Deployment.Status


def building(function, **fields) -> Deployment:
    deployment = Deployment.objects.create(function=function, trigger="cli")
    deployment.claim(Status.BUILDING)
    Deployment.objects.filter(pk=deployment.pk).update(**fields)
    return deployment


def test_heartbeats_go_on_after_a_database_error(function):
    deployment = building(function)
    beats = []

    def beat(self):
        beats.append(time.monotonic())
        if len(beats) == 1:
            raise OperationalError("database is locked")

    with mock.patch.object(Deployment, "beat", beat), recording.heartbeat(deployment, interval=0.02):
        deadline = time.monotonic() + 5
        while len(beats) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert len(beats) >= 3, "the heartbeat thread stopped after the first error"


def test_the_sweeper_fails_a_deployment_whose_heartbeat_stopped(function, settings, tmp_path):
    settings.WORK_DIR = tmp_path / "work"
    stale = building(function, heartbeat_at=timezone.now() - timedelta(minutes=10))
    workspace = tmp_path / "work" / "workspaces" / steps.workspace_name(stale.pk)
    workspace.mkdir(parents=True)
    fresh = building(function)
    assert sweeper.sweep()["worker_lost"] == [stale.pk]
    stale.refresh_from_db()
    assert (stale.status, stale.error_code) == (Status.FAILED, "worker-lost")
    assert not workspace.exists()
    assert Deployment.objects.get(pk=fresh.pk).status == Status.BUILDING


def test_the_sweeper_judges_heartbeats_by_the_database_clock_not_its_hosts(function):
    fresh = building(function)  # claimed just now, on the database's clock
    ahead = timezone.now() + timedelta(minutes=10)  # a sweeper host whose clock runs ten minutes ahead
    with mock.patch("django.utils.timezone.now", return_value=ahead):
        assert sweeper.sweep()["worker_lost"] == []
    assert Deployment.objects.get(pk=fresh.pk).status == Status.BUILDING


def test_a_row_that_beat_after_the_sweeper_read_it_is_left_alone(function):
    from django.db.models import Q
    from django.db.models.functions import Now

    stale = building(function, heartbeat_at=timezone.now() - timedelta(minutes=10))
    stale.beat()  # the worker beats between the sweeper's read and its update
    assert stale.settle_lost(Q(heartbeat_at__lt=Now() - timedelta(seconds=120)), "lost") is False
    assert Deployment.objects.get(pk=stale.pk).status == Status.BUILDING


def test_the_sweeper_resends_a_queued_deployment_whose_message_never_left(function,
                                                                          django_capture_on_commit_callbacks):
    lost = Deployment.objects.create(function=function, trigger="webhook")  # broker was down: enqueued_at unset
    Deployment.objects.filter(pk=lost.pk).update(created_at=timezone.now() - timedelta(minutes=1))
    with mock.patch("portal.core.sending.app.send_task", autospec=True) as send_task, \
            django_capture_on_commit_callbacks(execute=True):
        send_task.return_value.id = "task-1"
        assert sweeper.sweep()["redispatched_functions"] == [function.pk]
    assert send_task.call_args.kwargs["args"] == [lost.pk]


def test_a_row_whose_shift_step_completed_is_settled_as_succeeded_not_failed(function):
    shifted = building(function, status=Status.SHIFTING, version="7", heartbeat_at=timezone.now() - timedelta(hours=1))
    DeploymentStep.objects.create(deployment=shifted, name="shift", position=1, status=DeploymentStep.Status.SUCCEEDED,
                                  output="live: 6 -> 7")
    swept = sweeper.sweep()
    assert (swept["live_after_shift"], swept["worker_lost"]) == ([shifted.pk], [])
    shifted.refresh_from_db()
    assert (shifted.status, shifted.error_code) == (Status.SUCCEEDED, "")
    assert "version 7 is live" in shifted.error_message and "sweeper" in shifted.error_message


def test_a_lost_pool_process_settles_only_the_row_its_task_claimed(transactional_db, function):
    mine = building(function, task_id="task-dead")
    other = building(function, task_id="task-alive")
    with mock.patch("portal.core.sending.app.send_task", autospec=True):  # in the main process; closes its connection
        lost.settle_after_lost_worker(sender=tasks.deploy, task_id="task-dead", args=[mine.pk],
                                      exception=WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL)"))
    mine.refresh_from_db()
    assert (mine.status, mine.error_code) == (Status.FAILED, "worker-lost")
    assert "worker process running it died" in mine.error_message and "SIGKILL" in mine.error_message
    assert Deployment.objects.get(pk=other.pk).status == Status.BUILDING
    assert tasks.deploy.name == DEPLOY_TASK


def test_a_task_that_claims_a_row_records_its_own_id(function):
    deployment = Deployment.objects.create(function=function, trigger="cli", task_id="sent-first")
    assert deployment.claim(Status.SOURCE, "task-that-claimed") is True
    assert Deployment.objects.get(pk=deployment.pk).task_id == "task-that-claimed"
