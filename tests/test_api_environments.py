"""The environments API and the environment every other endpoint takes: each endpoint as
each member, and each refusal with its status, code and message, leaving nothing
changed. Every answer is validated against the OpenAPI document (tests/api_client.py)."""

import pytest

from portal.models import ApiToken, AuditEvent, Deployment, Environment
from tests.api_client import Api, openapi
from tests.conftest import add_environment, released, staged

ROLE = "arn:aws:iam::123456789012:role/slipway-lambda"


@pytest.fixture(autouse=True)
def _setup(sent, settings):
    settings.SLIPWAY_API_DEPLOY_RATE = 0
    settings.SLIPWAY_ALLOWED_LAMBDA_PREFIXES = ["team-"]
    settings.SLIPWAY_ALLOWED_EXECUTION_ROLES = ["arn:aws:iam::123456789012:role/slipway-*"]
    settings.SLIPWAY_DEFAULT_EXECUTION_ROLE = ""


@pytest.fixture
def tokens(cast):
    return {name: ApiToken.issue(user, f"{name}'s")[1] for name, user in cast.items()}


@pytest.fixture
def api(client, tokens):
    return Api(client, openapi(client), tokens["alice"])


@pytest.fixture
def stages(function):
    """staging (0) with two releases, production (1) with nothing live yet."""
    staging, production = staged(function)
    released(function, "1", "a" * 40, environment=staging)
    released(function, "2", "b" * 40, environment=staging)
    return staging, production


def _error(response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"]


def _names(function):
    return list(function.environments.order_by("position").values_list("name", flat=True))


NEW = {"name": "staging", "lambda_name": "team-hello-stg", "execution_role_arn": ROLE, "position": 0,
       "environment": {"MODE": "fast"}, "secret_environment": {"TOKEN": "s3cret"}}


# --- list, get ------------------------------------------------------------------------------


@pytest.mark.parametrize("name, status", [("alice", 200), ("bob", 200), ("charlie", 200), ("dave", 404)])
def test_the_list_is_for_members(api, tokens, stages, name, status):
    response = api.call("get", "/functions/{name}/environments", name="hello", token=tokens[name])
    assert response.status_code == status
    if status == 200:
        items = response.json()["items"]
        assert [(e["name"], e["position"]) for e in items] == [("staging", 0), ("production", 1)]
        assert items[0]["live"]["version"] == "2" and items[0]["live"]["digest"] == "sha256:" + "bb" * 32
        assert items[1]["live"] is None and items[1]["region"] == "us-east-1"


def test_one_environment_shows_its_settings_with_secrets_masked(api, function):
    add_environment(function, "staging", "team-hello-stg", 1, environment={"TOKEN": "s3cret", "MODE": "x"},
                    secret_keys=["TOKEN"], promotion="manual")
    response = api.call("get", "/functions/{name}/environments/{env}", name="hello", env="staging")
    body = response.json()
    assert response.status_code == 200 and body["environment"] == {"TOKEN": "••••••", "MODE": "x"}
    assert "s3cret" not in response.content.decode()
    assert body["url"].endswith("/functions/hello/environments/staging/edit/")


def test_an_unknown_environment_is_404_naming_the_ones_there_are(api, function):
    response = api.call("get", "/functions/{name}/environments/{env}", name="hello", env="qa")
    assert _error(response) == (404, "environment-unknown", "hello has no environment 'qa' (it has production)")


# --- create ---------------------------------------------------------------------------------


def test_the_owner_adds_an_environment_at_a_position(api, function):
    response = api.call("post", "/functions/{name}/environments", NEW, name="hello")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["name"], body["position"], body["environment"]) == ("staging", 0,
                                                                     {"MODE": "fast", "TOKEN": "••••••"})
    assert _names(function) == ["staging", "production"]
    staging = Environment.objects.get(name="staging")
    assert staging.variables == {"MODE": "fast", "TOKEN": "s3cret"} and staging.secret_keys == ["TOKEN"]
    assert AuditEvent.objects.get(action="environment.created").actor_label == "alice"


