"""GitLab commit status, notifications and drift: the clients against a real HTTP
server on 127.0.0.1, the hooks through the send_task seam, forms, access, masking.
The end-to-end runs with a real worker are in tests/integration/test_feedback_pipeline.py."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from unittest import mock

import pytest
from django.core import mail
from django.urls import reverse

from deploy import outbound
from portal.celery import COMMIT_STATUS_TASK, NOTIFY_TASK
from portal.core import crypto
from portal.deployments import queue, requesting
from portal.feedback import configure, drift
from portal.feedback import delivery as work
from portal.feedback import status as feedback
from portal.feedback.forms import FeedbackForm
from portal.models import AuditEvent, Deployment, DriftState, FeedbackSettings, NotificationAttempt
from tests.conftest import set_environment

SHA = "3f9c2a1b7d4e" + "0" * 28


@pytest.fixture
def quick(settings):
    settings.SLIPWAY_NOTIFY_TIMEOUT = 1
    settings.SLIPWAY_NOTIFY_ATTEMPTS = 3
    settings.SLIPWAY_NOTIFY_BACKOFF = 0.05
    settings.SLIPWAY_BASE_URL = "https://slipway.example.org"
    return settings


def reporting(function, url: str, token: str = "glpat-test-token-123"):
    reports = function.feedback_settings
    reports.gitlab_api_url, reports.gitlab_project = url, "team/hello"
    reports.gitlab_status_token = crypto.encrypt(token)
    reports.save()
    return function


def settings_of(function) -> FeedbackSettings:
    """`function`'s feedback settings as stored."""
    return FeedbackSettings.objects.get(function=function)


def drifted(function, **state):
    """Record a drift state on `function` (expected_state, drift_observed, drift_fingerprint…)."""
    DriftState.objects.filter(environment__function=function).update(**state)
    return function


def queued(function, **fields) -> Deployment:
    return Deployment.objects.create(function=function, trigger="api", commit_sha=SHA, ref="main", **fields)


# --- The commit status client against a local server ------------------------------------------


def test_it_posts_a_commit_status_as_gitlab_documents_it(db, function, receiver, quick):
    token = "glpat-" + hashlib.sha256(str(time.time()).encode()).hexdigest()[:20]
    reporting(function, receiver.url, token)
    deployment = queued(function)
    assert work.report_commit_status(deployment.pk, "pending") == "pending"
    assert len(receiver.requests) == 1
    got = receiver.requests[0]
    assert (got.method, got.path) == ("POST", f"/api/v4/projects/team%2Fhello/statuses/{SHA}")
    assert got.headers["private-token"] == token
    assert got.headers["content-type"] == "application/json"
    body = got.json()
    assert body["state"] == "pending" and body["name"] == "slipway/hello" and body["ref"] == "main"
    assert body["target_url"] == f"https://slipway.example.org/deployments/{deployment.pk}/"
    assert "queued" in body["description"]
    deployment.refresh_from_db()
    assert deployment.gitlab_reported == "pending" and deployment.gitlab_lease_until is None
    attempt = NotificationAttempt.objects.get(deployment=deployment)
    assert (attempt.channel, attempt.event, attempt.outcome, attempt.status_code) == ("gitlab", "pending", "ok", 201)
    assert token not in attempt.target + attempt.detail


@pytest.mark.postgres
def test_it_never_posts_a_state_older_than_one_gitlab_has(db, function, receiver, quick):
    reporting(function, receiver.url)
    deployment = queued(function, status=Deployment.Status.SUCCEEDED, version="3")
    assert work.report_commit_status(deployment.pk, "success") == "success"
    assert work.report_commit_status(deployment.pk, "running").startswith("GitLab already has success")
    assert work.report_commit_status(deployment.pk, "pending").startswith("GitLab already has")
    assert [r.json()["state"] for r in receiver.requests] == ["success"]


@pytest.mark.postgres
def test_a_task_that_finds_the_lease_taken_leaves_and_the_holder_posts_the_newer_state(db, function, receiver,
                                                                                        quick):
    reporting(function, receiver.url)
    deployment = queued(function, status=Deployment.Status.BUILDING)
    real_post = work._post
    overtaken = []

    def post_then_finish(d, state):
        # While "running" is being posted, the deployment ends and its task arrives: the lease is taken.
        if state == "running":
            Deployment.objects.filter(pk=d.pk).update(status=Deployment.Status.SUCCEEDED, version="4")
            overtaken.append(work.report_commit_status(d.pk, "success"))
        return real_post(d, state)

    with mock.patch.object(work, "_post", side_effect=post_then_finish):
        assert work.report_commit_status(deployment.pk, "running") == "success"
    assert overtaken and overtaken[0].startswith("busy")
    assert [r.json()["state"] for r in receiver.requests] == ["running", "success"]


