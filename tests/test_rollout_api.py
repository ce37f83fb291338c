"""A rollout in the API: the `rollout` object of a deployment, and promote now, pause, resume
and abort — deployers only, each refused 409 `rollout-not-running` once it is not rolling out.
Every answer is validated against the OpenAPI document (tests/api_client.py)."""

import pytest

from portal.celery import ROLLOUT_ABORT_TASK
from portal.models import ApiToken, AuditEvent, Deployment, Rollout
from tests.api_client import Api, openapi
from tests.rollout_fixtures import rolling_out

Status = Deployment.Status
CONTROL = "/deployments/{deployment_id}/rollout/"


@pytest.fixture
def tokens(cast):
    return {name: ApiToken.issue(user, f"{name}'s")[1] for name, user in cast.items()}


@pytest.fixture
def api(client, tokens):
    return Api(client, openapi(client), tokens["bob"])


def test_a_deployment_shows_its_rollout_with_its_events(api, function):
    deployment = rolling_out(function, weights=(0.1,))
    body = api.call("get", "/deployments/{deployment_id}", deployment_id=deployment.pk).json()
    rollout = body["rollout"]
    assert (rollout["state"], rollout["weight"], rollout["stable_version"], rollout["new_version"]) == (
        "rolling_out", 0.1, "1", "2")
    assert rollout["steps"] == 2  # 10 %, then 100 %
    assert [e["action"] for e in rollout["events"]] == ["start", "shift"]


def test_a_deployment_without_a_rollout_says_null(api, function, sent):
    plain = Deployment.objects.create(function=function, environment=function.first_environment, trigger="ui")
    assert api.call("get", "/deployments/{deployment_id}", deployment_id=plain.pk).json()["rollout"] is None


def test_a_deployer_pauses_resumes_and_promotes(api, function):
    deployment = rolling_out(function)
    paused = api.call("post", CONTROL + "pause", deployment_id=deployment.pk)
    assert paused.status_code == 200 and paused.json()["rollout"]["state"] == "paused"
    resumed = api.call("post", CONTROL + "resume", deployment_id=deployment.pk)
    assert resumed.json()["rollout"]["state"] == "rolling_out"
    promoted = api.call("post", CONTROL + "promote", deployment_id=deployment.pk)
    assert promoted.json()["rollout"]["state"] == "promoting"
    assert [e["action"] for e in promoted.json()["rollout"]["events"]][-3:] == ["pause", "resume", "promote"]
    assert AuditEvent.objects.filter(action__startswith="deployment.rollout_").count() == 3


def test_a_deployer_aborts_and_the_abort_task_is_sent(api, function, sent, django_capture_on_commit_callbacks):
    deployment = rolling_out(function)
    with django_capture_on_commit_callbacks(execute=True):
        answer = api.call("post", CONTROL + "abort", deployment_id=deployment.pk)
    assert answer.status_code == 200
    assert (answer.json()["status"], answer.json()["rollout"]["abort_signal"]) == ("aborting", "manual")
    assert "aborted by bob" in Rollout.objects.get(deployment=deployment).abort_reason
    assert sent.call_args.args == (ROLLOUT_ABORT_TASK,) and sent.call_args.kwargs["args"] == [deployment.pk]


@pytest.mark.parametrize("action", ["promote", "pause", "resume", "abort"])
def test_each_control_is_refused_once_the_rollout_is_not_running(api, function, action):
    deployment = rolling_out(function, status=Status.SUCCEEDED, weights=(0.1, 1.0))
    answer = api.call("post", CONTROL + action, deployment_id=deployment.pk)
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "rollout-not-running"
    assert Deployment.objects.get(pk=deployment.pk).status == Status.SUCCEEDED


@pytest.mark.parametrize("who, status", [("charlie", 403), ("dave", 404)])
def test_viewers_and_strangers_cannot_control_a_rollout(api, tokens, function, who, status):
    deployment = rolling_out(function)
    answer = api.call("post", CONTROL + "abort", deployment_id=deployment.pk, token=tokens[who])
    assert answer.status_code == status
    assert Deployment.objects.get(pk=deployment.pk).status == Status.ROLLING_OUT


def test_the_openapi_document_states_the_rollout_settings_and_controls(client):
    doc = openapi(client)
    for action in ("promote", "pause", "resume", "abort"):
        operation = doc["paths"][f"/api/v1/deployments/{{deployment_id}}/rollout/{action}"]["post"]
        assert operation["operationId"] == f"portal_api_rollout_{action}" and "409" in operation["responses"]
    schemas = doc["components"]["schemas"]
    nested = schemas["EnvironmentPatchRollout"]
    assert nested["additionalProperties"] is False
    preset = next(kind for kind in nested["properties"]["preset"]["anyOf"] if "enum" in kind)
    assert len(preset["enum"]) == 9 and "Linear10PercentEvery10Minutes" in preset["enum"]
    percent = next(kind for kind in nested["properties"]["percent"]["anyOf"] if kind.get("type") == "integer")
    assert (percent["minimum"], percent["maximum"]) == (1, 50)
    assert "rollout" in schemas["DeploymentOut"]["properties"] and "rollout" in schemas["EnvironmentOut"]["required"]
