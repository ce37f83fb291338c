"""The JSON API with the shared cast and every kind of token; every answer is
validated against the OpenAPI document the API serves."""

from datetime import timedelta

import jsonschema
import pytest
from django.utils import timezone

from portal.feedback.forms import GITLAB_TOKEN
from portal.functions.forms import ROLE_ARN
from portal.models import ApiToken, AuditEvent, Deployment, Environment, Function
from tests.api_client import Api, openapi, validate
from tests.conftest import create_function, released, update_function

Status = Deployment.Status


@pytest.fixture(autouse=True)
def _no_broker(sent):
    return sent


@pytest.fixture(autouse=True)
def no_rate_limit(settings):
    settings.SLIPWAY_API_DEPLOY_RATE = 0


@pytest.fixture
def doc(client):
    return openapi(client)


@pytest.fixture
def tokens(cast):
    return {name: ApiToken.issue(user, f"{name}'s")[1] for name, user in cast.items()}


@pytest.fixture
def api(client, doc):
    return Api(client, doc)


def test_the_openapi_document_declares_required_properties_and_is_browsable(client, doc):
    schemas = doc["components"]["schemas"]
    assert {"FunctionOut", "DeploymentOut", "FunctionIn", "ErrorOut"} <= set(schemas)
    assert "live" in schemas["FunctionOut"]["required"] and "steps" in schemas["DeploymentOut"]["required"]
    assert set(schemas["FunctionIn"]["properties"]) >= {"repository_url", "environment", "secret_environment"}
    assert client.get("/api/v1/docs").status_code == 200


def test_a_deliberately_wrong_response_does_not_validate(doc):
    with pytest.raises(jsonschema.ValidationError):
        validate(doc, "/functions/{name}", "get", 200, {"name": "hello"})  # required properties missing
    with pytest.raises(AssertionError, match="not declared"):
        validate(doc, "/functions/{name}", "get", 418, {})


@pytest.mark.parametrize("name, status", [("alice", 200), ("bob", 200), ("charlie", 200), ("dave", 404)])
def test_get_a_function_as_each_member(api, tokens, function, name, status):
    response = api.call("get", "/functions/{name}", name="hello", token=tokens[name])
    assert response.status_code == status


def test_the_list_shows_only_what_the_caller_may_see_and_filters_by_name(api, tokens, function):
    create_function(name="secret", repository_url="https://x.example/s.git", ecr_repository="slipway/s",
                    lambda_name="slipway-s")
    body = api.call("get", "/functions", token=tokens["charlie"]).json()
    assert [f["name"] for f in body["items"]] == ["hello"] and body["count"] == 1
    assert api.call("get", "/functions", token=tokens["charlie"], query={"name": "nope"}).json()["count"] == 0


@pytest.mark.parametrize("name, status", [("alice", 202), ("bob", 202), ("charlie", 403), ("dave", 404)])
def test_deploy_needs_a_deployer(api, tokens, function, name, status):
    response = api.call("post", "/functions/{name}/deployments", {"ref": "main"}, name="hello", token=tokens[name])
    assert response.status_code == status
    assert Deployment.objects.filter(trigger="api").count() == (1 if status == 202 else 0)


def test_a_deployment_can_be_followed_to_its_end(api, tokens, function):
    deployment = api.call("post", "/functions/{name}/deployments", {"commit": "c" * 40}, name="hello",
                          token=tokens["bob"]).json()
    assert (deployment["status"], deployment["terminal"]) == ("queued", False)
    Deployment.objects.get(pk=deployment["id"]).finish(Status.FAILED, "build-failed", "boom")
    followed = api.call("get", "/deployments/{deployment_id}", deployment_id=deployment["id"],
                        token=tokens["charlie"]).json()
    assert (followed["status"], followed["terminal"], followed["error_code"]) == ("failed", True, "build-failed")


