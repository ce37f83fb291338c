"""Schemathesis generates requests from the API's own OpenAPI document and sends them
to the app in-process (WSGI): the examples the document gives, the coverage phase's
boundary and violating values of every constraint, then random (fuzzing) cases, each
with schema-valid and schema-violating data. Every answer must pass every check: no
server error, a documented status, a body matching its schema, schema-valid requests
not refused and schema-violating ones not accepted. Run once with an owner's token and
once with a viewer's; deterministic, the fuzzing phase capped.

Raw bodies that are not JSON are not generated: they are plain tests in test_api.py.
"""

from __future__ import annotations

from collections import Counter
from unittest import mock

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from portal.models import ApiToken, Deployment, FreezeWindow, Preview
from tests.conftest import released, staged, update_function
from tests.rollout_fixtures import rolling_out

TOKENS = {"owner": "slp_schemathesis-owner-0123456789", "viewer": "slp_schemathesis-viewer-0123456789"}
USERS = {"owner": "alice", "viewer": "charlie"}
QUEUED = 4242  # the deployment every {deployment_id} names: one the run can follow and cancel
WINDOW = 77  # the freeze window every {window_id} names: the environment's, or a global one under /freezes
MR = 12  # the merge request every {iid} names: an open preview (a fork's, awaiting approval)
# Schema-valid requests the server refuses for reasons no schema can state, as the API
# documents them: 400 (the settings' name prefixes and roles, the ECR repository ownership
# rule, cross-field rules), 403 (a viewer; tokens' scope), 404 (a page past the end), 409 (a
# name already taken, nothing to roll back to, too late to cancel, nothing to accept).
REFUSED_FOR_REASONS_NO_SCHEMA_STATES = ["400", "403", "404", "409"]
FUZZED_PER_OPERATION = 10  # the fuzzing phase's cap per operation; the coverage phase has none
# What each role must have reached with schema-valid requests, so that passing means something:
# the owner a success on every operation but accepting drift (there is none to accept here); the
# viewer a success on what a viewer may do and a 403 on everything else.
NO_SUCCESS_HERE = {"POST /api/v1/functions/{name}/drift/accept",
                   # approving a fork's preview: a signed-in session only, never a token
                   "POST /api/v1/functions/{name}/previews/{iid}/approve",
                   # global freeze windows: staff write them, and the owner is not staff
                   "POST /api/v1/freezes", "PATCH /api/v1/freezes/{window_id}", "DELETE /api/v1/freezes/{window_id}"}
# One deployment, one environment to delete: whichever request comes first.
FIRST_TAKES_IT = {"POST /api/v1/deployments/{deployment_id}/cancel",
                  "POST /api/v1/deployments/{deployment_id}/rollout/abort",
                  "DELETE /api/v1/functions/{name}/environments/{env}",
                  "DELETE /api/v1/functions/{name}/environments/{env}/freezes/{window_id}",
                  "POST /api/v1/functions/{name}/previews/{iid}/remove"}
VIEWER_MAY = {"GET /api/v1/functions", "POST /api/v1/functions", "GET /api/v1/functions/{name}",
              "GET /api/v1/functions/{name}/deployments", "GET /api/v1/deployments/{deployment_id}",
              "GET /api/v1/functions/{name}/drift", "GET /api/v1/functions/{name}/environments",
              "GET /api/v1/functions/{name}/environments/{env}",
              "GET /api/v1/approvals", "GET /api/v1/deployments/{deployment_id}/approvals",
              "GET /api/v1/functions/{name}/environments/{env}/freezes",
              "GET /api/v1/functions/{name}/environments/{env}/freezes/{window_id}",
              "GET /api/v1/freezes", "GET /api/v1/freezes/{window_id}",
              "GET /api/v1/functions/{name}/previews", "GET /api/v1/functions/{name}/previews/settings",
              "GET /api/v1/functions/{name}/previews/{iid}"}
# Every {env} names production. The environments' operations run on a function staged as
# staging (both releases live there) then production (nothing live: it may be promoted to,
# edited and deleted); the others on the one environment, which their defaults name.
ENVIRONMENT = "production"