@pytest.mark.parametrize("name, status, code", [("bob", 403, "forbidden"), ("charlie", 403, "forbidden"),
                                                ("dave", 404, "not-found")])
def test_only_an_owner_adds_one(api, tokens, function, name, status, code):
    response = api.call("post", "/functions/{name}/environments", NEW, name="hello", token=tokens[name])
    assert response.status_code == status and response.json()["error"]["code"] == code
    assert _names(function) == ["production"]


def test_a_lambda_another_environment_deploys_to_is_409_taken(api, function):
    response = api.call("post", "/functions/{name}/environments", {**NEW, "lambda_name": "team-hello"}, name="hello")
    assert _error(response) == (409, "taken", "another environment already has this name or Lambda")
    assert response.json()["error"]["fields"] == {
        "lambda_name": ["another environment (production) already deploys to this Lambda"]}
    assert _names(function) == ["production"]


def test_invalid_settings_are_400_with_each_fields_message(api, function):
    response = api.call("post", "/functions/{name}/environments",
                        {**NEW, "lambda_name": "other-x", "position": 5, "soak_seconds": 0}, name="hello")
    assert _error(response) == (400, "invalid", "the environment's settings are not valid")
    assert response.json()["error"]["fields"] == {
        "lambda_name": ["Slipway may only manage Lambda functions whose names start with team-"],
        "position": ["hello has 1 other environment(s): the position is 0 to 1 (1 is after the others)"]}
    assert _names(function) == ["production"] and not AuditEvent.objects.filter(action="environment.created")


def test_a_field_the_server_does_not_know_is_refused_by_name(api, function):
    response = api.call("post", "/functions/{name}/environments", {**NEW, "region": "eu-west-1"}, name="hello")
    assert response.status_code == 400 and "region" in response.json()["error"]["fields"]
    assert _names(function) == ["production"]


# --- patch ----------------------------------------------------------------------------------


def test_the_owner_edits_an_environment_and_unsent_settings_stay(api, stages):
    staging, production = stages
    Environment.objects.filter(pk=production.pk).update(execution_role_arn=ROLE, variables={"A": "1"})
    response = api.call("patch", "/functions/{name}/environments/{env}", {"promotion": "automatic",
                        "soak_seconds": 600}, name="hello", env="production")
    assert response.status_code == 200, response.content
    production.refresh_from_db()
    assert (production.promotion, production.soak_seconds, production.variables) == ("automatic", 600, {"A": "1"})


def test_the_gitlab_tier_is_shown_edited_and_refused_when_unknown(api, stages):
    staging, production = stages
    Environment.objects.filter(pk=staging.pk).update(execution_role_arn=ROLE)
    shown = api.call("get", "/functions/{name}/environments/{env}", name="hello", env="staging")
    assert shown.json()["gitlab_tier"] == "staging"
    response = api.call("patch", "/functions/{name}/environments/{env}", {"gitlab_tier": "testing"}, name="hello",
                        env="staging")
    assert response.status_code == 200, response.content
    assert response.json()["gitlab_tier"] == "testing"
    kept = api.call("patch", "/functions/{name}/environments/{env}", {"memory_mb": 2048}, name="hello", env="staging")
    assert kept.json()["gitlab_tier"] == "testing"  # left out: kept
    bad = api.call("patch", "/functions/{name}/environments/{env}", {"gitlab_tier": "prod"}, name="hello",
                   env="staging")
    assert bad.status_code == 400 and "gitlab_tier" in bad.content.decode()
    assert Environment.objects.get(pk=staging.pk).gitlab_tier == "testing"


def test_an_environment_cannot_be_renamed(api, function):
    response = api.call("patch", "/functions/{name}/environments/{env}", {"name": "live"}, name="hello",
                        env="production")
    assert _error(response) == (400, "invalid", "an environment cannot be renamed")
    assert _names(function) == ["production"]


