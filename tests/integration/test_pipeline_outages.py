"""Outages fail a deployment with a precise message and leave no half-recorded row.

The pipeline runs in the test process here (the worker's code, called
directly) so that each test can point one part at an address where nothing
answers.
"""

import pytest

from deploy import aws
from portal.deployments.requesting import request_deploy
from portal.models import Deployment, DeploymentStep
from tests.conftest import free_port
from workers import tasks

pytestmark = pytest.mark.integration
Status = Deployment.Status


def _run(function) -> Deployment:
    deployment = Deployment.objects.create(function=function, trigger="cli", ref="main")
    tasks.deploy(deployment.pk)  # the worker's code, run in this process
    deployment.refresh_from_db()
    assert not deployment.steps.filter(status=DeploymentStep.Status.RUNNING).exists()
    assert deployment.steps.filter(finished_at__isnull=True).count() == 0
    return deployment


def test_an_aws_plane_that_is_down_fails_the_source_step_naming_the_endpoint(fixture_function, repo, monkeypatch):
    repo.release("one")
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    aws.reset()
    try:
        deployment = _run(fixture_function)
    finally:
        aws.reset()
    assert (deployment.status, deployment.error_code) == (Status.FAILED, "aws-unreachable")
    assert dead in deployment.error_message
    assert [(s.name, s.status) for s in deployment.steps.all()] == [("source", "failed")]


def test_a_docker_engine_that_is_down_fails_the_build(fixture_function, repo, settings, tmp_path):
    repo.release("one")
    settings.SLIPWAY_DOCKER_HOSTS = {**settings.SLIPWAY_DOCKER_HOSTS,
                                     fixture_function.architecture: f"unix://{tmp_path}/no-docker.sock"}
    deployment = _run(fixture_function)
    assert (deployment.status, deployment.error_code) == (Status.FAILED, "docker-unavailable")
    assert "Docker engine is not answering" in deployment.error_message
    assert deployment.steps.get(name="build").status == "failed"
    assert not deployment.steps.filter(name__in=["push", "update"]).exists()


def test_an_unreachable_registry_fails_the_push_and_leaves_lambda_untouched(fixture_function, repo, settings):
    repo.release("one")
    settings.SLIPWAY_REGISTRY_HOST = f"127.0.0.1:{free_port()}"
    deployment = _run(fixture_function)
    assert (deployment.status, deployment.error_code) == (Status.FAILED, "registry-login-failed")
    assert settings.SLIPWAY_REGISTRY_HOST in deployment.error_message
    assert deployment.steps.get(name="push").status == "failed"
    from deploy import lambdas

    assert lambdas.get_configuration(fixture_function.first_environment.lambda_name) is None


def test_a_bad_ref_is_refused_before_any_row_is_written(fixture_function):
    from portal.core.errors import RequestRefused

    with pytest.raises(RequestRefused):
        request_deploy(fixture_function, trigger="api", ref="-x")
    assert not Deployment.objects.filter(function=fixture_function).exists()
