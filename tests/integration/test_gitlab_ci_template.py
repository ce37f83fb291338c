"""infra/gitlab-ci.yml: its job's script, run by bash as a GitLab runner would
(`set -eo pipefail`, the job's variables, a masked token), against a live Slipway
server and a real worker: the job follows the deployment and fails when it fails."""

import os
import subprocess

import pytest
import yaml

from devstack.common import REPO_ROOT
from portal.models import ApiToken, Deployment, Membership

pytestmark = pytest.mark.integration
TEMPLATE = REPO_ROOT / "infra" / "gitlab-ci.yml"
JOB = "slipway-deploy"


def job() -> dict:
    return yaml.safe_load(TEMPLATE.read_text())[JOB]


def run_job(live_server, token: str, function: str, commit: str, tmp_path) -> subprocess.CompletedProcess:
    """The job's script lines in one bash, with its variables, as the runner runs them."""
    definition = job()
    variables = {**definition["variables"], "SLIPWAY_FUNCTION": function, "SLIPWAY_POLL_SECONDS": "0.5",
                 "SLIPWAY_TIMEOUT_SECONDS": "300"}
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CI_COMMIT_SHA": commit,
           "SLIPWAY_URL": live_server.url, "SLIPWAY_TOKEN": token, **variables}
    script = "\n".join(definition["script"])
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=400)


def test_the_template_deploys_the_pipeline_commit_in_the_deploy_stage():
    definition = job()
    assert definition["stage"] == "deploy" and "deploy" in yaml.safe_load(TEMPLATE.read_text())["stages"]
    assert any("CI_COMMIT_SHA" in line for line in definition["script"])
    assert "SLIPWAY_TOKEN" not in definition["variables"]  # a masked CI/CD variable, never in the file
    assert "/hooks/gitlab/" in TEMPLATE.read_text()  # the webhook alternative is documented


@pytest.fixture
def ci_token(fixture_function, django_user_model):
    user = django_user_model.objects.create_user("gitlab-ci", "ci@example.org", "unused-password-1")
    Membership.objects.create(function=fixture_function, user=user, role=Membership.Role.DEPLOYER)
    return ApiToken.issue(user, "gitlab", function=fixture_function, deploy_only=True)[1]


def test_the_job_deploys_the_commit_and_a_failing_deployment_fails_the_job(
        live_server, worker, fixture_function, repo, ci_token, tmp_path):
    sha = repo.release("one")

    passed = run_job(live_server, ci_token, fixture_function.name, sha, tmp_path)

    assert passed.returncode == 0, passed.stdout + passed.stderr
    deployment = Deployment.objects.get(function=fixture_function)
    assert (deployment.status, deployment.commit_sha, deployment.trigger) == ("succeeded", sha, "api")
    assert f"deployment #{deployment.pk} succeeded: version 1 of {fixture_function.name} is live" in passed.stdout
    assert "  verify   succeeded" in passed.stdout
    assert ci_token not in passed.stdout + passed.stderr

    # The same commit again, now with a smoke event the function answers with an error: verify fails.
    fixture_function.smoke_event = {"fail": True}
    fixture_function.save()
    failed = run_job(live_server, ci_token, fixture_function.name, sha, tmp_path)

    assert failed.returncode != 0, failed.stdout
    second = Deployment.objects.filter(function=fixture_function).exclude(pk=deployment.pk).get()
    assert (second.status, second.error_code) == ("failed", "smoke-error-result")
    assert f"deployment #{second.pk} failed: smoke-error-result" in failed.stderr
    assert "  verify   failed" in failed.stdout


def test_the_job_fails_with_the_api_error_when_the_token_is_for_another_function(
        live_server, fixture_function, ci_token, tmp_path, db):
    result = run_job(live_server, ci_token, "some-other-function", "a" * 40, tmp_path)

    assert result.returncode != 0
    assert "Slipway answered 404: not-found" in result.stderr
    assert not Deployment.objects.exists()


def test_the_job_stops_before_calling_slipway_without_a_token(live_server, tmp_path):
    result = run_job(live_server, "", "detector", "a" * 40, tmp_path)

    assert result.returncode != 0
    assert "SLIPWAY_TOKEN is not set" in result.stdout
    assert "deploying" not in result.stdout
