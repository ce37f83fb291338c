"""Environments through the API on the real stack: add a staging environment in front of
production, deploy to it with a real worker, then promote it into production — the
promotion is queued with the digest staging's Lambda runs pinned on its row."""

import pytest

from deploy import aws, lambdas
from portal.models import ApiToken, Deployment, Membership
from tests.api_client import Api, follow, openapi
from tests.conftest import wait_for
from tests.integration.conftest import remove_from_plane

pytestmark = pytest.mark.integration
ROLE = "arn:aws:iam::000000000000:role/slipway-test"




def test_add_staging_deploy_to_it_and_promote_its_digest_through_the_api(
        client, fixture_function, repo, worker, django_user_model, settings):
    settings.SLIPWAY_API_DEPLOY_RATE = 0
    settings.SLIPWAY_ALLOWED_EXECUTION_ROLES = [ROLE]
    function = fixture_function
    name, production_lambda = function.name, function.first_environment.lambda_name
    staging_lambda = f"{production_lambda}-stg"
    owner = django_user_model.objects.create_user("owner", "owner@example.org", "unused-password-1")
    Membership.objects.create(function=function, user=owner, role=Membership.Role.OWNER)
    api = Api(client, openapi(client), token=ApiToken.issue(owner, "ci")[1])
    commit = repo.release("1")
    try:
        created = api.call("post", "/functions/{name}/environments", {
            "name": "staging", "lambda_name": staging_lambda, "position": 0, "memory_mb": 256,
            "execution_role_arn": ROLE}, name=name)
        assert created.status_code == 201, created.json()
        listed = api.call("get", "/functions/{name}/environments", name=name).json()["items"]
        assert [(e["name"], e["position"]) for e in listed] == [("staging", 0), ("production", 1)]

        deployed = follow(api, api.call("post", "/functions/{name}/deployments", {"commit": commit},
                                        name=name).json())
        assert (deployed["status"], deployed["environment"], deployed["version"]) == ("succeeded", "staging", "1"), \
            deployed["error_message"]
        aws.reset()
        running = lambdas.image_digest(aws.client("lambda").get_function(FunctionName=staging_lambda,
                                                                         Qualifier="live"))
        assert running.startswith("sha256:") and running == deployed["digest"]

        response = api.call("post", "/functions/{name}/environments/{env}/promote", {"release": "1"},
                            name=name, env="production")
        assert response.status_code == 202, response.json()
        promotion = response.json()
        assert (promotion["kind"], promotion["environment"], promotion["status"]) == ("promotion", "production",
                                                                                      "queued")
        assert promotion["digest"] == running and promotion["commit_sha"] == commit
        row = Deployment.objects.get(pk=promotion["id"])
        assert (row.digest, row.upstream_id) == (running, deployed["id"])
        assert row.build_id == Deployment.objects.get(pk=deployed["id"]).build_id  # the same build: none made

        promoted = follow(api, promotion)
        assert (promoted["status"], promoted["environment"]) == ("succeeded", "production"), \
            promoted["error_message"]
        aws.reset()
        serving = lambdas.image_digest(aws.client("lambda").get_function(FunctionName=production_lambda,
                                                                         Qualifier="live"))
        assert serving == running
        timeline = list(Deployment.objects.get(pk=promotion["id"]).steps.order_by("position")
                        .values_list("name", flat=True))
        assert timeline == ["check", "update", "wait", "publish", "verify", "shift"]
    finally:
        for row in Deployment.objects.filter(function=function).exclude(status__in=Deployment.TERMINAL):
            client.post(f"/api/v1/deployments/{row.pk}/cancel", HTTP_AUTHORIZATION=f"Bearer {api.token}")
            wait_for(lambda row=row: Deployment.objects.get(pk=row.pk).is_terminal, 60,
                     f"deployment #{row.pk} to end")
        remove_from_plane(staging_lambda, function.ecr_repository)