@pytest.mark.parametrize("header, code", [
    ("", "unauthenticated"), ("Bearer slp_wrong", "invalid-token"), ("Basic YWxpY2U6eA==", "unauthenticated"),
])
def test_missing_and_wrong_credentials_get_401(client, doc, function, header, code):
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.get("/api/v1/functions/hello", **extra)
    assert (response.status_code, response.json()["error"]["code"]) == (401, code)
    validate(doc, "/functions/{name}", "get", 401, response.json())


def test_a_revoked_or_expired_token_is_refused(api, cast, function):
    token, raw = ApiToken.issue(cast["alice"], "old")
    ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    assert api.call("get", "/functions/{name}", name="hello", token=raw).json()["error"]["code"] == "token-revoked"
    token, raw = ApiToken.issue(cast["alice"], "short", expires_at=timezone.now() - timedelta(minutes=1))
    assert api.call("get", "/functions/{name}", name="hello", token=raw).json()["error"]["code"] == "token-expired"


def test_a_token_for_one_function_sees_no_other(api, cast, function):
    other = create_function(name="other", repository_url="https://x.example/o.git",
                            ecr_repository="slipway/o", lambda_name="slipway-o")
    other.memberships.create(user=cast["alice"], role="owner")
    _, raw = ApiToken.issue(cast["alice"], "hello only", function=function)
    assert api.call("get", "/functions/{name}", name="other", token=raw).status_code == 404
    assert [f["name"] for f in api.call("get", "/functions", token=raw).json()["items"]] == ["hello"]


def test_a_deploy_only_token_deploys_and_follows_but_does_nothing_else(api, cast, function):
    _, raw = ApiToken.issue(cast["alice"], "ci", function=function, deploy_only=True)
    deployed = api.call("post", "/functions/{name}/deployments", {}, name="hello", token=raw)
    assert deployed.status_code == 202
    followed = api.call("get", "/deployments/{deployment_id}", deployment_id=deployed.json()["id"], token=raw)
    assert followed.status_code == 200
    assert api.call("get", "/functions/{name}/deployments", name="hello", token=raw).status_code == 200
    for method, template, body in [("get", "/functions/{name}", None), ("patch", "/functions/{name}", {}),
                                   ("post", "/functions/{name}/rollback", {}), ("post", "/functions/{name}/resume",
                                                                                None)]:
        response = api.call(method, template, body, name="hello", token=raw)
        assert (response.status_code, response.json()["error"]["code"]) == (403, "token-scope"), template


def _new_function(**overrides) -> dict:
    body = {"name": "api-made", "repository_url": "https://gitlab.example.com/t/a.git", "branch": "main",
            "context_path": ".", "dockerfile_path": "Dockerfile", "architecture": "x86_64",
            "ecr_repository": "slipway/api-made", "lambda_name": "slipway-api-made", "alias": "live",
            "memory_mb": 512, "timeout_s": 30, "execution_role_arn": "arn:aws:iam::000000000000:role/x",
            "environment": {"MODE": "fast"}, "secret_environment": {"TOKEN": "s3cr3t-value"},
            "build_args": {}, "smoke_event": {"ping": 1}}
    body.update(overrides)
    return body


def test_creating_a_function_makes_the_caller_its_owner_and_masks_secrets(api, tokens, cast):
    response = api.call("post", "/functions", _new_function(), token=tokens["dave"])
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["environment"] == {"MODE": "fast", "TOKEN": "••••••"} and body["secret_keys"] == ["TOKEN"]
    function = Function.objects.get(name="api-made")
    assert (function.memberships.get().user == cast["dave"]
            and function.first_environment.variables["TOKEN"] == "s3cr3t-value")
    assert "s3cr3t-value" not in str(list(AuditEvent.objects.values_list("detail", flat=True)))


@pytest.mark.parametrize("field, value, message", [
    ("repository_url", "ext::sh -c x", "not an allowed repository URL"),
    ("lambda_name", "prod-payments", "whose names start with slipway-"),
    ("architecture", "sparc", "Input should be 'arm64' or 'x86_64'"),
    ("memory_mb", "lots", "valid integer"),
    ("environment", {"AWS_REGION": "x"}, "reserved by Lambda"),
])
def test_bad_payloads_get_field_errors_and_store_nothing(api, tokens, field, value, message):
    response = api.call("post", "/functions", _new_function(**{field: value}), token=tokens["dave"])
    assert response.status_code == 400
    assert message in " ".join(response.json()["error"]["fields"][field])
    assert not Function.objects.filter(name="api-made").exists()


