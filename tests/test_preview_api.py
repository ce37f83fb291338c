"""The previews API: enabling previews and their policy, listing and reading previews,
redeploy, remove, and approving a fork's head (a signed-in session only). Every answer
is validated against the OpenAPI document (tests/api_client.py)."""

from __future__ import annotations

import pytest

from portal.models import ApiToken, AuditEvent, Deployment, Environment, Preview
from tests.api_client import Api, openapi
from tests.previews import previews_on

SETTINGS = "/functions/{name}/previews/settings"
LIST = "/functions/{name}/previews"
ONE = LIST + "/{iid}"
FORK_SHA = "7a1c3e5b9d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c"


@pytest.fixture(autouse=True)
def _allowed(settings, sent):
    settings.SLIPWAY_ALLOWED_LAMBDA_PREFIXES = ["team-"]


@pytest.fixture
def tokens(cast):
    return {name: ApiToken.issue(user, f"{name}'s")[1] for name, user in cast.items()}


@pytest.fixture
def api(client, tokens):
    return Api(client, openapi(client), tokens["alice"])


def _code(response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


@pytest.fixture
def fork(function):
    environment = previews_on(function, allow_forks=True)
    return Preview.objects.create(function=function, environment=environment, mr_iid=13, head_sha=FORK_SHA,
                                  fork=True, title="Fix typo", author="outsider")


def test_the_owner_enables_previews_and_sets_their_policy(api, function, cast):
    assert _code(api.call("get", SETTINGS, name="hello")) == (404, "previews-off")
    body = api.call("put", SETTINGS, {"url_auth": "AWS_IAM", "target_branches": ["main"]}, name="hello").json()
    assert (body["lambda_name"], body["url_auth"], body["target_branches"], body["allow_forks"]) == (
        "team-hello-preview", "AWS_IAM", ["main"], False)
    body = api.call("put", SETTINGS, {"allow_forks": True}, name="hello").json()
    assert body["allow_forks"] is True and body["url_auth"] == ""
    assert AuditEvent.objects.filter(action="previews.forks_allowed", actor=cast["alice"]).count() == 1
    assert api.call("get", SETTINGS, name="hello", token="").status_code == 401


def test_enabling_refuses_a_bad_lambda_name_and_a_missing_role(api, function, settings):
    response = api.call("put", SETTINGS, {"lambda_name": "other-hello"}, name="hello")
    assert _code(response) == (400, "invalid") and "lambda_name" in response.json()["error"]["fields"]
    settings.SLIPWAY_PREVIEW_EXECUTION_ROLE = ""
    response = api.call("put", SETTINGS, {}, name="hello")
    assert _code(response) == (409, "preview-role")
    assert not Environment.objects.filter(preview=True).exists()


def test_only_owners_change_previews(api, tokens, function):
    for who in ("bob", "charlie"):
        assert _code(api.call("put", SETTINGS, {}, name="hello", token=tokens[who]))[0] == 403
    assert _code(api.call("put", SETTINGS, {}, name="hello", token=tokens["dave"]))[0] == 404


def test_list_and_read_previews(api, tokens, fork):
    body = api.call("get", LIST, name="hello", token=tokens["charlie"]).json()
    assert body["count"] == 1 and body["items"][0]["mr_iid"] == 13 and body["items"][0]["awaiting_approval"]
    one = api.call("get", ONE, name="hello", iid=13).json()
    assert (one["alias"], one["author"], one["state"], one["latest_deployment"]) == ("mr-13", "outsider", "open",
                                                                                   None)
    assert api.call("get", ONE, name="hello", iid=99).status_code == 404
    assert _code(api.call("get", LIST, name="hello", query={"state": "gone"})) == (400, "invalid")
    assert api.call("get", LIST, name="hello", query={"state": "closed"}).json()["count"] == 0


def test_approving_a_fork_needs_a_session_not_a_token(api, client, tokens, cast, fork):
    response = api.call("post", ONE + "/approve", {"commit": FORK_SHA}, name="hello", iid=13, token=tokens["bob"])
    assert _code(response) == (403, "session-only") and not Deployment.objects.exists()
    client.force_login(cast["bob"])
    answer = api.call("post", ONE + "/approve", {"commit": FORK_SHA}, name="hello", iid=13, token="")
    assert answer.status_code == 202 and answer.json()["commit_sha"] == FORK_SHA
    assert Preview.objects.get().approved_by == cast["bob"]


def test_redeploy_and_remove(api, tokens, function):
    environment = previews_on(function)
    Preview.objects.create(function=function, environment=environment, mr_iid=12, head_sha="d" * 40)
    assert api.call("post", ONE + "/redeploy", name="hello", iid=12, token=tokens["charlie"]).status_code == 403
    deployment = api.call("post", ONE + "/redeploy", name="hello", iid=12, token=tokens["bob"]).json()
    assert (deployment["kind"], deployment["environment"], deployment["commit_sha"]) == (
        "preview", "preview", "d" * 40)
    removed = api.call("post", ONE + "/remove", name="hello", iid=12, token=tokens["bob"]).json()
    assert (removed["state"], removed["removed_reason"]) == ("closed", "removed by bob")
    assert _code(api.call("post", ONE + "/remove", name="hello", iid=12)) == (409, "preview-closed")
    assert Deployment.objects.get().status == Deployment.Status.CANCELLED  # queued, then the removal stopped it


def test_the_preview_environment_is_listed_marked_and_its_secret_opted_in(api, function):
    previews_on(function)
    listed = api.call("get", "/functions/{name}/environments", name="hello").json()["items"]
    assert [(env["name"], env["preview"], env["position"]) for env in listed] == [
        ("production", False, 0), ("preview", True, 2000)]
    edited = api.call("patch", "/functions/{name}/environments/{env}", {"secret_environment": {"API_KEY": "p"}},
                      name="hello", env="preview")
    assert edited.status_code == 200, edited.json()
    assert edited.json()["secret_keys"] == ["API_KEY"] and edited.json()["position"] == 2000
    environment = Environment.objects.get(preview=True)
    assert environment.variables["API_KEY"] == "p" and environment.execution_role_arn.endswith("slipway-preview")
    assert api.call("delete", "/functions/{name}/environments/{env}", name="hello", env="preview").status_code == 409