def test_a_failing_gitlab_is_tried_a_bounded_number_of_times_and_recorded(db, function, receiver, quick):
    receiver.mode = "500"
    reporting(function, receiver.url)
    deployment = queued(function, status=Deployment.Status.FAILED, error_code="build-failed")
    work.report_commit_status(deployment.pk, "failed")
    attempts = list(NotificationAttempt.objects.filter(deployment=deployment).order_by("attempt"))
    assert [a.attempt for a in attempts] == [1, 2, 3] and len(receiver.requests) == 3
    assert {a.outcome for a in attempts} == {"failed"} and {a.status_code for a in attempts} == {500}
    deployment.refresh_from_db()
    assert deployment.status == "failed" and deployment.gitlab_reported == "failed"  # not posted again later


def test_a_gitlab_that_refuses_the_token_is_not_asked_again(db, function, receiver, quick):
    receiver.status = 401
    reporting(function, receiver.url)
    work.report_commit_status(queued(function).pk, "pending")
    assert len(receiver.requests) == 1
    assert NotificationAttempt.objects.get().status_code == 401


def test_a_redirect_is_not_followed_nor_retried(db, function, receiver, quick):
    receiver.status = 302
    reporting(function, receiver.url)
    work.report_commit_status(queued(function).pk, "pending")
    assert len(receiver.requests) == 1
    assert NotificationAttempt.objects.get().status_code == 302


def test_a_hanging_gitlab_ends_by_its_own_timeout(db, function, receiver, quick):
    receiver.mode = "hang"
    reporting(function, receiver.url)
    deployment = queued(function)
    started = time.monotonic()
    work.report_commit_status(deployment.pk, "pending")
    took = time.monotonic() - started
    attempts = list(NotificationAttempt.objects.filter(deployment=deployment))
    assert len(attempts) == 3 and all("timed out" in a.detail for a in attempts), [a.detail for a in attempts]
    assert all(a.status_code is None for a in attempts)
    assert took < 3 * (1 + 1) + 1  # three 1 s timeouts and the backoff, never the receiver's 60 s


# --- Hooks: the transitions send one task each, after commit ------------------------------------


def test_a_request_sends_its_pending_status_after_commit(function, sent, django_capture_on_commit_callbacks):
    reporting(function, "https://gitlab.example.org")
    with django_capture_on_commit_callbacks(execute=True):
        deployment = requesting.request_deploy(function, trigger="api", commit=SHA)
    calls = [c for c in sent.call_args_list if c.args[0] == COMMIT_STATUS_TASK]
    assert [c.kwargs["args"] for c in calls] == [[deployment.pk, "pending"]]


