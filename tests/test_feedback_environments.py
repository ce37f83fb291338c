"""Feedback per environment: commit status names, a soak reported as pending, the
environment in notifications, drift that cancels soaks, and what a webhook delivery
caused downstream."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from django.urls import reverse
from django.utils import timezone

from portal.celery import COMMIT_STATUS_TASK, NOTIFY_TASK
from portal.deployments import request_promotion
from portal.feedback import delivery as work
from portal.feedback import drift
from portal.feedback import status as feedback
from portal.hooks.caused import promotions_caused
from portal.models import AuditEvent, Deployment, DriftState, NotificationAttempt, WebhookDelivery
from tests.conftest import add_environment, released, staged
from tests.test_feedback import EXPECTED, reporting

SHA = "a1b2c3d4e5f6" + "0" * 28
Status = Deployment.Status


@pytest.fixture
def quick(settings):
    settings.SLIPWAY_NOTIFY_TIMEOUT = 1
    settings.SLIPWAY_NOTIFY_ATTEMPTS = 1
    settings.SLIPWAY_BASE_URL = "https://slipway.example.org"
    return settings


def soaking_promotion(function, staging, production) -> Deployment:
    """Staging's release live, and its automatic promotion soaking into production."""
    live = released(function, "3", SHA, environment=staging, finished_at=timezone.now())
    return request_promotion(function, production, trigger="promotion", upstream=live, soak=True)


def lambda_reporting(client, *, memory: int) -> None:
    """The one AWS seam: Lambda answers with EXPECTED (the alias on its version), but `memory`."""
    lam = client.return_value
    lam.get_function.return_value = {
        "Configuration": {"MemorySize": memory, "Timeout": 30, "Architectures": ["x86_64"],
                          "Environment": {"Variables": EXPECTED["environment"]}},
        "Code": {"ImageUri": "1.dkr.ecr.us-east-1.amazonaws.com/team/hello@" + EXPECTED["image_digest"]}}
    lam.get_alias.return_value = {"FunctionVersion": EXPECTED["alias_version"], "RevisionId": "r"}


# --- Commit status names ----------------------------------------------------------------------


def test_the_migrated_environment_keeps_the_short_name_even_when_staging_moves_in_front(function):
    production = function.first_environment
    assert feedback.status_name(production) == "slipway/hello"
    staging, production = staged(function)
    assert (staging.position, production.position) == (0, 1)
    assert feedback.status_name(production) == "slipway/hello"
    assert feedback.status_name(staging) == "slipway/hello/staging"


def test_every_environment_added_later_gets_its_own_suffix_under_the_configured_prefix(function, settings):
    settings.SLIPWAY_GITLAB_STATUS_NAME = "deploys"
    canary = add_environment(function, "canary", "team-hello-canary", 1)
    eu = add_environment(function, "eu", "team-hello-eu", 2)
    assert [feedback.status_name(env) for env in (function.first_environment, canary, eu)] == [
        "deploys/hello", "deploys/hello/canary", "deploys/hello/eu"]


def test_a_promotion_posts_under_its_environments_name(db, function, receiver, quick):
    staging, production = staged(function)
    reporting(function, receiver.url)
    to_staging = Deployment.objects.create(function=function, environment=staging, trigger="api", commit_sha=SHA,
                                           ref="main")
    to_production = Deployment.objects.create(function=function, environment=production, trigger="ui",
                                              kind=Deployment.Kind.PROMOTION, commit_sha=SHA, ref=SHA)
    work.report_commit_status(to_staging.pk, "pending")
    work.report_commit_status(to_production.pk, "pending")
    names = [(r.json()["name"], r.json()["description"]) for r in receiver.requests]
    assert names == [("slipway/hello/staging", "deploy of hello to staging: queued"),
                     ("slipway/hello", "promotion of hello to production: queued")]


# --- A soak is pending ------------------------------------------------------------------------