@pytest.mark.parametrize("allowed", [True, False])
def test_a_local_repository_path_outside_local_mode_needs_the_explicit_switch(api, tokens, settings, tmp_path,
                                                                              allowed):
    # The compose demo registers a checkout mounted into the workers; production refuses paths.
    settings.LOCAL_MODE, settings.SLIPWAY_ALLOW_LOCAL_REPOSITORIES = False, allowed
    response = api.call("post", "/functions", _new_function(repository_url=str(tmp_path)), token=tokens["dave"])
    if allowed:
        assert response.status_code == 201, response.json()
        assert Function.objects.get(name="api-made").repository_url == str(tmp_path)
    else:
        assert response.status_code == 400
        assert "SLIPWAY_ALLOW_LOCAL_REPOSITORIES=1" in " ".join(response.json()["error"]["fields"]["repository_url"])
        assert not Function.objects.filter(name="api-made").exists()


def test_an_owner_patches_only_what_it_sends(api, tokens, function):
    update_function(function, lambda_name="slipway-hello", ecr_repository="slipway/hello",
                    execution_role_arn="arn:aws:iam::000000000000:role/x")
    response = api.call("patch", "/functions/{name}", {"memory_mb": 2048}, name="hello", token=tokens["alice"])
    assert response.status_code == 200, response.json()
    function.refresh_from_db()
    assert (function.first_environment.memory_mb, function.branch) == (2048, "main")
    assert api.call("patch", "/functions/{name}", {"memory_mb": 4096}, name="hello",
                    token=tokens["bob"]).status_code == 403


def test_rollback_cancel_and_resume(api, tokens, function):
    released(function, "1", "a" * 40)
    released(function, "2", "b" * 40)
    rollback = api.call("post", "/functions/{name}/rollback", {"to": "1"}, name="hello", token=tokens["bob"])
    assert rollback.status_code == 202 and rollback.json()["target_version"] == "1"
    pk = rollback.json()["id"]
    cancelled = api.call("post", "/deployments/{deployment_id}/cancel", deployment_id=pk, token=tokens["bob"])
    assert cancelled.json()["status"] == "cancelled"
    again = api.call("post", "/deployments/{deployment_id}/cancel", deployment_id=pk, token=tokens["bob"])
    assert (again.status_code, again.json()["error"]["code"]) == (409, "too-late")
    resumed = api.call("post", "/functions/{name}/resume", name="hello", token=tokens["bob"])
    assert resumed.json()["paused_reason"] == ""


def test_a_session_works_with_csrf_only(client, doc, cast, function):
    client.force_login(cast["bob"])
    assert client.get("/api/v1/functions/hello").status_code == 200
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(cast["bob"])
    response = strict.post("/api/v1/functions/hello/deployments", "{}", content_type="application/json")
    assert (response.status_code, response.json()["error"]["code"]) == (403, "csrf-failed")


