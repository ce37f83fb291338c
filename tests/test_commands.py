from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from portal.models import AuditEvent, Deployment


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_deploy_queues_a_deployment_of_the_branch(function):
    assert f"of hello at {function.branch}" in run("deploy", "hello")
    deployment = Deployment.objects.get()
    assert (deployment.trigger, deployment.ref, deployment.status) == ("cli", "main", "queued")


def test_deploy_refuses_an_unknown_function_and_a_short_commit(function):
    with pytest.raises(CommandError, match="no function named 'nope'"):
        run("deploy", "nope")
    with pytest.raises(CommandError, match="not a full 40-character commit SHA"):
        run("deploy", "hello", "--commit", "abc")
    assert not Deployment.objects.exists()


def test_rollback_says_why_there_is_nothing_to_roll_back(function):
    with pytest.raises(CommandError, match="no successful deployment to roll back from"):
        run("rollback", "hello", "--no-wait")


def test_cancel_ends_a_queued_deployment_and_refuses_a_finished_one(function):
    queued = Deployment.objects.create(function=function, trigger="cli")
    assert f"deployment #{queued.pk} cancelled" in run("cancel", str(queued.pk))
    with pytest.raises(CommandError, match="too late to cancel"):
        run("cancel", str(queued.pk))
    assert AuditEvent.objects.filter(action="deployment.cancel_requested").count() == 1


def test_resume_lifts_the_pause_a_rollback_set(function):
    function.paused_reason = "rolled back to version 1 by alice"
    function.save()
    assert "was paused: rolled back to version 1 by alice" in run("resume", "hello")
    function.refresh_from_db()
    assert function.paused_reason == ""