def test_no_status_is_sent_for_a_function_that_does_not_report(function, sent,
                                                                 django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        requesting.request_deploy(function, trigger="api", commit=SHA)
    assert sent.call_args_list and all(c.args[0] != COMMIT_STATUS_TASK for c in sent.call_args_list)


def test_a_superseded_queued_deploy_is_canceled_in_gitlab(function, sent, django_capture_on_commit_callbacks):
    reporting(function, "https://gitlab.example.org")
    first = requesting.request_deploy(function, trigger="api", commit=SHA)
    with django_capture_on_commit_callbacks(execute=True):
        second = requesting.request_deploy(function, trigger="api", commit="a" * 40)
    states = [c.kwargs["args"] for c in sent.call_args_list if c.args[0] == COMMIT_STATUS_TASK]
    assert [first.pk, "canceled"] in states and [second.pk, "pending"] in states


def test_the_claim_sends_running(function, sent, django_capture_on_commit_callbacks):
    reporting(function, "https://gitlab.example.org")
    deployment = queued(function)
    with django_capture_on_commit_callbacks(execute=True):
        assert queue.claim(Deployment.objects.select_related("function").get(pk=deployment.pk), "source", "t")
    assert [c.kwargs["args"] for c in sent.call_args_list if c.args[0] == COMMIT_STATUS_TASK] == [
        [deployment.pk, "running"]]


def test_a_broker_that_is_down_never_fails_the_request(function, sent, django_capture_on_commit_callbacks):
    reporting(function, "https://gitlab.example.org")
    sent.side_effect = OSError("broker down")
    with django_capture_on_commit_callbacks(execute=True):
        deployment = requesting.request_deploy(function, trigger="api", commit=SHA)
    assert Deployment.objects.get(pk=deployment.pk).status == "queued"


def test_resume_notifies_naming_the_environment(function, cast, sent, django_capture_on_commit_callbacks):
    function.feedback_settings.notify_members.add(cast["alice"])
    with django_capture_on_commit_callbacks(execute=True):
        requesting.resume_auto_deploy(function, user=cast["bob"], trigger="ui")
    calls = [c.kwargs["args"] for c in sent.call_args_list if c.args[0] == NOTIFY_TASK]
    assert calls == [[function.pk, "resume", None, {"by": "bob", "environment": "production"}]]


# --- Outgoing webhooks and email ----------------------------------------------------------------


def test_the_webhook_is_slack_compatible_signed_and_timestamped(db, function, cast, receiver, quick):
    secret = feedback.new_webhook_secret()
    reports = function.feedback_settings
    reports.notify_webhook_url = receiver.url + "/hooks/slipway"
    reports.notify_webhook_secret = crypto.encrypt(secret)
    reports.save()
    deployment = queued(function, status="failed", error_code="smoke-error-result", error_message="it broke")
    before = int(time.time())
    sent = work.send_notification(function.pk, "deploy_failed", deployment.pk, {})
    assert sent == {"webhook": True}
    got = receiver.requests[0]
    assert got.path == "/hooks/slipway" and got.headers["x-slipway-event"] == "deploy_failed"
    stamp = int(got.headers["x-slipway-timestamp"])
    assert before <= stamp <= time.time() + 1
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + got.body, hashlib.sha256).hexdigest()
    assert got.headers["x-slipway-signature"] == f"sha256={expected}"
    body = got.json()
    assert "hello (production): deploy #" in body["text"] and "smoke-error-result: it broke" in body["text"]
    assert body["function"] == "hello" and body["environment"] == "production"
    assert body["deployment"]["id"] == deployment.pk and body["deployment"]["status"] == "failed"
    assert body["url"].endswith(f"/deployments/{deployment.pk}/")


def test_the_signature_covers_the_timestamp(db):
    body = b'{"text": "x"}'
    assert outbound.signature("k", 100, body) != outbound.signature("k", 101, body)


def test_a_webhook_that_answers_500_is_retried_a_bounded_number_of_times(db, function, receiver, quick):
    receiver.mode = "500"
    reports = function.feedback_settings
    reports.notify_webhook_url = receiver.url
    reports.notify_webhook_secret = crypto.encrypt(feedback.new_webhook_secret())
    reports.save()
    assert work.send_notification(function.pk, "resume", None, {"by": "bob"}) == {"webhook": False}
    attempts = NotificationAttempt.objects.filter(function=function, channel="webhook")
    assert sorted(attempts.values_list("attempt", flat=True)) == [1, 2, 3] and len(receiver.requests) == 3


def test_a_webhook_without_a_secret_is_not_called_and_says_why(db, function, receiver, quick):
    reports = function.feedback_settings
    reports.notify_webhook_url = receiver.url
    reports.save()
    work.send_notification(function.pk, "resume", None, {"by": "bob"})
    assert receiver.requests == []
    assert "no signing secret" in NotificationAttempt.objects.get(function=function).detail


def test_chosen_members_who_still_are_members_get_an_email(db, function, cast, quick):
    function.feedback_settings.notify_members.add(cast["alice"], cast["charlie"], cast["dave"])  # dave has no role
    work.send_notification(function.pk, "resume", None, {"by": "bob"})
    assert len(mail.outbox) == 1
    assert sorted(mail.outbox[0].to) == ["alice@example.org", "charlie@example.org"]
    assert "auto-deploy resumed by bob" in mail.outbox[0].subject
    assert NotificationAttempt.objects.get(channel="email").outcome == "ok"


# --- Forms and services ---------------------------------------------------------------------------


def _form(function, **data):
    base = {"gitlab_api_url": "", "gitlab_project": "", "notify_webhook_url": "", "gitlab_token": ""}
    return FeedbackForm({**base, **data}, instance=settings_of(function))


