from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from portal.models import ApiToken, AuditEvent, Deployment
from tests.conftest import released, set_environment, staged


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
    set_environment(function, paused_reason="rolled back to version 1 by alice")
    assert "was paused: rolled back to version 1 by alice" in run("resume", "hello")
    function.refresh_from_db()
    assert function.first_environment.paused_reason == ""


def test_create_api_token_prints_a_working_token_once_and_audits_it(cast, function, client):
    raw = run("create_api_token", "alice", "--name", "ci", "--function", "hello").strip()
    token = ApiToken.objects.get()
    assert ApiToken.digest(raw) == token.token_hash and raw not in token.hint
    assert (token.user, token.function, token.deploy_only, token.expires_at) == (cast["alice"], function, False, None)
    response = client.get("/api/v1/functions/hello", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200, response.content
    event = AuditEvent.objects.get(action="token.created")
    assert event.detail["hint"] == token.hint and raw not in str(event.detail)


def test_create_api_token_limits_carry_over_to_the_api(cast, function, client):
    raw = run("create_api_token", "alice", "--deploy-only", "--expires-in-days", "2").strip()
    token = ApiToken.objects.get()
    assert token.deploy_only and 1 < (token.expires_at - token.created_at).total_seconds() / 86400 <= 2
    # Deploy-only: the function's settings are not for it, though alice owns the function.
    assert client.get("/api/v1/functions/hello", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 403


@pytest.mark.parametrize("args, message", [
    (["nobody"], "no active user named 'nobody'"),
    (["alice", "--function", "nope"], "no function named 'nope'"),
    (["alice", "--name", " "], "--name must be 1 to 100 characters"),
    (["alice", "--expires-in-days", "-1"], "--expires-in-days must be 0"),
])
def test_create_api_token_refuses_bad_input_and_stores_nothing(cast, function, args, message):
    with pytest.raises(CommandError, match=message):
        run("create_api_token", *args)
    assert not ApiToken.objects.exists() and not AuditEvent.objects.filter(action="token.created").exists()


@pytest.fixture
def stages(function, sent):
    staging, production = staged(function)
    released(function, "1", "a" * 40, environment=staging)
    released(function, "2", "b" * 40, environment=staging)
    return staging, production


def test_deploy_goes_to_the_first_environment_and_refuses_another(stages):
    assert "of hello to staging at main" in run("deploy", "hello", "--environment", "staging")
    with pytest.raises(CommandError, match="production is not where hello deploys: pushes deploy to staging"):
        run("deploy", "hello", "--environment", "production")
    assert [d.environment.name for d in Deployment.objects.filter(status="queued")] == ["staging"]


def test_rollback_and_resume_name_the_environment_when_there_are_several(stages):
    staging, production = stages
    with pytest.raises(CommandError, match=r"hello has 2 environments \(staging, production\): name one"):
        run("rollback", "hello", "--no-wait")
    assert "queued rollback" in run("rollback", "hello", "--environment", "staging", "--no-wait")
    rollback = Deployment.objects.get(kind="rollback")
    assert (rollback.environment, rollback.target_version) == (staging, "1")
    with pytest.raises(CommandError, match="name one"):
        run("resume", "hello")
    assert "auto-deploy of hello (staging) resumed (was paused: rolled back to version 1" in run(
        "resume", "hello", "--environment", "staging")
    staging.refresh_from_db()
    assert staging.paused_reason == ""


def test_promote_queues_the_digest_live_upstream(stages):
    out = run("promote", "hello", "production")
    promotion = Deployment.objects.get(kind="promotion")
    assert f"queued promotion #{promotion.pk} of hello into production: version 2" in out
    assert promotion.digest == "sha256:" + "bb" * 32 and promotion.digest in out
    assert (promotion.trigger, promotion.environment.name, promotion.status) == ("cli", "production", "queued")


@pytest.mark.parametrize("args, message", [
    (["production", "--release", "1"], "'1' is not what hello \\(staging\\) serves"),
    (["staging"], "staging is where hello deploys: deploy to it instead"),
    (["qa"], "hello has no environment 'qa' \\(it has staging, production\\)"),
])
def test_promote_refuses_with_the_reason_and_queues_nothing(stages, args, message):
    with pytest.raises(CommandError, match=message):
        run("promote", "hello", *args)
    assert not Deployment.objects.filter(kind="promotion").exists()
