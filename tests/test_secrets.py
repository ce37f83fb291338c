"""No secret leaves (issue 25, defects 3-5): Lambda's size error and any AWS text that
quotes the environment, through every output channel; the environment measured as
Lambda measures it; a GitLab token that never follows a new host; the admin.

deploy.aws.client is the one seam patched for AWS (with autospec), Celery's send_task
for the queue; GitLab and the notification webhook are a real server on 127.0.0.1.
The same leak through a real worker on the local plane is in
tests/integration/test_pipeline_failures.py."""

from __future__ import annotations

import html
import importlib
import io
import json
import logging
from unittest import mock

import pytest
from botocore.exceptions import ClientError
from django.apps import apps
from django.core import mail
from django.urls import reverse

from deploy import aws, lambdas
from deploy.logs import mask
from portal.core import crypto
from portal.core.jsonlog import JsonFormatter
from portal.deployments import pipeline, recording, steps
from portal.feedback import delivery as work
from portal.feedback import drift
from portal.feedback import status as feedback
from portal.feedback.forms import FeedbackForm
from portal.functions.forms import ENV_LIMIT_BYTES, FunctionForm
from portal.models import Build, Deployment, DeploymentStep, FeedbackSettings, NotificationAttempt
from tests.conftest import set_environment

SHA = "3f9c2a1b7d4e" + "0" * 28
# A quote, a backslash and a non-ASCII letter: its raw, JSON-escaped (both ways) and
# HTML-escaped forms all differ. Every form holds MARK, so finding MARK finds any of them.
SECRET = 'n0t-"for"\\your-éyes-7f3a9c'
MARK = "yes-7f3a9c"
FORMS = {"raw": SECRET, "json": json.dumps(SECRET)[1:-1], "json-utf8": json.dumps(SECRET, ensure_ascii=False)[1:-1],
         "html": html.escape(SECRET), "mark": MARK}
ENV = {"PLAIN": "visible-value", "TOKEN": SECRET}
TOO_LARGE = ("Lambda was unable to configure your environment variables because the environment variables you "
             "have provided exceeded the 4KB limit. String measured: ")


def leaks(text) -> list[str]:
    """The forms of SECRET found in `text` (str or bytes)."""
    text = text.decode() if isinstance(text, bytes) else str(text)
    return [name for name, form in FORMS.items() if form in text]


# --- Measured as Lambda measures it -------------------------------------------------------------------


def _function_form(plain: str, secret: str = "") -> FunctionForm:
    data = {"name": "sized", "repository_url": "https://gitlab.example.com/t/d.git", "branch": "main",
            "context_path": ".", "dockerfile_path": "Dockerfile", "architecture": "arm64",
            "ecr_repository": "slipway/sized", "lambda_name": "slipway-sized", "alias": "live", "memory_mb": "1024",
            "timeout_s": "30", "execution_role_arn": "arn:aws:iam::000000000000:role/x", "auto_deploy": "on",
            "environment_text": plain, "secret_environment_text": secret, "build_args_text": "{}",
            "smoke_event_text": "{}", "golden_iou": "0.9"}
    return FunctionForm(data)


def test_the_environment_size_is_the_larger_of_lambdas_two_json_encodings():
    assert lambdas.environment_size({"A": "b"}) == len('{"A":"b"}')
    assert lambdas.environment_size({"A": "é"}) == len('{"A":"\\u00e9"}')  # 6 bytes escaped, 2 in UTF-8
    assert lambdas.environment_size({"A": 'q"\\'}) == len('{"A":"q\\"\\\\"}')


@pytest.mark.parametrize("extra, valid", [(0, True), (1, False)])
def test_a_non_ascii_environment_is_refused_one_byte_past_the_limit(db, extra, valid):
    # {"MODE":"<600 x é><x...>"}: 11 bytes + 6 per é escaped + 1 per x = 4096 with 485 x's.
    value = "é" * 600 + "x" * (485 + extra)
    form = _function_form(f"MODE={value}")
    assert form.is_valid() is valid, form.errors
    if not valid:
        assert f"takes {ENV_LIMIT_BYTES + 1} bytes" in form.errors["environment_text"][0]
    assert lambdas.environment_size({"MODE": value}) == ENV_LIMIT_BYTES + extra