@pytest.mark.parametrize("url, error", [
    ("ftp://gitlab.example.org", "must start with https://"),
    ("https://user:pw@gitlab.example.org", "must not carry credentials"),
    ("https://", "has no host"),
    ("https://gitlab.example.org/#x", "#fragment"),
    ("https://gitlab.example.org:99999", "invalid port"),
])
def test_the_form_refuses_receiver_urls_with_a_clear_error(function, url, error):
    form = _form(function, notify_webhook_url=url)
    assert not form.is_valid()
    assert error in str(form.errors["notify_webhook_url"])


def test_plain_http_is_refused_outside_local_mode(function, settings):
    settings.LOCAL_MODE = False
    form = _form(function, notify_webhook_url="http://hooks.example.org/x")
    assert not form.is_valid() and "must use https://" in str(form.errors["notify_webhook_url"])


def test_commit_statuses_need_url_project_and_token_together(function):
    form = _form(function, gitlab_api_url="https://gitlab.example.org", gitlab_project="team/hello")
    assert not form.is_valid() and "a project access token missing" in str(form.non_field_errors())


def test_a_bad_project_is_refused(function):
    form = _form(function, gitlab_api_url="https://gitlab.example.org", gitlab_project="../x",
                 gitlab_token="glpat-abcdefgh")
    assert not form.is_valid() and "project's path" in form.errors["gitlab_project"][0]


def test_the_token_is_stored_encrypted_audited_without_its_value_and_kept_when_left_empty(function, cast):
    token = "glpat-" + hashlib.sha256(b"runtime").hexdigest()[:20]
    form = _form(function, gitlab_api_url="https://gitlab.example.org", gitlab_project="42", gitlab_token=token)
    assert form.is_valid(), form.errors
    configure.update_feedback(form, user=cast["alice"])
    stored = settings_of(function).gitlab_status_token
    assert token not in stored and crypto.decrypt(stored) == token
    event = AuditEvent.objects.get(action="function.feedback_edited")
    assert event.detail["gitlab_token"] == "(set)" and token not in json.dumps(event.detail)
    again = _form(function, gitlab_api_url="https://gitlab.example.org", gitlab_project="42")
    assert again.is_valid(), again.errors
    configure.update_feedback(again, user=cast["alice"])
    assert crypto.decrypt(settings_of(function).gitlab_status_token) == token


def test_only_members_can_be_chosen_for_email(function, cast):
    form = _form(function, notify_members=[cast["dave"].pk])
    assert not form.is_valid() and "notify_members" in form.errors


# --- Pages and access ------------------------------------------------------------------------------


@pytest.mark.parametrize("user, url, code", [
    ("dave", "portal-feedback", 404), ("charlie", "portal-feedback", 403), ("bob", "portal-feedback", 403),
    ("alice", "portal-feedback", 200),
])
def test_feedback_settings_are_for_owners(client, function, cast, user, url, code):
    client.force_login(cast[user])
    assert client.get(reverse(url, args=[function.name])).status_code == code


@pytest.mark.parametrize("user, url, code", [
    ("dave", "portal-drift-check", 404), ("charlie", "portal-drift-check", 403),
    ("charlie", "portal-drift-accept", 403), ("bob", "portal-drift-accept", 403),
    ("dave", "portal-feedback-webhook-secret", 404), ("bob", "portal-feedback-webhook-secret", 403),
])
def test_drift_and_secret_actions_check_the_role(client, function, cast, user, url, code):
    client.force_login(cast[user])
    assert client.post(reverse(url, args=[function.name]), {"action": "generate"}).status_code == code


def test_the_token_is_never_shown_again(client, function, cast):
    token = "glpat-" + hashlib.sha256(b"shown-once").hexdigest()[:20]
    client.force_login(cast["alice"])
    response = client.post(reverse("portal-feedback", args=[function.name]), {
        "gitlab_api_url": "https://gitlab.example.org", "gitlab_project": "42", "gitlab_token": token})
    assert response.status_code == 302
    page = client.get(reverse("portal-feedback", args=[function.name])).content.decode()
    assert "a token is stored" in page and token not in page


def test_the_signing_secret_is_shown_once(client, function, cast):
    client.force_login(cast["alice"])
    response = client.post(reverse("portal-feedback-webhook-secret", args=[function.name]), {"action": "generate"})
    assert response["Cache-Control"] == "no-store"
    secret = crypto.decrypt(settings_of(function).notify_webhook_secret)
    assert secret in response.content.decode()
    assert secret not in client.get(reverse("portal-feedback", args=[function.name])).content.decode()


# --- Drift: comparison, masking, recorded once, accepted --------------------------------------------

