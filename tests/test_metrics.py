"""/metrics: figures read from the database at scrape time, guarded by a token or a network."""

from datetime import timedelta

from django.utils import timezone

from portal.models import Deployment, DeploymentStep, Environment, Rollout
from tests.conftest import staged

Status = Deployment.Status


def scrape(client, **headers) -> str:
    response = client.get("/metrics", REMOTE_ADDR=headers.pop("addr", "127.0.0.1"), **headers)
    assert response.status_code == 200, response.content
    return response.content.decode()


def test_a_failed_deployment_is_counted_with_its_environment_and_error_code(client, function):
    Deployment.objects.create(function=function, trigger="cli", status=Status.FAILED, error_code="build-failed")
    text = scrape(client)
    assert ('slipway_deployments_total{environment="production",error_code="build-failed",function="hello",'
            'kind="deploy",status="failed"} 1.0' in text)


def test_each_environment_is_counted_apart(client, function):
    staging, production = staged(function)
    for environment in (staging, staging, production):
        Deployment.objects.create(function=function, environment=environment, trigger="cli", status=Status.SUCCEEDED)
    text = scrape(client)
    assert ('slipway_deployments_total{environment="staging",error_code="",function="hello",kind="deploy",'
            'status="succeeded"} 2.0' in text)
    assert ('slipway_deployments_total{environment="production",error_code="",function="hello",kind="deploy",'
            'status="succeeded"} 1.0' in text)


def test_soaking_promotions_are_a_gauge_per_function_and_environment(client, function):
    staging, production = staged(function, promotion="automatic", soak_seconds=600)
    assert 'slipway_promotions_soaking{environment="production",function="hello"} 0.0' in scrape(client)
    for _ in range(2):
        Deployment.objects.create(function=function, environment=production, trigger="promotion",
                                  kind=Deployment.Kind.PROMOTION, status=Status.SOAKING,
                                  promote_at=timezone.now() + timedelta(minutes=10))
    Deployment.objects.create(function=function, environment=production, trigger="promotion",
                              kind=Deployment.Kind.PROMOTION, status=Status.QUEUED)
    text = scrape(client)
    assert 'slipway_promotions_soaking{environment="production",function="hello"} 2.0' in text
    assert 'slipway_promotions_soaking{environment="staging"' not in text  # it deploys: nothing promotes into it


def test_queue_depth_and_the_oldest_queued_age_per_queue(client, function):
    old = Deployment.objects.create(function=function, trigger="cli")
    Deployment.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    Deployment.objects.create(function=function, trigger="cli", kind=Deployment.Kind.ROLLBACK)
    text = scrape(client)
    assert 'slipway_queue_depth{queue="deploys"} 1.0' in text and 'slipway_queue_depth{queue="rollbacks"} 1.0' in text
    age = float(text.split('slipway_queue_oldest_age_seconds{queue="deploys"} ')[1].split()[0])
    assert 290 < age < 400


def test_step_durations_are_a_histogram(client, function):
    deployment = Deployment.objects.create(function=function, trigger="cli", status=Status.SUCCEEDED)
    start = timezone.now()
    for position, seconds in enumerate((3, 45), start=1):
        DeploymentStep.objects.create(deployment=deployment, name="build", position=position, status="succeeded",
                                      started_at=start, finished_at=start + timedelta(seconds=seconds))
    text = scrape(client)
    assert 'slipway_step_duration_seconds_bucket{le="5.0",step="build"} 1.0' in text
    assert 'slipway_step_duration_seconds_bucket{le="60.0",step="build"} 2.0' in text
    assert 'slipway_step_duration_seconds_sum{step="build"} 48.0' in text


def test_metrics_are_refused_outside_the_networks_without_the_token(client, settings, db):
    settings.SLIPWAY_METRICS_TOKEN = "metrics-token-for-tests"
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert scrape(client, addr="192.0.2.7", HTTP_AUTHORIZATION="Bearer metrics-token-for-tests")