def test_a_soaking_promotion_is_pending_not_canceled():
    assert feedback.gitlab_state(Status.SOAKING) == feedback.PENDING
    assert feedback.gitlab_state(Status.CANCELLED) == feedback.CANCELED


def test_a_soak_is_sent_as_pending_and_posted_with_when_it_promotes(db, function, sent, receiver, quick,
                                                                    django_capture_on_commit_callbacks):
    staging, production = staged(function, promotion="automatic", soak_seconds=900)
    reporting(function, receiver.url)
    with django_capture_on_commit_callbacks(execute=True):
        promotion = soaking_promotion(function, staging, production)
    assert promotion.status == Status.SOAKING
    assert [c.kwargs["args"] for c in sent.call_args_list if c.args[0] == COMMIT_STATUS_TASK] == [
        [promotion.pk, "pending"]]
    assert work.report_commit_status(promotion.pk, "pending") == "pending"
    body = receiver.requests[-1].json()
    at = timezone.localtime(promotion.promote_at)
    assert body["state"] == "pending" and body["name"] == "slipway/hello"
    assert body["description"] == f"promotion of hello to production: soaking, promotes at {at:%H:%M} UTC"


# --- Notifications name the environment ---------------------------------------------------------


def test_the_payload_and_text_name_the_deployments_environment(function):
    staging, _ = staged(function)
    failed = Deployment.objects.create(function=function, environment=staging, trigger="webhook", commit_sha=SHA,
                                       status=Status.FAILED, error_code="smoke-error-result", error_message="boom")
    text, payload = work.compose(function, feedback.DEPLOY_FAILED, failed, {})
    assert text.startswith(f"hello (staging): deploy #{failed.pk} of a1b2c3d4e5f6 failed")
    assert (payload["function"], payload["environment"]) == ("hello", "staging")


def test_a_resume_or_drift_names_the_environment_it_came_with(function):
    text, payload = work.compose(function, feedback.RESUME, None, {"by": "bob", "environment": "staging"})
    assert text == "hello (staging): auto-deploy resumed by bob" and payload["environment"] == "staging"
    _, without = work.compose(function, feedback.RESUME, None, {"by": "bob"})
    assert without["environment"] is None and without["function"] == "hello"


def test_resuming_a_later_environment_names_it(function, cast, sent, django_capture_on_commit_callbacks):
    from portal.deployments import requesting

    staged(function)
    function.feedback_settings.notify_members.add(cast["alice"])
    with django_capture_on_commit_callbacks(execute=True):
        requesting.resume_auto_deploy(function, user=cast["bob"], trigger="ui", environment="production")
    assert [c.kwargs["args"] for c in sent.call_args_list if c.args[0] == NOTIFY_TASK] == [
        [function.pk, "resume", None, {"by": "bob", "environment": "production"}]]


def test_the_email_names_the_environment(db, function, cast, quick):
    from django.core import mail

    staging, _ = staged(function)
    function.feedback_settings.notify_members.add(cast["alice"])
    failed = Deployment.objects.create(function=function, environment=staging, trigger="api", commit_sha=SHA,
                                       status=Status.FAILED, error_code="verify-failed", error_message="bad")
    assert work.send_notification(function.pk, feedback.DEPLOY_FAILED, failed.pk, {}) == {"email": True}
    assert len(mail.outbox) == 1 and mail.outbox[0].subject.startswith("[Slipway] hello (staging): deploy #")
    assert NotificationAttempt.objects.get(channel="email").outcome == "ok"


# --- Drift per environment --------------------------------------------------------------------