EXPECTED = {"alias_version": "2", "image_digest": "sha256:" + "a" * 64, "memory_mb": 256, "timeout_s": 30,
            "architecture": "x86_64", "environment": {"MODE": "fast", "API_KEY": "s3cret-value"}}


def test_differences_mask_secret_values():
    observed = {**EXPECTED, "memory_mb": 512, "environment": {"MODE": "slow", "API_KEY": "other-secret"}}
    found = {d["field"]: d for d in drift.differences(EXPECTED, observed, ["API_KEY"])}
    assert set(found) == {"memory_mb", "environment.MODE", "environment.API_KEY"}
    assert (found["memory_mb"]["expected"], found["memory_mb"]["actual"]) == ("256", "512")
    assert found["environment.MODE"]["actual"] == "slow"
    assert "s3cret" not in json.dumps(found) and "other-secret" not in json.dumps(found)


@pytest.mark.postgres
def test_a_drift_is_recorded_and_notified_once_then_accepted(function, cast, sent,
                                                             django_capture_on_commit_callbacks):
    set_environment(function, secret_keys=["API_KEY"])
    drifted(function, expected_state=EXPECTED)
    function.feedback_settings.notify_members.add(cast["alice"])
    observed = {**EXPECTED, "alias_version": "1", "environment": {"MODE": "fast", "API_KEY": "changed"}}
    with mock.patch("deploy.aws.client", autospec=True) as client:
        lam = client.return_value
        lam.get_function.return_value = {
            "Configuration": {"MemorySize": 256, "Timeout": 30, "Architectures": ["x86_64"],
                              "Environment": {"Variables": observed["environment"]}},
            "Code": {"ImageUri": "1.dkr.ecr.us-east-1.amazonaws.com/team/hello@" + EXPECTED["image_digest"]}}
        lam.get_alias.return_value = {"FunctionVersion": "1", "RevisionId": "r"}
        with django_capture_on_commit_callbacks(execute=True):
            assert drift.check(function).outcome == "drift"
            assert drift.check(function).outcome == "unchanged"
    events = AuditEvent.objects.filter(action="function.drift_detected")
    assert events.count() == 1 and "changed" not in json.dumps(events[0].detail)
    notices = [c.kwargs["args"] for c in sent.call_args_list if c.args[0] == NOTIFY_TASK]
    assert len(notices) == 1 and notices[0][1] == "drift" and "changed" not in json.dumps(notices[0])
    drift.accept(function, user=cast["alice"])
    state = DriftState.objects.get(environment__function=function)
    assert state.expected_state == {**observed, "alias_routing": {}} and not state.drift_fingerprint
    assert AuditEvent.objects.filter(action="function.drift_accepted").count() == 1
    with pytest.raises(drift.Refused):
        drift.accept(function, user=cast["alice"])


def test_weights_set_on_the_alias_outside_slipway_are_drift():
    observed = {**EXPECTED, "alias_routing": {"3": 0.25}}
    found = {d["field"]: d for d in drift.differences(EXPECTED, observed)}
    assert set(found) == {"alias_routing"}
    assert (found["alias_routing"]["expected"], found["alias_routing"]["actual"]) == ("{}", "{'3': 0.25}")
    assert drift.differences(EXPECTED, {**EXPECTED, "alias_routing": {}}) == [], "no weights is what Slipway left"


def test_no_drift_check_while_a_deployment_runs(function):
    drifted(function, expected_state=EXPECTED)
    queued(function, status=Deployment.Status.UPDATING)
    with mock.patch("deploy.aws.client", autospec=True) as client:
        assert drift.check(function).outcome == "skipped"
    client.assert_not_called()


# --- The API ------------------------------------------------------------------------------------------


@pytest.fixture
def api(client, cast):
    from portal.models import ApiToken
    from tests.api_client import Api, openapi

    made = Api(client, openapi(client))
    made.tokens = {name: ApiToken.issue(user, f"{name}'s")[1] for name, user in cast.items()}
    return made


@pytest.mark.parametrize("user, code", [("dave", 404), ("charlie", 403), ("bob", 403), ("alice", 200)])
def test_the_feedback_api_is_for_owners(api, function, user, code):
    assert api.call("get", "/functions/{name}/feedback", name="hello", token=api.tokens[user]).status_code == code


