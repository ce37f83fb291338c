"""The queue rules (portal/deployments/queue.py), per environment, with Celery's send_task
patched (the one seam): no broker needed. Marked `postgres`: `make test` runs
them on Postgres too, where select_for_update really locks."""


import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from portal.core.errors import RequestRefused
from portal.deployments import queue
from portal.deployments.requesting import cancel, request_deploy, request_rollback
from portal.models import Deployment
from tests.conftest import released

pytestmark = pytest.mark.postgres
Status = Deployment.Status


def sent_pks(sent) -> list[int]:
    return [c.kwargs["args"][0] for c in sent.call_args_list]


@pytest.fixture
def two_releases(function):
    return released(function, "1", "a" * 40), released(function, "2", "b" * 40)


def running(function, kind=Deployment.Kind.DEPLOY, status=Status.BUILDING) -> Deployment:
    return Deployment.objects.create(function=function, trigger="cli", kind=kind, status=status)


def test_the_newest_deploy_supersedes_older_queued_ones_naming_itself(function, sent,
                                                                      django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        first = request_deploy(function, trigger="cli", ref="main")
        second = request_deploy(function, trigger="cli", ref="main")
        third = request_deploy(function, trigger="api", ref="main")
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (Status.SUPERSEDED, Status.SUPERSEDED)
    assert (second.superseded_by_id, second.error_message) == (third.pk, f"deploy #{third.pk}, requested later, "
                                                                         "replaced it")
    assert sent.call_args.args == ("slipway.deploy",) and sent_pks(sent)[-1] == third.pk
    assert Deployment.objects.get(pk=third.pk).task_id == sent.call_args.kwargs["task_id"] != ""


def test_nothing_is_sent_while_another_deployment_of_the_function_runs(function, sent,
                                                                       django_capture_on_commit_callbacks):
    busy = running(function)
    with django_capture_on_commit_callbacks(execute=True):
        waiting = request_deploy(function, trigger="cli")
    assert sent.call_count == 0
    assert queue.claim(waiting, Status.SOURCE) is False
    busy.finish(Status.SUCCEEDED)
    with django_capture_on_commit_callbacks(execute=True):
        queue.dispatch(function.first_environment.pk)
    assert sent_pks(sent) == [waiting.pk]


def test_a_row_already_sent_is_not_sent_again_until_it_is_due(function, sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        deployment = request_deploy(function, trigger="cli")
        queue.dispatch(function.first_environment.pk)
    assert sent_pks(sent) == [deployment.pk]


def test_a_redelivered_task_does_nothing(function):
    from workers import tasks

    deployment = Deployment.objects.create(function=function, trigger="cli")
    assert queue.claim(deployment, Status.SOURCE) is True
    assert tasks.deploy(deployment.pk) == "not claimed"


def test_a_rollback_supersedes_queued_deploys_and_stops_running_ones(function, two_releases, sent,
                                                                     django_capture_on_commit_callbacks):
    busy = running(function)
    queued = Deployment.objects.create(function=function, trigger="webhook")
    with django_capture_on_commit_callbacks(execute=True):
        rollback = request_rollback(function, trigger="ui")
    queued.refresh_from_db()
    busy.refresh_from_db()
    function.refresh_from_db()
    assert (rollback.target_version, rollback.build_id) == ("1", two_releases[0].build_id)
    assert (queued.status, queued.superseded_by_id) == (Status.SUPERSEDED, rollback.pk)
    assert queued.error_message == f"rollback #{rollback.pk} replaced it"
    assert (busy.status, busy.superseded_by_id) == (Status.BUILDING, rollback.pk)
    assert "rolled back to version 1" in function.first_environment.paused_reason
    assert sent.call_args.args == ("slipway.rollback",) and sent_pks(sent) == [rollback.pk]
    from portal.deployments.recording import Stopped, check_stop

    with pytest.raises(Stopped, match="stopped before moving the alias"):
        check_stop(busy)


def test_a_newer_rollback_supersedes_an_older_queued_one(function, two_releases, sent,
                                                         django_capture_on_commit_callbacks):
    running(function, Deployment.Kind.ROLLBACK, Status.CHECKING)
    with django_capture_on_commit_callbacks(execute=True):
        older = request_rollback(function, trigger="ui")
        newer = request_rollback(function, trigger="ui", to="2")
    older.refresh_from_db()
    assert (older.status, older.superseded_by_id) == (Status.SUPERSEDED, newer.pk)
    assert older.error_message == f"rollback #{newer.pk} replaced it"
    assert sent.call_count == 0  # both wait for the running rollback


def test_a_deploy_requested_after_a_queued_rollback_runs_after_it(function, two_releases, sent,
                                                                   django_capture_on_commit_callbacks):
    busy = running(function, Deployment.Kind.ROLLBACK, Status.CHECKING)
    with django_capture_on_commit_callbacks(execute=True):
        rollback = request_rollback(function, trigger="ui")
        deploy = request_deploy(function, trigger="webhook")
    busy.finish(Status.SUCCEEDED)
    with django_capture_on_commit_callbacks(execute=True):
        queue.dispatch(function.first_environment.pk)
    deploy.refresh_from_db()
    assert (deploy.status, deploy.superseded_by_id) == (Status.QUEUED, None)
    assert sent_pks(sent) == [rollback.pk]
    assert queue.claim(deploy, Status.SOURCE) is False  # not while the rollback waits or runs
    assert queue.claim(rollback, Status.CHECKING) is True
    rollback.finish(Status.SUCCEEDED)
    with django_capture_on_commit_callbacks(execute=True):
        queue.dispatch(function.first_environment.pk)
    assert sent_pks(sent) == [rollback.pk, deploy.pk]


def test_a_rollback_does_not_supersede_a_deploy_requested_after_it(function, two_releases, sent,
                                                                    django_capture_on_commit_callbacks):
    running(function, Deployment.Kind.ROLLBACK, Status.CHECKING)
    with django_capture_on_commit_callbacks(execute=True):
        rollback = request_rollback(function, trigger="ui")
        later = request_deploy(function, trigger="webhook")
    assert Deployment.objects.get(pk=later.pk).superseded_by_id is None
    assert Deployment.objects.get(pk=rollback.pk).status == Status.QUEUED


def test_rollback_refuses_when_there_is_nothing_earlier(function):
    released(function, "1", "a" * 40)
    with pytest.raises(RequestRefused, match="no earlier release than version 1"):
        request_rollback(function, trigger="cli")


def test_rollback_to_an_unknown_version_is_refused(function):
    released(function, "1", "a" * 40)
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


def test_a_deploy_superseded_by_a_rollback_cannot_enter_its_shift(function):
    deploy = running(function, status=Status.VERIFYING)
    rollback = Deployment.objects.create(function=function, trigger="cli", kind=Deployment.Kind.ROLLBACK)
    Deployment.objects.filter(pk=deploy.pk).update(superseded_by=rollback)
    assert deploy.enter_shift() is False
    assert Deployment.objects.get(pk=deploy.pk).status == Status.VERIFYING


def test_a_rollback_does_not_claim_while_a_deploy_is_moving_the_alias(function):
    deploy = running(function, status=Status.VERIFYING)
    assert deploy.enter_shift() is True
    rollback = Deployment.objects.create(function=function, trigger="cli", kind=Deployment.Kind.ROLLBACK)
    assert queue.claim(rollback, Status.CHECKING) is False
    deploy.finish(Status.SUCCEEDED)
    assert queue.claim(rollback, Status.CHECKING) is True


def test_a_rollback_fallback_waits_while_a_deploy_is_past_its_push(function, two_releases, sent,
                                                                    django_capture_on_commit_callbacks):
    deploy = running(function, status=Status.PUBLISHING)
    with django_capture_on_commit_callbacks(execute=True):
        rollback = request_rollback(function, trigger="ui")
    assert queue.claim(rollback, Status.CHECKING) is True  # the deploy was told to stop before its shift
    assert queue.enter_lambda_steps(rollback) is False
    assert Deployment.objects.get(pk=rollback.pk).status == Status.CHECKING
    deploy.finish(Status.SUPERSEDED, "superseded", "stopped")
    assert queue.enter_lambda_steps(rollback) is True
    assert Deployment.objects.get(pk=rollback.pk).status == Status.UPDATING


def test_a_deploy_does_not_touch_the_lambda_while_a_rollback_fallback_does(function):
    rollback = running(function, Deployment.Kind.ROLLBACK, Status.WAITING)
    deploy = running(function, status=Status.PUSHING)
    assert queue.enter_lambda_steps(deploy) is False
    rollback.finish(Status.SUCCEEDED)
    assert queue.enter_lambda_steps(deploy) is True


def test_cancelling_a_queued_head_sends_the_request_behind_it(function, two_releases, sent,
                                                              django_capture_on_commit_callbacks):
    busy = running(function, Deployment.Kind.ROLLBACK, Status.CHECKING)
    with django_capture_on_commit_callbacks(execute=True):
        rollback = request_rollback(function, trigger="ui")
        deploy = request_deploy(function, trigger="webhook")
    busy.finish(Status.SUCCEEDED)
    with django_capture_on_commit_callbacks(execute=True):
        assert cancel(rollback) is True
    assert sent_pks(sent) == [deploy.pk]


def test_every_transaction_locks_the_function_before_its_deployments(function, two_releases, sent):
    running(function)
    Deployment.objects.create(function=function, trigger="webhook")
    with CaptureQueriesContext(connection) as queries:
        request_rollback(function, trigger="ui")
    sqls = [q["sql"] for q in queries.captured_queries]
    first_write = next(i for i, sql in enumerate(sqls) if sql.startswith(("UPDATE", "INSERT")))
    locks = [i for i, sql in enumerate(sqls) if sql.startswith("SELECT") and 'FROM "portal_function"' in sql
             and ("FOR UPDATE" in sql or connection.vendor != "postgresql")]
    assert locks, "the function row was never locked"
    assert locks[0] < first_write, sqls[first_write]


def test_a_request_that_must_wait_schedules_no_dispatch_and_is_sent_when_the_way_is_clear(
        function, sent, django_capture_on_commit_callbacks):
    busy = running(function)
    with django_capture_on_commit_callbacks() as callbacks:
        waiting = request_deploy(function, trigger="webhook")
    assert callbacks == []  # nothing could start: no dispatch transaction after commit
    busy.finish(Status.SUCCEEDED)
    with django_capture_on_commit_callbacks(execute=True):
        queue.dispatch(function.first_environment.pk)  # what the finishing deployment's settle does
    assert sent_pks(sent) == [waiting.pk]


def test_a_broker_that_is_down_leaves_the_row_queued_and_unsent_for_the_sweeper(function, sent,
                                                                               django_capture_on_commit_callbacks):
    sent.side_effect = ConnectionError("redis is down")
    with django_capture_on_commit_callbacks(execute=True):
        deployment = request_deploy(function, trigger="cli", ref="main")
    deployment.refresh_from_db()
    assert sent.call_count == 1 and (deployment.status, deployment.enqueued_at) == (Status.QUEUED, None)


def test_a_rollback_picks_its_target_under_the_function_lock(function, two_releases, sent):
    """Retention marks images gone under the same lock: a rollback requested meanwhile must
    see that, not a target read before it waited for the lock."""
    with CaptureQueriesContext(connection) as queries:
        request_rollback(function, trigger="ui")
    sqls = [q["sql"] for q in queries.captured_queries]
    target = [i for i, sql in enumerate(sqls) if sql.startswith("SELECT") and 'FROM "portal_deployment"' in sql
              and 'JOIN "portal_build"' in sql]
    locks = [i for i, sql in enumerate(sqls) if sql.startswith("SELECT") and 'FROM "portal_function"' in sql
             and ("FOR UPDATE" in sql or connection.vendor != "postgresql")]
    assert target and locks
    assert locks[0] < target[0], sqls[target[0]]


def test_the_rules_are_per_environment_a_deploy_to_one_neither_waits_for_nor_supersedes_another(
        function, sent, django_capture_on_commit_callbacks):
    from portal.models import Environment

    production = function.first_environment
    staging = Environment.objects.create(function=function, name="staging", position=1, lambda_name="team-hello-stg")
    busy = running(function)  # production's: a deploy building
    with django_capture_on_commit_callbacks(execute=True):
        queued = queue.request(function, environment=production, trigger="cli", ref="main")
        other = queue.request(function, environment=staging, trigger="cli", ref="main")
    assert (busy.environment, queued.environment, other.environment) == (production, production, staging)
    assert sent_pks(sent) == [other.pk]  # staging's starts now; production's waits for its own running one
    with django_capture_on_commit_callbacks(execute=True):
        rollback = queue.request(function, environment=staging, kind=Deployment.Kind.ROLLBACK, trigger="cli")
    busy.refresh_from_db(), queued.refresh_from_db(), other.refresh_from_db()
    assert (other.status, other.superseded_by_id) == (Status.SUPERSEDED, rollback.pk)  # its own environment's
    assert (busy.superseded_by_id, queued.status) == (None, Status.QUEUED)  # production's: untouched


def test_the_lambda_steps_wait_only_for_a_deployment_writing_to_the_same_lambda(function):
    from portal.models import Environment

    staging = Environment.objects.create(function=function, name="staging", position=1, lambda_name="team-hello-stg")
    running(function, status=Status.UPDATING)  # production's Lambda is being written
    same = running(function, status=Status.PUSHING)
    elsewhere = Deployment.objects.create(function=function, environment=staging, trigger="cli", status=Status.PUSHING)
    assert queue.enter_lambda_steps(same) is False
    assert queue.enter_lambda_steps(elsewhere) is True
    elsewhere.refresh_from_db()
    assert elsewhere.status == Status.UPDATING