@pytest.mark.postgres
def test_drift_in_staging_cancels_the_promotion_soaking_out_of_it(function, cast, sent,
                                                                   django_capture_on_commit_callbacks):
    staging, production = staged(function, promotion="automatic", soak_seconds=900)
    reporting(function, "https://gitlab.example.org")
    function.feedback_settings.notify_members.add(cast["alice"])
    promotion = soaking_promotion(function, staging, production)
    DriftState.objects.filter(environment=staging).update(expected_state=EXPECTED)
    with mock.patch("deploy.aws.client", autospec=True) as client, \
            django_capture_on_commit_callbacks(execute=True):
        lambda_reporting(client, memory=2048)
        result = drift.check(function, environment=staging)
    assert result.outcome == "drift"
    client.return_value.get_function.assert_called_with(FunctionName=staging.lambda_name)
    promotion.refresh_from_db()
    assert (promotion.status, promotion.error_code) == (Status.CANCELLED, "not-verified-upstream")
    assert "staging was changed outside Slipway" in promotion.error_message
    assert [promotion.pk, "canceled"] in [c.kwargs["args"] for c in sent.call_args_list
                                         if c.args[0] == COMMIT_STATUS_TASK]
    notice = [c.kwargs["args"] for c in sent.call_args_list if c.args[0] == NOTIFY_TASK]
    assert len(notice) == 1 and notice[0][3]["environment"] == "staging"
    detected = AuditEvent.objects.get(action="function.drift_detected")
    assert detected.detail["environment"] == "staging"
    assert DriftState.objects.get(environment=production).drift_fingerprint == ""  # production is untouched


def test_a_clean_check_leaves_the_soak_alone(function):
    staging, production = staged(function, promotion="automatic", soak_seconds=900)
    promotion = soaking_promotion(function, staging, production)
    DriftState.objects.filter(environment=staging).update(expected_state=EXPECTED)
    with mock.patch("deploy.aws.client", autospec=True) as client:
        lambda_reporting(client, memory=EXPECTED["memory_mb"])
        assert drift.check(function, environment=staging).outcome == "clean"
    promotion.refresh_from_db()
    assert promotion.status == Status.SOAKING


def test_the_periodic_check_covers_every_environment_of_every_function(function):
    staging, production = staged(function)
    for environment in (staging, production):
        DriftState.objects.filter(environment=environment).update(expected_state=EXPECTED)
    with mock.patch("deploy.aws.client", autospec=True) as client:
        lambda_reporting(client, memory=EXPECTED["memory_mb"])
        outcomes = drift.check_all()
    assert outcomes == {"clean": ["hello/staging", "hello/production"]}
    asked = {c.kwargs["FunctionName"] for c in client.return_value.get_function.call_args_list}
    assert asked == {staging.lambda_name, production.lambda_name}


def test_the_drift_buttons_act_on_the_named_environment_and_ask_for_one_when_there_are_several(client, function,
                                                                                              cast):
    staging, production = staged(function)
    DriftState.objects.filter(environment=staging).update(
        expected_state=EXPECTED, drift_fingerprint="f" * 64, drift_observed={**EXPECTED, "memory_mb": 512})
    client.force_login(cast["alice"])
    url = reverse("portal-drift-accept", args=[function.name])
    page = client.post(url, follow=True).content.decode()
    assert "hello has 2 environments (staging, production): name one" in page
    assert DriftState.objects.get(environment=staging).drift_fingerprint == "f" * 64
    page = client.post(url, {"environment": "staging"}, follow=True).content.decode()
    assert "in staging as what Slipway expects" in page
    assert DriftState.objects.get(environment=staging).expected_state["memory_mb"] == 512
    assert AuditEvent.objects.get(action="function.drift_accepted").detail["environment"] == "staging"
    unknown = client.post(reverse("portal-drift-check", args=[function.name]), {"environment": "qa"}, follow=True)
    assert "has no environment" in unknown.content.decode()