def test_a_body_over_the_cap_gets_413(client, tokens, function, settings):
    big = '{"ref": "' + "a" * (settings.SLIPWAY_API_MAX_BODY + 10) + '"}'
    response = client.post("/api/v1/functions/hello/deployments", big, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {tokens['bob']}")
    assert (response.status_code, response.json()["error"]["code"]) == (413, "too-large")


def test_bad_json_is_a_400_not_a_500(api, tokens, client, doc, function):
    response = client.post("/api/v1/functions/hello/deployments", "{not json", content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {tokens['bob']}")
    assert response.status_code == 400
    validate(doc, "/functions/{name}/deployments", "post", 400, response.json())


# --- What Schemathesis found (tests/test_api_fuzz.py), pinned as plain tests ------------------------


@pytest.fixture
def compliant(function):
    """`function` with names the settings' prefixes allow, so an owner's edits can succeed."""
    update_function(function, lambda_name="slipway-hello", ecr_repository="slipway/hello",
                    execution_role_arn="arn:aws:iam::000000000000:role/x")
    function.refresh_from_db()
    return function


def test_a_page_past_an_empty_filtered_list_is_no_such_page(api, tokens, function):
    response = api.call("get", "/functions", token=tokens["alice"], query={"name": "zz", "page": 2})
    assert (response.status_code, response.json()["error"]["code"]) == (404, "no-such-page")


BODY_ENDPOINTS = [("patch", "/functions/hello"), ("patch", "/functions/hello/feedback"),
                  ("post", "/functions/hello/deployments"), ("post", "/functions/hello/rollback"),
                  ("post", "/functions")]


@pytest.mark.parametrize("method, path", BODY_ENDPOINTS)
@pytest.mark.parametrize("body", ["[null, null]", "[]", "null", "5", '"main"'])
def test_a_body_that_is_not_a_json_object_is_refused(client, doc, tokens, compliant, method, path, body):
    released(compliant, "1", "a" * 40)
    released(compliant, "2", "b" * 40)
    response = getattr(client, method)(f"/api/v1{path}", body, content_type="application/json",
                                       HTTP_AUTHORIZATION=f"Bearer {tokens['alice']}")
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid"), response.json()
    assert response.json()["error"]["fields"] == {"body": ["must be a JSON object"]}
    assert not AuditEvent.objects.exists() and not Deployment.objects.filter(trigger="api").exists()


@pytest.mark.parametrize("body", ["{", "[1,", "\x00", '{"ref": "main"', "\xff\xfe"])
def test_a_body_that_is_not_json_is_a_400(client, doc, tokens, function, body):
    # Schemathesis sends only JSON: raw bodies stay plain tests.
    response = client.post("/api/v1/functions/hello/deployments", body, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {tokens['bob']}")
    assert response.status_code == 400
    validate(doc, "/functions/{name}/deployments", "post", 400, response.json())
    assert not Deployment.objects.exists()


@pytest.mark.parametrize("method, template, body, unknown", [
    ("post", "/functions/{name}/deployments", {"ref": "main", "branch": "main"}, "branch"),
    ("post", "/functions/{name}/rollback", {"version": "1"}, "version"),
    ("patch", "/functions/{name}", {"memory": 256}, "memory"),
    ("patch", "/functions/{name}/feedback", {"gitlab_url": "https://gitlab.example.com"}, "gitlab_url"),
    ("post", "/functions", _new_function(memroy_mb=256), "memroy_mb"),
])
def test_a_field_the_server_does_not_know_is_refused_not_ignored(api, tokens, compliant, method, template, body,
                                                                 unknown):
    released(compliant, "1", "a" * 40)
    released(compliant, "2", "b" * 40)
    response = api.call(method, template, body, name="hello", token=tokens["alice"])
    assert response.status_code == 400, response.json()
    assert list(response.json()["error"]["fields"]) == [unknown]
    assert not AuditEvent.objects.exists() and not Deployment.objects.filter(trigger="api").exists()


def test_a_commit_must_be_a_full_sha(api, tokens, function):
    response = api.call("post", "/functions/{name}/deployments", {"commit": "abc1234"}, name="hello",
                        token=tokens["bob"])
    assert response.status_code == 400
    assert "commit" in response.json()["error"]["fields"]
    assert not Deployment.objects.exists()


def _constraints(schema: dict, name: str) -> dict:
    """A property's own constraints (an optional one is anyOf [its schema, null])."""
    prop = schema["properties"][name]
    return next((s for s in prop.get("anyOf", [prop]) if s.get("type") != "null"), prop)


def test_the_request_schemas_state_the_rules_the_server_enforces(doc):
    schemas = doc["components"]["schemas"]
    function_in = schemas["FunctionIn"]
    assert {"name", "repository_url", "branch", "ecr_repository", "lambda_name", "memory_mb",
            "timeout_s"} <= set(function_in["required"])
    for shape in (function_in, schemas["FunctionPatch"]):
        assert (_constraints(shape, "memory_mb")["minimum"], _constraints(shape, "memory_mb")["maximum"]) == (
            128, 10240)
        assert (_constraints(shape, "timeout_s")["minimum"], _constraints(shape, "timeout_s")["maximum"]) == (1, 900)
        assert _constraints(shape, "lambda_name")["minLength"] == 1
        assert _constraints(shape, "name")["pattern"] == "^[-a-zA-Z0-9_]+$"
        assert _constraints(shape, "environment")["propertyNames"]["pattern"] == "^[A-Za-z][A-Za-z0-9_]*$"
        for name in ("alias", "lambda_name", "ecr_repository"):  # the model field's own rule
            model = Function if name == "ecr_repository" else Environment  # the Lambda's settings: its environment's
            model_rule = next(v for v in model._meta.get_field(name).validators if hasattr(v, "regex"))
            assert _constraints(shape, name)["pattern"] == model_rule.regex.pattern, name
        # Empty: the default role from settings.
        assert _constraints(shape, "execution_role_arn")["pattern"] == f"^$|{ROLE_ARN.pattern}"
    assert _constraints(schemas["DeployIn"], "commit")["pattern"] == "^[0-9a-f]{40}$"
    assert _constraints(schemas["FeedbackPatch"], "gitlab_token")["pattern"] == f"^$|{GITLAB_TOKEN.pattern}"
    for name in ("FunctionIn", "FunctionPatch", "DeployIn", "RollbackIn", "FeedbackPatch"):
        assert schemas[name]["additionalProperties"] is False, name


@pytest.mark.parametrize("method, template, body, field", [
    ("patch", "/functions/{name}", {"auto_deploy": 0}, "auto_deploy"),
    ("patch", "/functions/{name}", {"memory_mb": "2048"}, "memory_mb"),
    ("patch", "/functions/{name}/feedback", {"remove_gitlab_token": "yes"}, "remove_gitlab_token"),
])
def test_a_value_of_another_type_is_refused_not_coerced(api, tokens, compliant, method, template, body, field):
    response = api.call(method, template, body, name="hello", token=tokens["alice"])
    assert response.status_code == 400, response.json()
    assert list(response.json()["error"]["fields"]) == [field]
    assert not AuditEvent.objects.exists()


def test_an_environment_value_cannot_smuggle_in_another_variable(api, tokens, compliant):
    # The form reads the environment as KEY=value lines: a line break in a value would start a new one.
    response = api.call("patch", "/functions/{name}", {"environment": {"MODE": "fast\nDEBUG=1"}},
                        name="hello", token=tokens["alice"])
    assert response.status_code == 400, response.json()
    assert "environment.MODE" in response.json()["error"]["fields"]
    compliant.refresh_from_db()
    assert compliant.first_environment.variables == {}


def test_a_whole_number_written_with_a_fraction_is_still_a_whole_number(api, tokens, compliant):
    # JSON Schema counts 2048.0 as an integer, so the document allows it.
    response = api.call("patch", "/functions/{name}", {"memory_mb": 2048.0}, name="hello", token=tokens["alice"])
    assert response.status_code == 200, response.json()
    compliant.refresh_from_db()
    assert compliant.first_environment.memory_mb == 2048


def test_a_name_or_lambda_already_taken_is_a_conflict_not_a_bad_request(api, tokens):
    assert api.call("post", "/functions", _new_function(), token=tokens["dave"]).status_code == 201
    again = api.call("post", "/functions", _new_function(ecr_repository="slipway/api-made-2"), token=tokens["dave"])
    assert (again.status_code, again.json()["error"]["code"]) == (409, "taken"), again.json()
    assert set(again.json()["error"]["fields"]) == {"name", "lambda_name"}
    # Anything wrong besides is the request's own fault: 400, all of it.
    mixed = api.call("post", "/functions", _new_function(ecr_repository="team/api-made"), token=tokens["dave"])
    assert mixed.status_code == 400
    assert set(mixed.json()["error"]["fields"]) == {"name", "lambda_name", "ecr_repository"}
    assert Function.objects.filter(name="api-made").count() == 1
