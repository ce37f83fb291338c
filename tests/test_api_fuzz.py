"""Random JSON bodies (and a few not-JSON ones) posted to every API endpoint
never get a 500; at least half of the examples carry valid authentication, and
both accepted requests and 400s with field errors must have occurred."""

from unittest import mock

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.models import ApiToken, Build, Deployment

ENDPOINTS = [
    ("get", "/api/v1/functions"), ("post", "/api/v1/functions"), ("get", "/api/v1/functions/hello"),
    ("patch", "/api/v1/functions/hello"), ("post", "/api/v1/functions/hello/deployments"),
    ("get", "/api/v1/functions/hello/deployments"), ("get", "/api/v1/deployments/{pk}"),
    ("post", "/api/v1/functions/hello/rollback"), ("post", "/api/v1/deployments/{pk}/cancel"),
    ("post", "/api/v1/functions/hello/resume"),
]
FIELDS = ["name", "ref", "commit", "to", "repository_url", "branch", "architecture", "memory_mb", "timeout_s",
          "environment", "secret_environment", "build_args", "smoke_event", "lambda_name", "ecr_repository",
          "auto_deploy", "execution_role_arn", "context_path", "dockerfile_path", "alias", "description"]
scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=50)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8),
                                                                                            inner, max_size=3),
                      max_leaves=8)
bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), values, max_size=6) | values


@pytest.fixture
def world(cast, function, settings_override):
    build = Build.objects.create(function=function, commit_sha="a" * 40, architecture="arm64", inputs_digest="a",
                                 status=Build.Status.SUCCEEDED, digest="sha256:" + "a" * 64)
    deployment = Deployment.objects.create(function=function, trigger="cli", status="succeeded", version="1",
                                           build=build, commit_sha="a" * 40)
    return {"token": ApiToken.issue(cast["alice"], "fuzz")[1], "pk": deployment.pk}


@pytest.fixture
def settings_override(settings):
    settings.SLIPWAY_API_DEPLOY_RATE = 0  # rate limiting off: the point is the answers, not the limit


@pytest.mark.django_db
def test_no_body_or_header_makes_the_api_answer_500(world):
    seen = {"authenticated": 0, "total": 0, "accepted": 0, "field_errors": 0}
    client = Client()

    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(endpoint=st.sampled_from(ENDPOINTS), body=bodies, authenticated=st.sampled_from([True, True, False]),
           raw=st.sampled_from([None, "{", "[1,", "\x00", "null"]))
    def check(endpoint, body, authenticated, raw):
        import json

        method, path = endpoint
        headers = {"HTTP_AUTHORIZATION": f"Bearer {world['token']}"} if authenticated else {}
        payload = raw if raw is not None else json.dumps(body)
        with mock.patch("portal.sending.app.send_task", autospec=True) as send_task:
            send_task.return_value.id = "task-1"
            url = path.format(pk=world["pk"])
            if method == "get":  # a GET has no body: fuzz its query string instead
                response = client.get(url, {"page": str(body)[:20], "name": str(body)[:20]}, **headers)
            else:
                response = getattr(client, method)(url, payload, content_type="application/json", **headers)
        assert response.status_code < 500, (method, path, payload[:200], response.content[:500])
        seen["total"] += 1
        seen["authenticated"] += authenticated
        seen["accepted"] += response.status_code in (200, 201, 202)
        seen["field_errors"] += response.status_code == 400 and bool(response.json()["error"]["fields"])

    check()
    assert seen["authenticated"] * 2 >= seen["total"] > 0, seen
    assert seen["accepted"] > 0 and seen["field_errors"] > 0, seen