def test_the_api_sets_the_token_write_only_and_refuses_bad_input_with_field_errors(api, function, cast):
    token = "glpat-" + hashlib.sha256(b"api").hexdigest()[:20]
    bad = api.call("patch", "/functions/{name}/feedback", {"notify_webhook_url": "https://u:p@hooks.example.org"},
                   name="hello", token=api.tokens["alice"])
    assert bad.status_code == 400 and "credentials" in bad.json()["error"]["fields"]["notify_webhook_url"][0]
    unknown = api.call("patch", "/functions/{name}/feedback", {"notify_members": ["nobody"]}, name="hello",
                       token=api.tokens["alice"])
    assert unknown.status_code == 400 and "nobody" in json.dumps(unknown.json())
    ok = api.call("patch", "/functions/{name}/feedback", {
        "gitlab_api_url": "https://gitlab.example.org", "gitlab_project": "team/hello", "gitlab_token": token,
        "notify_members": ["alice", "bob"]}, name="hello", token=api.tokens["alice"])
    assert ok.status_code == 200, ok.json()
    assert ok.json()["gitlab_token_set"] is True and ok.json()["notify_members"] == ["alice", "bob"]
    assert token not in ok.content.decode()
    assert crypto.decrypt(settings_of(function).gitlab_status_token) == token


def test_the_drift_api_shows_masked_differences_and_checks_the_role(api, function):
    set_environment(function, secret_keys=["API_KEY"])
    drifted(function, expected_state=EXPECTED, drift_fingerprint="f" * 64,
            drift_observed={**EXPECTED, "environment": {"MODE": "fast", "API_KEY": "leaked?"}})
    shown = api.call("get", "/functions/{name}/drift", name="hello", token=api.tokens["charlie"])
    assert shown.status_code == 200 and shown.json()["changed_outside_slipway"] is True
    assert "leaked?" not in shown.content.decode() and "s3cret" not in shown.content.decode()
    assert api.call("post", "/functions/{name}/drift/accept", name="hello", token=api.tokens["bob"]).status_code == 403
    assert api.call("post", "/functions/{name}/drift/check", name="hello", token=api.tokens["charlie"]
                    ).status_code == 403
    accepted = api.call("post", "/functions/{name}/drift/accept", name="hello", token=api.tokens["alice"])
    assert accepted.status_code == 200 and accepted.json()["changed_outside_slipway"] is False


def test_the_function_page_shows_drift_masked_to_members_and_accept_to_owners(client, function, cast):
    set_environment(function, secret_keys=["API_KEY"])
    drifted(function, expected_state=EXPECTED, drift_fingerprint="f" * 64,
            drift_observed={**EXPECTED, "memory_mb": 1024, "environment": {"MODE": "fast", "API_KEY": "new-one"}})
    client.force_login(cast["charlie"])
    page = client.get(reverse("portal-function", args=[function.name])).content.decode()
    assert "Changed outside Slipway" in page and "memory (MB)" in page and "1024" in page
    assert "new-one" not in page and "s3cret" not in page and "Accept as the new state" not in page
    client.force_login(cast["alice"])
    assert "Accept as the new state" in client.get(reverse("portal-function", args=[function.name])).content.decode()


def test_the_deployment_page_lists_its_commit_status_attempts(client, function, cast):
    deployment = queued(function, status="succeeded")
    NotificationAttempt.objects.create(function=function, deployment=deployment, channel="gitlab", event="success",
                                       outcome="failed", status_code=500, detail="500 Internal Server Error")
    client.force_login(cast["charlie"])
    page = client.get(reverse("portal-deployment", args=[deployment.pk])).content.decode()
    assert "GitLab commit status" in page and "500 Internal Server Error" in page


def test_the_sweep_resends_an_end_gitlab_never_had_within_a_bounded_window(function, sent):
    from datetime import timedelta

    from django.utils import timezone

    from workers import tasks

    reporting(function, "https://gitlab.example.org")
    now = timezone.now()
    lost = queued(function, status="succeeded", gitlab_reported="running", finished_at=now - timedelta(minutes=3))
    queued(function, status="succeeded", gitlab_reported="running", finished_at=now - timedelta(seconds=10))
    queued(function, status="failed", gitlab_reported="running", finished_at=now - timedelta(hours=1))
    queued(function, status="succeeded", gitlab_reported="success", finished_at=now - timedelta(minutes=3))
    assert tasks.sweep()["commit_statuses_resent"] == [lost.pk]
    assert [c.kwargs["args"] for c in sent.call_args_list if c.args[0] == COMMIT_STATUS_TASK] == [
        [lost.pk, "success"]]