def test_behind_a_tls_proxy_a_loopback_caller_is_not_trusted_but_the_token_still_is(client, settings, db):
    # The proxy on the same host connects from 127.0.0.1 for every caller on the internet.
    settings.SLIPWAY_BEHIND_TLS_PROXY = True
    settings.SLIPWAY_METRICS_TOKEN = "metrics-token-for-tests"
    for loopback in ("127.0.0.1", "::1"):
        assert client.get("/metrics", REMOTE_ADDR=loopback).status_code == 403
    assert scrape(client, addr="127.0.0.1", HTTP_AUTHORIZATION="Bearer metrics-token-for-tests")
    settings.SLIPWAY_BEHIND_TLS_PROXY = False
    assert scrape(client, addr="127.0.0.1")


def test_webhook_deliveries_and_console_invokes_are_counted_by_outcome(client, function):
    from portal.models import ConsoleImage, ConsoleRun, WebhookDelivery

    WebhookDelivery.objects.create(function=function, event_type="Push Hook", outcome="ignored", body="{}")
    image = ConsoleImage.objects.create(function=function, sha256="e" * 64, data=b"x", format="png", width=1,
                                        height=1, size_bytes=1, name="x.png")
    ConsoleRun.objects.create(function=function, image=image, target="live", outcome="ok", result={"boxes": []},
                              box_count=0, round_trip_ms=1)
    text = scrape(client)
    assert 'slipway_webhook_deliveries_total{outcome="ignored"} 1.0' in text
    assert 'slipway_console_invokes_total{outcome="ok"} 1.0' in text


def test_rollout_state_weight_and_overdue_tick_per_environment(client, function):
    from tests.rollout_fixtures import rolling_out

    staging, production = staged(function)
    Environment.objects.filter(pk=staging.pk).update(rollout_strategy="canary")
    text = scrape(client)
    assert 'slipway_rollout_state{environment="staging",function="hello",state="idle"} 1.0' in text
    assert 'slipway_rollout_weight{environment="staging",function="hello"} 0.0' in text
    assert 'environment="production"' not in text.split("slipway_rollout_state")[1].split("# HELP")[0]
    deployment = rolling_out(function, environment=production, weights=(0.1, 0.2), strategy="linear")
    Rollout.objects.filter(deployment=deployment).update(next_tick_at=timezone.now() - timedelta(seconds=40))
    text = scrape(client)
    assert 'slipway_rollout_state{environment="production",function="hello",state="rolling_out"} 1.0' in text
    assert 'slipway_rollout_state{environment="production",function="hello",state="idle"} 0.0' in text
    assert 'slipway_rollout_weight{environment="production",function="hello"} 0.2' in text
    late = float(text.split('slipway_rollout_tick_overdue_seconds{environment="production",function="hello"} ')[1]
                 .split()[0])
    assert 39 < late < 60


def test_rollout_aborts_are_counted_by_signal(client, function):
    from tests.rollout_fixtures import rolling_out

    for signal in ("alarm:slipway-hello-p99", "alarm:slipway-hello-errors", "manual"):
        rolling_out(function, status=Status.FAILED, abort_signal=signal)
    rolling_out(function, status=Status.SUCCEEDED, weights=(0.1, 1.0))
    text = scrape(client)
    assert 'slipway_rollout_aborts_total{environment="production",function="hello",signal="alarm"} 2.0' in text
    assert 'slipway_rollout_aborts_total{environment="production",function="hello",signal="manual"} 1.0' in text
    assert text.count("slipway_rollout_aborts_total{") == 2


def test_previews_live_and_awaiting_approval_are_gauges_per_function(client, function, settings):
    from portal.models import Preview
    from tests.previews import previews_on

    settings.SLIPWAY_ALLOWED_LAMBDA_PREFIXES = ["team-"]
    environment = previews_on(function)
    assert 'slipway_previews_live{function="hello"} 0.0' in scrape(client)
    for iid, version, state in ((1, "3", "open"), (2, "4", "open"), (3, "", "open"), (4, "5", "closed")):
        Preview.objects.create(function=function, environment=environment, mr_iid=iid, version=version, state=state)
    Preview.objects.create(function=function, environment=environment, mr_iid=5, fork=True, head_sha="a" * 40)
    text = scrape(client)
    assert 'slipway_previews_live{function="hello"} 2.0' in text
    assert 'slipway_previews_awaiting_approval{function="hello"} 1.0' in text