def test_reordering_while_a_deployment_runs_is_409_environment_in_use(api, stages, function):
    staging, production = stages
    Environment.objects.filter(pk=production.pk).update(execution_role_arn=ROLE)
    running = Deployment.objects.create(function=function, environment=staging, trigger="cli", status="building")
    response = api.call("patch", "/functions/{name}/environments/{env}", {"position": 0}, name="hello",
                        env="production")
    assert _error(response) == (409, "environment-in-use", f"deployment #{running.pk} of hello (staging) is building: "
                                                           "the promotion order cannot change until it finishes")
    assert _names(function) == ["staging", "production"]


@pytest.mark.parametrize("name, status", [("bob", 403), ("charlie", 403), ("dave", 404)])
def test_only_an_owner_edits_one(api, tokens, function, name, status):
    response = api.call("patch", "/functions/{name}/environments/{env}", {"memory_mb": 2048}, name="hello",
                        env="production", token=tokens[name])
    assert response.status_code == status
    assert function.first_environment.memory_mb == 1024


# --- delete ---------------------------------------------------------------------------------


def _delete(client, token, env):
    return client.delete(f"/api/v1/functions/hello/environments/{env}", HTTP_AUTHORIZATION=f"Bearer {token}")


def test_the_owner_deletes_an_environment_nothing_is_live_in(client, tokens, stages, function):
    response = _delete(client, tokens["alice"], "production")
    assert response.status_code == 204 and response.content == b""
    assert _names(function) == ["staging"]
    assert AuditEvent.objects.get(action="environment.deleted").detail["environment"] == "production"


def test_deleting_where_a_release_is_live_is_409_environment_in_use(client, tokens, stages, function):
    response = _delete(client, tokens["alice"], "staging")
    live = Deployment.objects.get(version="2")
    assert _error(response) == (409, "environment-in-use", f"version 2 is live in staging (deployment #{live.pk}): "
                                                           "an environment that serves a release cannot be deleted")
    assert _names(function) == ["staging", "production"] and Deployment.objects.count() == 2


def test_deleting_the_last_environment_is_409(client, tokens, function):
    response = _delete(client, tokens["alice"], "production")
    assert _error(response) == (409, "refused",
                                "production is hello's only environment: a function always deploys somewhere")
    assert _names(function) == ["production"]


@pytest.mark.parametrize("name, status", [("bob", 403), ("charlie", 403), ("dave", 404)])
def test_only_an_owner_deletes_one(client, tokens, stages, function, name, status):
    assert _delete(client, tokens[name], "production").status_code == status
    assert _names(function) == ["staging", "production"]


# --- promote --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice", "bob"])
def test_a_deployer_promotes_what_is_live_upstream_with_its_digest_pinned(api, tokens, stages, name):
    staging, production = stages
    response = api.call("post", "/functions/{name}/environments/{env}/promote", {}, name="hello", env="production",
                        token=tokens[name])
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["kind"], body["environment"], body["status"], body["trigger"]) == ("promotion", "production",
                                                                                    "queued", "api")
    assert body["digest"] == "sha256:" + "bb" * 32 and body["commit_sha"] == "b" * 40
    promotion = Deployment.objects.get(pk=body["id"])
    assert promotion.digest == body["digest"] and promotion.upstream.version == "2"


@pytest.mark.parametrize("name, status", [("charlie", 403), ("dave", 404)])
def test_a_viewer_or_stranger_cannot_promote(api, tokens, stages, name, status):
    response = api.call("post", "/functions/{name}/environments/{env}/promote", {}, name="hello", env="production",
                        token=tokens[name])
    assert response.status_code == status
    assert not Deployment.objects.filter(kind="promotion").exists()


def test_naming_a_release_not_live_upstream_is_409_not_verified_upstream(api, stages):
    response = api.call("post", "/functions/{name}/environments/{env}/promote", {"release": "1"}, name="hello",
                        env="production")
    status, code, message = _error(response)
    assert (status, code) == (409, "not-verified-upstream")
    assert message.startswith("'1' is not what hello (staging) serves (version 2, bbbbbbbbbbbb,")
    assert not Deployment.objects.filter(kind="promotion").exists()


def test_promoting_into_the_first_environment_is_400_deploy_instead(api, stages):
    response = api.call("post", "/functions/{name}/environments/{env}/promote", {}, name="hello", env="staging")
    assert _error(response) == (400, "deploy-instead", "staging is where hello deploys: deploy to it instead")
    assert not Deployment.objects.filter(kind="promotion").exists()


