"""Source errors end the deployment in its source step, recorded where the user
sees them, and are not retried: run through the deploy task in-process (git
fails before any AWS or Docker call)."""

import subprocess

import pytest

from portal.models import Deployment, DeploymentStep, Function, SourceAccess
from tests.conftest import create_function
from workers import tasks

Status = Deployment.Status


@pytest.fixture
def local_function(transactional_db, tmp_path, settings):
    settings.STATE_DIR = tmp_path / "state"
    return create_function(name="local", repository_url=str(tmp_path / "repo"), ecr_repository="t/local",
                           lambda_name="t-local")


def deploy(function, **fields) -> Deployment:
    deployment = Deployment.objects.create(function=function, trigger="cli", **fields)
    tasks.deploy(deployment.pk)
    deployment.refresh_from_db()
    return deployment


def test_a_directory_that_is_no_repository_fails_the_source_step_without_retrying(local_function, tmp_path):
    (tmp_path / "repo").mkdir()
    deployment = deploy(local_function)
    assert (deployment.status, deployment.error_code) == (Status.FAILED, "repository-not-found")
    step = deployment.steps.get()
    assert (step.name, step.status) == ("source", DeploymentStep.Status.FAILED)
    assert "error repository-not-found" in step.output and "retrying" not in step.output


def test_an_unknown_ref_fails_the_source_step_with_ref_not_found(local_function, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], cwd=repo, check=True)
    deployment = deploy(local_function, ref="no-such-branch")
    assert (deployment.status, deployment.error_code) == (Status.FAILED, "ref-not-found")
    step = deployment.steps.get()
    assert (step.name, step.status) == ("source", DeploymentStep.Status.FAILED)
    assert "'no-such-branch' is not a branch, tag or commit" in step.output


def test_a_private_repository_says_so_in_the_source_step_and_credentials_no_key_opens_fail_it(local_function):
    Function.objects.filter(pk=local_function.pk).update(repository_url="https://gitlab.example.com/team/local.git")
    SourceAccess.objects.filter(function=local_function).update(source_auth="token", source_username="deployer",
                                                                source_secret="gAAAAA-not-ours")
    deployment = deploy(local_function)
    assert (deployment.status, deployment.error_code) == (Status.FAILED, "repository-credentials")
    step = deployment.steps.get()
    assert step.name == "source" and "private repository: HTTPS deploy token (never in a command line" in step.output
