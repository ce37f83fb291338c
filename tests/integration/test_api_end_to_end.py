"""The API end to end on the real local stack: create the detector, deploy it,
follow the deployment to its end, deploy again, roll back — with a token, as a
CI job would."""

import subprocess

import pytest

from deploy import lambdas
from devstack.common import REPO_ROOT
from portal.management.commands.bootstrap_local import detector_smoke_event
from portal.models import ApiToken
from tests.api_client import Api, follow, openapi
from tests.integration.conftest import remove_from_plane

pytestmark = pytest.mark.integration


@pytest.fixture
def detector_names(unique):
    names = {"name": f"api-detector-{unique}", "lambda": f"slipway-api-detector-{unique}",
             "ecr": f"slipway/api-detector-{unique}"}
    yield names
    remove_from_plane(names["lambda"], names["ecr"])




def test_create_deploy_follow_and_roll_back_the_detector_through_the_api(
        client, transactional_db, django_user_model, worker, detector_names, settings):
    settings.SLIPWAY_API_DEPLOY_RATE = 0
    user = django_user_model.objects.create_user("ci", "ci@example.org", "unused-password-1")
    api = Api(client, openapi(client), token=ApiToken.issue(user, "ci")[1])
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    created = api.call("post", "/functions", {
        "name": detector_names["name"], "repository_url": str(REPO_ROOT), "branch": "main",
        "context_path": "function", "dockerfile_path": "Dockerfile", "architecture": "x86_64",
        "ecr_repository": detector_names["ecr"], "lambda_name": detector_names["lambda"], "alias": "live",
        "memory_mb": 1024, "timeout_s": 30, "execution_role_arn": "arn:aws:iam::000000000000:role/slipway-lambda",
        "smoke_event": detector_smoke_event()})
    assert created.status_code == 201, created.json()

    first = follow(api, api.call("post", "/functions/{name}/deployments", {"commit": head},
                                 name=detector_names["name"]).json())
    assert (first["status"], first["version"]) == ("succeeded", "1"), first["error_message"]
    assert [s["name"] for s in first["steps"]] == ["source", "build", "push", "update", "wait", "publish",
                                                   "verify", "shift"]
    second = follow(api, api.call("post", "/functions/{name}/deployments", {"commit": head},
                                  name=detector_names["name"]).json())
    assert (second["status"], second["kind"], second["version"]) == ("succeeded", "redeploy", "2")

    rolled = follow(api, api.call("post", "/functions/{name}/rollback", {"to": "1"},
                                  name=detector_names["name"]).json())
    assert (rolled["status"], rolled["version"], rolled["previous_version"]) == ("succeeded", "1", "2")
    assert lambdas.alias_version(detector_names["lambda"], "live") == "1"
    live = api.call("get", "/functions/{name}", name=detector_names["name"]).json()
    assert (live["live"]["version"], live["paused_reason"] != "") == ("1", True)
    assert api.checked >= 8