def test_promoting_when_nothing_is_live_upstream_is_409(api, function):
    staged(function)
    response = api.call("post", "/functions/{name}/environments/{env}/promote", {}, name="hello", env="production")
    assert _error(response) == (409, "not-verified-upstream", "nothing is live in hello (staging) to promote")


def test_a_deploy_only_token_promotes_but_does_not_read_settings(api, cast, stages):
    raw = ApiToken.issue(cast["bob"], "ci", deploy_only=True)[1]
    assert api.call("post", "/functions/{name}/environments/{env}/promote", {}, name="hello", env="production",
                    token=raw).status_code == 202
    response = api.call("get", "/functions/{name}/environments", name="hello", token=raw)
    assert _error(response)[:2] == (403, "token-scope")


# --- the environment the other endpoints take -----------------------------------------------


def test_a_deploy_goes_to_the_first_environment_and_is_refused_for_the_others(api, stages):
    response = api.call("post", "/functions/{name}/deployments", {"ref": "main"}, name="hello")
    assert response.status_code == 202 and response.json()["environment"] == "staging"
    refused = api.call("post", "/functions/{name}/deployments", {"environment": "production"}, name="hello")
    status, code, message = _error(refused)
    assert (status, code) == (400, "promote-instead")
    assert message.startswith("production is not where hello deploys: pushes deploy to staging")
    unknown = api.call("post", "/functions/{name}/deployments", {"environment": "qa"}, name="hello")
    assert _error(unknown) == (404, "environment-unknown", "hello has no environment 'qa' (it has staging, production)")
    assert Deployment.objects.filter(kind="deploy", status="queued").count() == 1


def test_a_rollback_names_its_environment_when_there_are_several(api, stages):
    refused = api.call("post", "/functions/{name}/rollback", {}, name="hello")
    assert _error(refused) == (400, "environment-required",
                               "hello has 2 environments (staging, production): name one")
    response = api.call("post", "/functions/{name}/rollback", {"environment": "staging"}, name="hello")
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["kind"], body["environment"], body["target_version"]) == ("rollback", "staging", "1")
    staging, production = stages
    staging.refresh_from_db(), production.refresh_from_db()
    assert staging.paused_reason and not production.paused_reason


def test_resume_lifts_the_pause_of_the_named_environment_only(api, stages):
    staging, production = stages
    Environment.objects.filter(function=staging.function).update(paused_reason="rolled back")
    refused = api.call("post", "/functions/{name}/resume", name="hello")
    assert _error(refused)[:2] == (400, "environment-required")
    response = api.call("post", "/functions/{name}/resume", name="hello", query={"environment": "production"})
    assert response.status_code == 200
    staging.refresh_from_db(), production.refresh_from_db()
    assert (staging.paused_reason, production.paused_reason) == ("rolled back", "")


def test_the_deployment_list_and_drift_name_the_environment_when_there_are_several(api, stages):
    refused = api.call("get", "/functions/{name}/deployments", name="hello")
    assert _error(refused)[:2] == (400, "environment-required")
    listed = api.call("get", "/functions/{name}/deployments", name="hello", query={"environment": "staging"})
    assert [d["version"] for d in listed.json()["items"]] == ["2", "1"]
    assert api.call("get", "/functions/{name}/deployments", name="hello",
                    query={"environment": "production"}).json()["count"] == 0
    assert _error(api.call("get", "/functions/{name}/drift", name="hello"))[:2] == (400, "environment-required")
    drift = api.call("get", "/functions/{name}/drift", name="hello", query={"environment": "production"})
    assert drift.status_code == 200 and drift.json()["changed_outside_slipway"] is False


def test_a_function_with_one_environment_needs_no_name(api, function):
    released(function, "1", "a" * 40)
    assert api.call("get", "/functions/{name}/deployments", name="hello").json()["count"] == 1
    assert api.call("get", "/functions/{name}/drift", name="hello").status_code == 200
    assert api.call("post", "/functions/{name}/resume", name="hello").status_code == 200
