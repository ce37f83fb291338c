"""Queueing rules, with Celery's send patched (the one seam): no broker needed."""

from unittest import mock

import pytest

from portal.models import Build, Deployment
from portal.services import RequestRefused, request_deploy, request_rollback
from workers import pipeline

Status = Deployment.Status


@pytest.fixture
def sent():
    with mock.patch("workers.tasks.deploy.apply_async", autospec=True) as deploy, \
            mock.patch("workers.tasks.rollback.apply_async", autospec=True) as rollback:
        deploy.return_value.id = rollback.return_value.id = "task-1"
        yield {"deploy": deploy, "rollback": rollback}


def _released(function, version: str, sha: str) -> Deployment:
    build = Build.objects.create(function=function, commit_sha=sha, architecture="arm64",
                                 status=Build.Status.SUCCEEDED, digest="sha256:" + sha[:2] * 32)
    return Deployment.objects.create(function=function, trigger="cli", status=Status.SUCCEEDED, version=version,
                                     build=build, commit_sha=sha)


def test_the_newest_request_supersedes_older_queued_ones(function, sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        first = request_deploy(function, trigger="cli", ref="main")
        second = request_deploy(function, trigger="cli", ref="main")
        third = request_deploy(function, trigger="api", ref="main")
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (Status.SUPERSEDED, Status.SUPERSEDED)
    assert second.superseded_by_id == third.pk
    assert sent["deploy"].call_args.kwargs == {"args": [third.pk], "queue": "deploys"}
    assert Deployment.objects.get(pk=third.pk).task_id == "task-1"


def test_nothing_is_sent_while_another_deployment_of_the_function_runs(function, sent,
                                                                       django_capture_on_commit_callbacks):
    running = Deployment.objects.create(function=function, trigger="cli", status=Status.BUILDING)
    with django_capture_on_commit_callbacks(execute=True):
        waiting = request_deploy(function, trigger="cli")
    assert sent["deploy"].call_count == 0
    assert pipeline.claim(waiting, Status.SOURCE) is False
    running.finish(Status.SUCCEEDED)
    with django_capture_on_commit_callbacks(execute=True):
        pipeline.dispatch(function.pk)
    assert sent["deploy"].call_args.kwargs["args"] == [waiting.pk]


def test_a_redelivered_task_does_nothing(function):
    deployment = Deployment.objects.create(function=function, trigger="cli")
    assert pipeline.claim(deployment, Status.SOURCE) is True
    assert pipeline.run_deploy(deployment.pk) == "not claimed"


def test_a_rollback_supersedes_queued_deploys_and_stops_running_ones(function, sent,
                                                                     django_capture_on_commit_callbacks):
    old = _released(function, "1", "a" * 40)
    _released(function, "2", "b" * 40)
    running = Deployment.objects.create(function=function, trigger="webhook", status=Status.BUILDING)
    queued = Deployment.objects.create(function=function, trigger="webhook")
    with django_capture_on_commit_callbacks(execute=True):
        rollback = request_rollback(function, trigger="ui")
    queued.refresh_from_db()
    running.refresh_from_db()
    function.refresh_from_db()
    assert (rollback.target_version, rollback.build_id) == ("1", old.build_id)
    assert (queued.status, queued.superseded_by_id) == (Status.SUPERSEDED, rollback.pk)
    assert (running.status, running.superseded_by_id) == (Status.BUILDING, rollback.pk)
    assert "rolled back to version 1" in function.paused_reason
    assert sent["rollback"].call_args.kwargs == {"args": [rollback.pk], "queue": "rollbacks"}
    with pytest.raises(pipeline.Stopped, match="stopped before moving the alias"):
        pipeline.check_stop(running)


def test_rollback_refuses_when_there_is_nothing_earlier(function):
    _released(function, "1", "a" * 40)
    with pytest.raises(RequestRefused, match="no earlier release than version 1"):
        request_rollback(function, trigger="cli")


def test_rollback_to_an_unknown_version_is_refused(function):
    _released(function, "1", "a" * 40)
    with pytest.raises(RequestRefused, match="matches '7'"):
        request_rollback(function, trigger="cli", to="7")


@pytest.mark.parametrize("kwargs, message", [
    ({"ref": "--upload-pack=touch /tmp/x"}, "not a valid branch, tag or commit"),
    ({"commit": "abc123"}, "not a full 40-character commit SHA"),
    ({"ref": "main", "commit": "a" * 40}, "not both"),
])
def test_bad_deploy_requests_are_refused_and_store_nothing(function, kwargs, message):
    with pytest.raises(RequestRefused, match=message):
        request_deploy(function, trigger="api", **kwargs)
    assert Deployment.objects.count() == 0


def test_the_sweeper_fails_a_deployment_whose_heartbeat_stopped(function, settings, tmp_path):
    from datetime import timedelta

    from django.utils import timezone

    settings.STATE_DIR = tmp_path
    workspace = tmp_path / "work" / "workspaces"
    stale = Deployment.objects.create(function=function, trigger="cli", status=Status.BUILDING,
                                      heartbeat_at=timezone.now() - timedelta(minutes=10))
    (workspace / pipeline.workspace_name(stale.pk)).mkdir(parents=True)
    fresh = Deployment.objects.create(function=function, trigger="cli", status=Status.BUILDING,
                                      heartbeat_at=timezone.now())
    assert pipeline.sweep()["worker_lost"] == [stale.pk]
    stale.refresh_from_db()
    assert (stale.status, stale.error_code) == (Status.FAILED, "worker-lost")
    assert not (workspace / pipeline.workspace_name(stale.pk)).exists()
    assert Deployment.objects.get(pk=fresh.pk).status == Status.BUILDING


def test_a_deploy_superseded_by_a_rollback_cannot_enter_its_shift(function):
    deploy = Deployment.objects.create(function=function, trigger="cli", status=Status.VERIFYING)
    rollback = Deployment.objects.create(function=function, trigger="cli", kind=Deployment.Kind.ROLLBACK)
    Deployment.objects.filter(pk=deploy.pk).update(superseded_by=rollback)
    assert deploy.enter_shift() is False
    assert Deployment.objects.get(pk=deploy.pk).status == Status.VERIFYING


def test_a_rollback_does_not_claim_while_a_deploy_is_moving_the_alias(function):
    deploy = Deployment.objects.create(function=function, trigger="cli", status=Status.VERIFYING)
    assert deploy.enter_shift() is True
    rollback = Deployment.objects.create(function=function, trigger="cli", kind=Deployment.Kind.ROLLBACK)
    assert pipeline.claim(rollback, Status.VERIFYING) is False
    deploy.finish(Status.SUCCEEDED)
    assert pipeline.claim(rollback, Status.VERIFYING) is True


def test_the_sweeper_resends_a_queued_deployment_whose_message_never_left(function, sent,
                                                                          django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    lost = Deployment.objects.create(function=function, trigger="webhook")  # broker was down: enqueued_at unset
    Deployment.objects.filter(pk=lost.pk).update(created_at=timezone.now() - timedelta(minutes=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert pipeline.sweep()["redispatched_functions"] == [function.pk]
    assert sent["deploy"].call_args.kwargs["args"] == [lost.pk]
