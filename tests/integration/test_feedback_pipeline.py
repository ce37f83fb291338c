"""GitLab commit status, notifications and drift on the real local stack: real
deployments through a real worker, a real feedback worker posting to small HTTP
servers on 127.0.0.1, drift made with boto3 directly on the local plane."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from deploy import aws, lambdas
from portal.core import crypto
from portal.deployments import requesting
from portal.feedback import drift
from portal.feedback import status as feedback
from portal.models import AuditEvent, DriftState, NotificationAttempt
from tests.conftest import wait_for
from tests.http_receiver import Receiver
from tests.integration.conftest import Worker, wait_done

pytestmark = pytest.mark.integration


@pytest.fixture
def feedback_worker(worker, faults, tmp_path):
    """The feedback queue's worker, one process (so its messages run in the order sent),
    with short timeouts: a hanging receiver costs seconds here, not minutes."""
    proc = Worker(tmp_path / "feedback.log", faults, queues="feedback", concurrency=1,
                  env={"SLIPWAY_NOTIFY_TIMEOUT": "1", "SLIPWAY_NOTIFY_ATTEMPTS": "3",
                       "SLIPWAY_NOTIFY_BACKOFF_MS": "100", "SLIPWAY_BASE_URL": "https://slipway.example.org"})
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def gitlab():
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def hook():
    server = Receiver(status=200).start()
    yield server
    server.stop()


def configure(function, gitlab_url: str, hook_url: str, token: str, secret: str) -> None:
    reports = function.feedback_settings
    reports.gitlab_api_url, reports.gitlab_project = gitlab_url, "team/fx"
    reports.gitlab_status_token = crypto.encrypt(token)
    reports.notify_webhook_url = hook_url
    reports.notify_webhook_secret = crypto.encrypt(secret)
    reports.save()


def states(server: Receiver, sha: str) -> list[str]:
    return [r.json()["state"] for r in server.requests if r.path.endswith(f"/statuses/{sha}")]


def test_a_deployment_reports_in_order_and_drift_is_detected_audited_once_notified_and_accepted(
        fixture_function, repo, worker, feedback_worker, gitlab, hook):
    token, secret = "glpat-" + hashlib.sha256(repo.path.name.encode()).hexdigest()[:20], feedback.new_webhook_secret()
    configure(fixture_function, gitlab.url, hook.url + "/notify", token, secret)
    sha = repo.release("one")
    deployment = wait_done(requesting.request_deploy(fixture_function, trigger="api", commit=sha))
    assert deployment.status == "succeeded", deployment.error_message

    wait_for(lambda: states(gitlab, sha)[-1:] == ["success"], 60, "GitLab to hear of the success")
    assert states(gitlab, sha) == ["pending", "running", "success"]
    last = gitlab.requests[-1]
    assert last.path == f"/api/v4/projects/team%2Ffx/statuses/{sha}" and last.headers["private-token"] == token
    assert last.json()["target_url"] == f"https://slipway.example.org/deployments/{deployment.pk}/"
    assert f"version {deployment.version} is live" in last.json()["description"]
    # The function's first (oldest) environment keeps the name merge checks already require.
    assert last.json()["name"] == feedback.status_name(deployment.environment) == f"slipway/{fixture_function.name}"

    # The worker recorded what it left in Lambda at its shift.
    expected = DriftState.objects.get(environment__function=fixture_function).expected_state
    assert expected["alias_version"] == deployment.version and expected["memory_mb"] == 256
    assert expected["image_digest"] == deployment.build.digest
    assert drift.check(fixture_function).outcome == "clean"

    # Someone changes memory and the alias behind Slipway's back.
    name = fixture_function.first_environment.lambda_name
    aws.client("lambda").update_function_configuration(FunctionName=name, MemorySize=512)
    lambdas.wait_updated(name)
    other = aws.client("lambda").publish_version(FunctionName=name)["Version"]
    aws.client("lambda").update_alias(FunctionName=name, Name=fixture_function.first_environment.alias,
                                      FunctionVersion=other)

    result = drift.check(fixture_function)
    assert result.outcome == "drift"
    changed = {d["field"]: (d["expected"], d["actual"]) for d in result.differences}
    assert changed == {"alias_version": (deployment.version, other), "memory_mb": ("256", "512")}, changed
    assert drift.check(fixture_function).outcome == "unchanged"
    assert AuditEvent.objects.filter(function=fixture_function, action="function.drift_detected").count() == 1

    def drift_notice():
        return [r for r in hook.requests if r.headers.get("x-slipway-event") == "drift"]
    wait_for(drift_notice, 60, "the drift notification")
    notice = drift_notice()
    assert len(notice) == 1
    stamp = notice[0].headers["x-slipway-timestamp"]
    signed = hmac.new(secret.encode(), f"{stamp}.".encode() + notice[0].body, hashlib.sha256).hexdigest()
    assert notice[0].headers["x-slipway-signature"] == f"sha256={signed}"
    assert "memory (MB): 256 → 512" in notice[0].json()["text"]

    drift.accept(fixture_function, user=None)
    accepted = DriftState.objects.get(environment__function=fixture_function).expected_state
    assert accepted["memory_mb"] == 512
    assert accepted["alias_version"] == other
    assert drift.check(fixture_function).outcome == "clean"


def test_a_refusing_gitlab_and_a_hanging_webhook_never_hold_up_or_fail_a_deployment(
        fixture_function, repo, worker, feedback_worker, gitlab, hook):
    gitlab.mode, hook.mode = "500", "hang"
    configure(fixture_function, gitlab.url, hook.url, "glpat-" + "x" * 20, feedback.new_webhook_secret())
    fixture_function.smoke_event = {"fail": True}  # the smoke invoke answers an error: the deploy fails on its own
    fixture_function.save()
    sha = repo.release("broken")
    deployment = wait_done(requesting.request_deploy(fixture_function, trigger="api", commit=sha))
    assert (deployment.status, deployment.error_code) == ("failed", "smoke-error-result")

    def webhook_attempts():
        return list(NotificationAttempt.objects.filter(function=fixture_function, channel="webhook"))
    wait_for(lambda: len(webhook_attempts()) == 3, 60, "three timed-out webhook attempts")
    attempts = webhook_attempts()
    assert all("timed out" in a.detail and a.status_code is None and a.event == "deploy_failed" for a in attempts)
    assert all(a.created_at > deployment.finished_at for a in attempts)  # it had ended before they even began
    wait_for(lambda: NotificationAttempt.objects.filter(deployment=deployment, channel="gitlab", event="failed",
                                                        ).count() == 3, 60, "the failed status's attempts")
    posted = NotificationAttempt.objects.filter(deployment=deployment, channel="gitlab")
    assert set(posted.values_list("status_code", flat=True)) == {500}
    assert set(posted.values_list("event", flat=True)) == {"pending", "running", "failed"}
    assert max(posted.values_list("attempt", flat=True)) == 3  # bounded
    deployment.refresh_from_db()
    assert deployment.status == "failed" and deployment.error_code == "smoke-error-result"
    assert json.loads(hook.requests[0].body)["deployment"]["id"] == deployment.pk


def test_gitlab_sees_the_deployment_running_then_succeeded(fixture_function, repo, worker, feedback_worker):
    """GitLab's Environments and Deployments APIs, checked as documented (tests/fake_gitlab.py)."""
    from tests.fake_gitlab import FakeGitLab

    token = "glpat-" + hashlib.sha256(repo.path.name.encode()).hexdigest()[:20]
    fake = FakeGitLab(project="team/fx", token=token, refs={fixture_function.branch: False}).start()
    try:
        configure(fixture_function, fake.url, "", token, "")
        sha = repo.release("one")
        deployment = wait_done(requesting.request_deploy(fixture_function, trigger="api", commit=sha))
        assert deployment.status == "succeeded", deployment.error_message
        wait_for(lambda: fake.of("PUT", "/deployments/"), 30, "GitLab to hear the deployment's end")
        calls = [(c.method, c.path[len(fake.prefix):], c.status) for c in fake.calls
                 if "/statuses/" not in c.path]
        assert calls == [("GET", "/environments", 200), ("POST", "/environments", 201),
                         ("POST", "/deployments", 201), ("PUT", "/deployments/900", 200)]
        name = f"{deployment.environment.name}/{fixture_function.name}"
        assert fake.of("POST", "/deployments")[0].body == {"environment": name, "sha": sha,
                                                           "ref": fixture_function.branch, "tag": False,
                                                           "status": "running"}
        assert fake.deployments[0]["status"] == "success" and fake.errors == []
        deployment.refresh_from_db()
        assert (deployment.gitlab_deployment_id, deployment.gitlab_deployment_final) == (900, "success")
    finally:
        fake.stop()