def test_the_function_page_shows_drift_in_any_environment_with_buttons_naming_it(client, function, cast):
    staging, production = staged(function)
    DriftState.objects.filter(environment=staging).update(
        expected_state=EXPECTED, drift_fingerprint="f" * 64, drift_observed={**EXPECTED, "memory_mb": 512})
    DriftState.objects.filter(environment=production).update(expected_state=EXPECTED)
    released(function, "1", "a" * 40, environment=production)  # the feedback card shows with releases
    client.force_login(cast["alice"])
    page = client.get(reverse("portal-function", args=[function.name])).content.decode()
    banner = page[page.index('id="drift-banner"'):]
    banner = banner[:banner.index("</div>")]
    assert 'data-environment="staging"' in banner and "in staging" in banner and "512" in banner
    assert '<input type="hidden" name="environment" value="staging">' in banner
    assert page.count('id="drift-banner') == 1  # production has no drift on record
    checks = page.count('<input type="hidden" name="environment" value="production"><button type="submit" '
                        'class="secondary">Check for drift in production')
    assert checks == 1 and "Check for drift in staging" in page


# --- What a delivery caused -------------------------------------------------------------------


def test_a_delivery_lists_the_automatic_promotions_its_deployment_led_to(function):
    staging, production = staged(function, promotion="automatic")
    eu = add_environment(function, "eu", "team-hello-eu", 2, promotion="automatic")
    pushed = released(function, "3", SHA, environment=staging)
    to_production = Deployment.objects.create(function=function, environment=production, trigger="promotion",
                                              kind=Deployment.Kind.PROMOTION, upstream=pushed,
                                              status=Status.SUCCEEDED, version="7")
    to_eu = Deployment.objects.create(function=function, environment=eu, trigger="promotion",
                                      kind=Deployment.Kind.PROMOTION, upstream=to_production, status=Status.SOAKING)
    by_hand = Deployment.objects.create(function=function, environment=eu, trigger="ui",
                                        kind=Deployment.Kind.PROMOTION, upstream=to_production)
    other = released(function, "4", "b" * 40, environment=staging)
    caused = promotions_caused([pushed.pk, other.pk, None])
    assert [p.pk for p in caused[pushed.pk]] == [to_production.pk, to_eu.pk]
    assert by_hand.pk not in [p.pk for p in caused[pushed.pk]]
    assert caused[other.pk] == [] and None not in caused


def test_the_delivery_log_shows_what_a_push_caused_downstream(client, function, cast):
    staging, production = staged(function, promotion="automatic", soak_seconds=600)
    pushed = released(function, "3", SHA, environment=staging, finished_at=timezone.now())
    promotion = request_promotion(function, production, trigger="promotion", upstream=pushed, soak=True)
    delivery = WebhookDelivery.objects.create(function=function, event_type="Push Hook", outcome="accepted",
                                              body=json.dumps({"ref": "refs/heads/main"}), deployment=pushed)
    client.force_login(cast["charlie"])
    page = client.get(reverse("portal-deliveries", args=[function.name])).content.decode()
    start = page.index(f'id="caused-{delivery.pk}"')
    caused = page[start:page.index("</ul>", start)]
    assert f"#{promotion.pk}</a> to production" in caused and 'data-status="soaking"' in caused
    assert f"promotes at {timezone.localtime(promotion.promote_at):%H:%M}" in caused


def test_the_delivery_log_takes_one_query_per_level_whatever_the_page_holds(client, function, cast):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    staging, production = staged(function, promotion="automatic")
    client.force_login(cast["charlie"])
    counts = []
    for n in range(5):
        pushed = released(function, str(n + 1), f"{n:x}" * 40, environment=staging)
        Deployment.objects.create(function=function, environment=production, trigger="promotion",
                                  kind=Deployment.Kind.PROMOTION, upstream=pushed, status=Status.QUEUED)
        WebhookDelivery.objects.create(function=function, event_type="Push Hook", outcome="accepted", body="{}",
                                       deployment=pushed)
        with CaptureQueriesContext(connection) as queries:
            page = client.get(reverse("portal-deliveries", args=[function.name])).content.decode()
        counts.append(len(queries))
        assert page.count("then promoted as") == n + 1
    assert counts[0] == counts[-1], counts