def _schema(role: str):
    config = SchemathesisConfig.from_dict({
        "headers": {"Authorization": f"Bearer {TOKENS[role]}"},
        # Every path names the fixture's function and deployment: a random name only meets a 404.
        "parameters": {"path.name": "hello", "path.deployment_id": QUEUED, "path.env": ENVIRONMENT,
                       "path.window_id": WINDOW, "path.iid": MR},
        "generation": {"deterministic": True, "max-examples": FUZZED_PER_OPERATION, "database": "none"},
        "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True}},
        "checks": {"positive_data_acceptance": {
            "expected-statuses": ["2xx", *REFUSED_FOR_REASONS_NO_SCHEMA_STATES]}},
    })
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application(), config=config)


@pytest.fixture
def world(request, cast, function, sent, settings):
    """The function and its history as an owner and a viewer see them; the deploy rate limit
    off (the point is the answers, not the limit); no git host, AWS or broker reached."""
    settings.SLIPWAY_API_DEPLOY_RATE = 0
    update_function(function, lambda_name="slipway-hello", ecr_repository="slipway/hello",
                    execution_role_arn="arn:aws:iam::000000000000:role/x")
    if "/environments" in request.node.name:
        staged(function)
    released(function, "1", "a" * 40)
    released(function, "2", "b" * 40)
    if "/rollout/" in request.node.name:  # a rollout's control: the deployment is rolling out
        rolling_out(function, pk=QUEUED)
    else:
        Deployment.objects.create(pk=QUEUED, function=function, trigger="api", ref="main")
    if "/freezes" in request.node.name:  # one window to read, edit and delete: global under /api/v1/freezes
        environment = None if "/api/v1/freezes" in request.node.name else function.environments.get(name=ENVIRONMENT)
        FreezeWindow.objects.create(pk=WINDOW, environment=environment, reason="quiet", start_cron="0 1 * * *",
                                    end_cron="0 2 * * *", timezone="Europe/Berlin")
    if "/previews" in request.node.name:  # previews on, and one open preview of a same-project MR
        from portal.functions import preview_environment
        from tests.previews import previews_on

        previews_on(function)
        Preview.objects.create(function=function, environment=preview_environment(function), mr_iid=MR,
                               head_sha="d" * 40, source_branch="feature", target_branch="main")
    for role, name in USERS.items():
        ApiToken.objects.create(user=cast[name], name=role, token_hash=ApiToken.digest(TOKENS[role]))
    # Django's test client keeps the test's connection open across requests; the WSGI handler
    # Schemathesis calls would close it at the end of each one.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    seen = {"operation": "", GenerationMode.POSITIVE: Counter(), GenerationMode.NEGATIVE: Counter()}
    try:
        with (mock.patch("deploy.source.remote_head", autospec=True, return_value="c" * 40),
              mock.patch("deploy.aws.client", autospec=True, side_effect=AssertionError("no AWS call expected"))):
            yield seen
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)
    valid = seen[GenerationMode.POSITIVE]
    counted = valid + seen[GenerationMode.NEGATIVE] if seen["operation"] in FIRST_TAKES_IT else valid
    successes = sum(n for status, n in counted.items() if 200 <= status < 300)
    assert valid, "no schema-valid request was sent"
    if "[owner]" in request.node.name and seen["operation"] not in NO_SUCCESS_HERE:
        assert successes, f"{seen['operation']}: no schema-valid request succeeded: {seen}"
    if "[viewer]" in request.node.name:
        if seen["operation"] in VIEWER_MAY:
            assert successes, f"{seen['operation']}: no schema-valid request succeeded: {seen}"
        else:
            assert set(valid) == {403}, f"{seen['operation']}: a viewer was not refused: {seen}"


@schemathesis.pytest.parametrize(owner=_schema("owner"), viewer=_schema("viewer"))
# One world per operation and role, shared by its cases; no health check that measures time.
@hypothesis_settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_every_generated_request_passes_every_check(case, world):
    response = case.call()
    world["operation"] = case.operation.label
    world[case.meta.generation.mode][response.status_code] += 1
    case.validate_response(response)