@pytest.mark.parametrize("extra, valid", [(0, True), (1, False)])
def test_secret_values_that_need_escaping_count_escaped_at_the_boundary(db, extra, valid):
    # {"MODE":"fast","TOKEN":"<quotes and backslashes>"}: each " and \\ takes 2 bytes.
    prefix = len('{"MODE":"fast","TOKEN":""}')
    value = '"\\' * ((ENV_LIMIT_BYTES - prefix) // 4) + "y" * ((ENV_LIMIT_BYTES - prefix) % 4 + extra)
    form = _function_form("MODE=fast", f"TOKEN={value}")
    assert form.is_valid() is valid, form.errors
    assert value not in str(form.errors)
    assert lambdas.environment_size({"MODE": "fast", "TOKEN": value}) == ENV_LIMIT_BYTES + extra


# --- The AWS text cut, the values masked -----------------------------------------------------------


def _client_error(code: str, message: str, operation: str = "UpdateFunctionConfiguration") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}},
                       operation)


@pytest.mark.parametrize("ascii_json", [True, False])
def test_lambdas_size_error_is_cut_before_the_measured_environment(ascii_json):
    measured = json.dumps(ENV, separators=(",", ":"), ensure_ascii=ascii_json)
    mapped = aws.error(_client_error("InvalidParameterValueException", TOO_LARGE + measured),
                       "updating the configuration of fx", "lambda")
    assert mapped.code == "lambda-InvalidParameterValueException"
    assert "exceeded the 4KB limit" in mapped.message and "String measured:" not in mapped.message
    assert leaks(mapped.message) == [] and "visible-value" not in mapped.message


def test_mask_hides_a_value_raw_json_escaped_and_as_python_writes_it():
    text = f"a {SECRET} b {FORMS['json']} c {FORMS['json-utf8']} d {SECRET!r} e"
    masked = mask(text, SECRET)
    assert leaks(masked) == [] and masked.startswith("a *** b *** c *** d '***' e")


# --- Every output channel, with the real error shapes at the boto3 seam ------------------------------


@pytest.fixture
def reporting(function, cast, receiver, settings):
    """`function` with a secret variable, reporting to GitLab and a webhook (the receiver) and by email."""
    settings.SLIPWAY_NOTIFY_TIMEOUT, settings.SLIPWAY_NOTIFY_ATTEMPTS, settings.SLIPWAY_NOTIFY_BACKOFF = 1, 1, 0.05
    settings.SLIPWAY_BASE_URL = "https://slipway.example.org"
    set_environment(function, environment=dict(ENV), secret_keys=["TOKEN"])
    reports = function.feedback_settings
    reports.gitlab_api_url, reports.gitlab_project = receiver.url, "team/hello"
    reports.gitlab_status_token = crypto.encrypt("glpat-reporting-token-1234")
    reports.notify_webhook_url = receiver.url + "/hooks/slipway"
    reports.notify_webhook_secret = crypto.encrypt(feedback.new_webhook_secret())
    reports.save()
    reports.notify_members.add(cast["alice"])
    return function


@pytest.fixture
def json_log():
    """JSON log lines as production writes them, from every logger."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def _ship_failing(function, error: ClientError) -> Deployment:
    """A deployment past its push, through the real update step, recording and finish;
    Lambda answers the configuration update with `error`."""
    build = Build.objects.create(function=function, commit_sha=SHA, architecture="arm64", inputs_digest=SHA,
                                 status=Build.Status.SUCCEEDED, digest="sha256:" + "a" * 64)
    deployment = Deployment.objects.create(function=function, build=build, trigger="api", commit_sha=SHA, ref="main",
                                           status=Deployment.Status.PUSHING)
    run = steps.Run(deployment, repository_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/team/hello")
    with mock.patch("deploy.aws.client", autospec=True) as client:
        lam = client.return_value
        lam.get_function_configuration.return_value = {
            "FunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:team-hello", "MemorySize": 1024,
            "Timeout": 30, "Environment": {"Variables": {}}}
        lam.list_tags.return_value = {"Tags": {"slipway:function": function.name}}  # Slipway's own Lambda
        lam.update_function_configuration.side_effect = error
        recording.settle(deployment, lambda: pipeline.ship(run, recording.Recorder(deployment)))
    assert lam.update_function_configuration.call_args.kwargs["Environment"] == {"Variables": ENV}
    deployment.refresh_from_db()
    return deployment


ECHOES = {
    "too large, measured as UTF-8": ("InvalidParameterValueException",
                                     TOO_LARGE + json.dumps(ENV, separators=(",", ":"), ensure_ascii=False)),
    "too large, measured escaped": ("InvalidParameterValueException",
                                    TOO_LARGE + json.dumps(ENV, separators=(",", ":"))),
    # Not the size error: no "String measured:" to cut, so only the masking stands between.
    "a validation error quoting values": (
        "ValidationException", f"1 validation error detected: Value '{{PLAIN=visible-value, TOKEN={SECRET}}}' at "
                               f"'environment.variables' failed to satisfy constraint; as sent: {json.dumps(ENV)}"),
}


@pytest.mark.parametrize("shape", list(ECHOES))
def test_an_aws_error_quoting_the_environment_leaks_the_secret_through_no_channel(
        shape, reporting, cast, client, receiver, sent, json_log):
    from portal.models import ApiToken
    from tests.api_client import Api, openapi

    code, message = ECHOES[shape]
    deployment = _ship_failing(reporting, _client_error(code, message))
    assert (deployment.status, deployment.error_code) == ("failed", f"lambda-{code}")
    update = deployment.steps.get(name="update")
    assert f"error lambda-{code}" in update.output
    channels = {"error_message": deployment.error_message,
                "step outputs": "\n".join(DeploymentStep.objects.values_list("output", flat=True))}

    api = Api(client, openapi(client), ApiToken.issue(cast["charlie"], "viewer's")[1])
    shown = api.call("get", "/deployments/{deployment_id}", deployment_id=deployment.pk)
    assert shown.status_code == 200 and shown.json()["error_code"] == f"lambda-{code}"
    channels["API"] = shown.content
    client.force_login(cast["charlie"])
    channels["deployment page"] = client.get(reverse("portal-deployment", args=[deployment.pk])).content

    assert work.report_commit_status(deployment.pk, "failed") == "failed"
    assert work.send_notification(reporting.pk, feedback.DEPLOY_FAILED, deployment.pk, {}) == {"webhook": True,
                                                                                                "email": True}
    gitlab = [r for r in receiver.requests if "/statuses/" in r.path]
    webhook = [r for r in receiver.requests if r.path == "/hooks/slipway"]
    assert len(gitlab) == 1 and len(webhook) == 1 and len(mail.outbox) == 1
    assert f"lambda-{code}" in gitlab[0].json()["description"] and f"lambda-{code}" in webhook[0].json()["text"]
    channels.update({"GitLab status body": gitlab[0].body, "webhook body": webhook[0].body,
                     "email": mail.outbox[0].subject + mail.outbox[0].body,
                     "attempts": str(list(NotificationAttempt.objects.values_list("detail", flat=True)))})
    channels["JSON log"] = json_log.getvalue()

    assert {name: leaks(text) for name, text in channels.items() if leaks(text)} == {}
    assert "String measured:" not in str(channels)
    lines = json_log.getvalue().splitlines()  # the failure is logged, so the channel was searched
    assert any(json.loads(line).get("deployment") == deployment.pk and f"lambda-{code}" in line for line in lines)


def test_a_json_log_line_written_during_a_deployment_masks_its_secret(reporting, sent, json_log):
    deployment = Deployment.objects.create(function=reporting, trigger="api", status=Deployment.Status.SOURCE)

    def steps_that_log():
        logging.getLogger("botocore.somewhere").warning("request body: %s", json.dumps(ENV))
        raise RuntimeError(f"unexpected: {ENV!r}")

    recording.settle(deployment, steps_that_log)
    text = json_log.getvalue()
    assert "request body" in text and "RuntimeError" in text
    assert leaks(text) == []
    deployment.refresh_from_db()
    assert deployment.error_code == "internal-error" and leaks(deployment.error_message) == []


def test_drift_views_mask_a_secret_value_wherever_it_shows(reporting):
    # Someone set a plain variable in the console to the secret's value: masked there too.
    state = reporting.first_environment.drift_state
    state.expected_state = {"alias_version": "1", "environment": dict(ENV)}
    state.drift_observed = {"alias_version": "1", "environment": {**ENV, "COPY": SECRET}}
    state.drift_fingerprint = "f" * 64
    state.save()
    shown = drift.current(reporting)
    assert [d["field"] for d in shown] == ["environment.COPY"] and leaks(json.dumps(shown)) == []


# --- What is stored already is scrubbed --------------------------------------------------------------


def test_the_migration_scrubs_stored_outputs_of_every_current_secret_value(function):
    set_environment(function, environment=dict(ENV), secret_keys=["TOKEN"])
    deployment = Deployment.objects.create(function=function, trigger="api", status="failed",
                                           error_message="updating: " + TOO_LARGE + json.dumps(ENV))
    step = DeploymentStep.objects.create(deployment=deployment, name="update", position=1,
                                         output=f"line one\nValue '{SECRET}' refused\nline three")
    attempt = NotificationAttempt.objects.create(function=function, deployment=deployment, channel="webhook",
                                                 event="deploy_failed", outcome="failed",
                                                 detail=f'400 {{"echo": {json.dumps(SECRET)}}}')
    untouched = DeploymentStep.objects.create(deployment=deployment, name="build", position=2, output="#1 done")
    importlib.import_module("portal.migrations.0010_scrub_secrets").scrub(apps, None)
    deployment.refresh_from_db(), step.refresh_from_db(), attempt.refresh_from_db(), untouched.refresh_from_db()
    for text in (deployment.error_message, step.output, attempt.detail):
        assert leaks(text) == [], text
    assert "String measured:" not in deployment.error_message and "exceeded the 4KB limit" in deployment.error_message
    assert step.output == "line one\nValue '***' refused\nline three" and untouched.output == "#1 done"


# --- The GitLab token stays with its host --------------------------------------------------------------


def _stored_token(function, url: str = "https://gitlab.example.org", token: str = "glpat-stored-token-123456"):
    reports = function.feedback_settings
    reports.gitlab_api_url, reports.gitlab_project = url, "team/hello"
    reports.gitlab_status_token = crypto.encrypt(token)
    reports.save()
    return function


def _feedback_form(function, **data):
    reports = function.feedback_settings
    base = {"gitlab_api_url": reports.gitlab_api_url, "gitlab_project": reports.gitlab_project,
            "notify_webhook_url": "", "gitlab_token": ""}
    return FeedbackForm({**base, **data}, instance=reports)


def test_a_gitlab_url_on_another_host_asks_for_the_token_again(function):
    _stored_token(function)
    form = _feedback_form(function, gitlab_api_url="https://gitlab.elsewhere.example.net")
    assert not form.is_valid()
    assert "moved to another host (gitlab.elsewhere.example.net)" in form.errors["gitlab_token"][0]
    assert FeedbackSettings.objects.get(function=function).gitlab_api_url == "https://gitlab.example.org"


@pytest.mark.parametrize("url, token, valid", [
    ("https://gitlab.example.org/gitlab", "", True),  # the same host: the stored token stays
    ("https://gitlab.example.org:8443", "", False),  # another port is another server
    ("https://gitlab.elsewhere.example.net", "glpat-new-token-987654", True),  # a new token for the new host
])
def test_the_token_stays_only_with_the_host_it_was_set_for(function, url, token, valid):
    _stored_token(function)
    assert _feedback_form(function, gitlab_api_url=url, gitlab_token=token).is_valid() is valid


def test_patching_only_the_gitlab_url_never_sends_the_stored_token_to_the_new_host(function, cast, client, receiver,
                                                                                   settings):
    from portal.models import ApiToken
    from tests.api_client import Api, openapi

    settings.SLIPWAY_NOTIFY_ATTEMPTS = 1
    _stored_token(function)
    api = Api(client, openapi(client), ApiToken.issue(cast["alice"], "owner's")[1])
    moved = api.call("patch", "/functions/{name}/feedback", {"gitlab_api_url": receiver.url}, name="hello")
    assert moved.status_code == 400, moved.json()
    assert "moved to another host" in moved.json()["error"]["fields"]["gitlab_token"][0]
    deployment = Deployment.objects.create(function=function, trigger="api", commit_sha=SHA, ref="main",
                                           status="failed")
    work.report_commit_status(deployment.pk, "failed")
    assert receiver.requests == []
    assert FeedbackSettings.objects.get(function=function).gitlab_api_url == "https://gitlab.example.org"


def test_the_settings_page_asks_for_the_token_again_on_a_new_host(function, cast, client):
    _stored_token(function)
    client.force_login(cast["alice"])
    response = client.post(reverse("portal-feedback", args=["hello"]),
                           {"gitlab_api_url": "https://gitlab.elsewhere.example.net", "gitlab_project": "team/hello"})
    assert response.status_code == 400 and b"enter the token again" in response.content
    assert FeedbackSettings.objects.get(function=function).gitlab_api_url == "https://gitlab.example.org"


# --- The admin ------------------------------------------------------------------------------------------


def test_staff_see_secret_values_masked_in_the_admin(admin_client, function):
    set_environment(function, environment=dict(ENV), secret_keys=["TOKEN"])
    state = function.first_environment.drift_state
    state.expected_state = {"alias_version": "1", "environment": dict(ENV)}
    state.drift_observed = {"alias_version": "2", "environment": {**ENV, "TOKEN": SECRET + "-changed"}}
    state.save()
    page = admin_client.get(f"/admin/portal/function/{function.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert leaks(text) == []
    # Masked in the environment, the expected state and the drift observed (a value under a
    # name like TOKEN shows as *** there: the usual patterns mask it once more), still shown.
    assert text.count("••••••") + text.count("***") >= 3 and text.count("visible-value") >= 3


def test_the_side_rows_admin_pages_mask_recorded_states_and_show_sealed_values_only_as_set(admin_client, reporting):
    state = reporting.first_environment.drift_state
    state.expected_state = {"alias_version": "1", "environment": dict(ENV)}
    state.drift_observed = {"alias_version": "2", "environment": {**ENV, "TOKEN": SECRET + "-changed"}}
    state.save()
    reports = reporting.feedback_settings
    for model in ("driftstate", "feedbacksettings", "hookkeys", "sourceaccess"):
        page = admin_client.get(f"/admin/portal/{model}/{reporting.pk}/change/")
        assert page.status_code == 200, model
        text = page.content.decode()
        assert leaks(text) == [], model
        assert reports.gitlab_status_token not in text and reports.notify_webhook_secret not in text, model
        if model == "driftstate":
            assert text.count("visible-value") >= 2 and text.count("••••••") + text.count("***") >= 2
        if model == "feedbacksettings":
            assert "gitlab_status_token, notify_webhook_secret" in text and "alice" in text
    assert admin_client.get("/admin/portal/hookkeys/add/").status_code == 403
