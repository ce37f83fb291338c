"""The deploy pipeline end to end on the real local stack: a Celery worker
process, Docker with BuildKit, Redis and the local AWS plane."""

import pytest

from deploy import aws, ecr
from portal.deployments.requesting import request_deploy, request_rollback
from portal.models import Deployment
from tests.integration.conftest import invoke_live, wait_done

pytestmark = pytest.mark.integration
Status = Deployment.Status
PIPELINE = ["source", "build", "push", "update", "wait", "publish", "verify", "shift"]


def steps(deployment) -> list[tuple[str, str]]:
    return [(s.name, s.status) for s in deployment.steps.order_by("position")]


def test_first_deploy_creates_an_arm64_lambda_and_the_alias_serves_it(worker, arm64_function, repo):
    fixture_function = arm64_function
    sha = repo.release("one")
    deployment = wait_done(request_deploy(fixture_function, trigger="cli"))
    assert (deployment.status, deployment.error_message) == (Status.SUCCEEDED, "")
    assert deployment.commit_sha == sha and deployment.version == "1"
    assert steps(deployment) == [(name, "succeeded") for name in PIPELINE]
    assert deployment.build.tag.startswith(sha[:12]) and deployment.build.tag.endswith("-arm64")
    assert deployment.build.digest.startswith("sha256:")
    assert deployment.build.platform == "linux/arm64"
    assert invoke_live(fixture_function) == {"release": "one", "echo": {"probe": 1}}
    published = aws.client("lambda").get_function(FunctionName=fixture_function.first_environment.lambda_name,
                                                  Qualifier="1")
    assert published["Code"]["ImageUri"].endswith(f"@{deployment.build.digest}")
    assert sha[:12] in published["Configuration"]["Description"]
    assert deployment.commit_message == "release one" and deployment.commit_author == "Slipway Tests"


def test_new_commit_goes_live_and_is_counted_in_the_metrics(worker, fixture_function, repo, client):
    repo.release("one")
    first = wait_done(request_deploy(fixture_function, trigger="cli"))
    repo.release("two")
    second = wait_done(request_deploy(fixture_function, trigger="cli"))
    assert second.status == Status.SUCCEEDED, second.error_message
    assert (first.version, second.version) == ("1", "2")
    assert invoke_live(fixture_function)["release"] == "two"
    assert second.init_ms is not None and second.init_ms > 0  # the verify invoke was a cold start
    assert second.memory_used_mb is None  # the local emulator does not measure it: not invented either
    scraped = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    counted = (f'slipway_deployments_total{{environment="production",error_code="",'
               f'function="{fixture_function.name}",kind="deploy",status="succeeded"}}')
    assert f"{counted} 2.0" in scraped
    assert 'slipway_step_duration_seconds_count{step="verify"} 2.0' in scraped


def test_rollback_restores_the_previous_release_without_a_build(worker, released_function, docker_client):
    images_before = ecr.count_images(released_function.ecr_repository)
    assert invoke_live(released_function)["release"] == "two"

    rollback = wait_done(request_rollback(released_function, trigger="cli"))

    assert rollback.status == Status.SUCCEEDED, rollback.error_message
    assert invoke_live(released_function)["release"] == "one"
    assert (rollback.version, rollback.previous_version) == ("1", "2")
    assert [name for name, _ in steps(rollback)] == ["check", "shift"]
    assert ecr.count_images(released_function.ecr_repository) == images_before
    # Only this function's images: the engine is shared, other runs build beside this one.
    assert docker_client.images.list(filters={"label": f"slipway.function={released_function.name}"}) == []
    assert rollback.duration is not None
    print(f"rollback took {rollback.duration.total_seconds():.2f} s")
    released_function.refresh_from_db()
    assert "rolled back to version 1" in released_function.first_environment.paused_reason


def test_redeploying_a_built_commit_skips_build_and_push(worker, fixture_function, repo):
    sha = repo.release("one")
    wait_done(request_deploy(fixture_function, trigger="cli"))
    again = wait_done(request_deploy(fixture_function, trigger="cli", commit=sha))
    assert again.status == Status.SUCCEEDED and again.kind == Deployment.Kind.REDEPLOY
    assert [(n, s) for n, s in steps(again) if n in ("build", "push")] == [("build", "skipped"), ("push", "skipped")]


def test_changed_build_args_build_a_new_image_for_the_same_commit(worker, fixture_function, repo):
    sha = repo.release("one")
    first = wait_done(request_deploy(fixture_function, trigger="cli"))
    fixture_function.build_args = {"SLIPWAY_TEST_VARIANT": "b"}
    fixture_function.save(update_fields=["build_args"])
    second = wait_done(request_deploy(fixture_function, trigger="cli", commit=sha))
    assert (second.status, second.kind) == (Status.SUCCEEDED, Deployment.Kind.DEPLOY), second.error_message
    assert [s for n, s in steps(second) if n == "build"] == ["succeeded"]
    assert second.build_id != first.build_id and second.build.tag != first.build.tag
    assert second.build.inputs["build_args"]["SLIPWAY_TEST_VARIANT"] == "b"
    assert ecr.count_images(fixture_function.ecr_repository) == 2


def test_the_verify_invoke_reports_its_cold_start_for_the_release_card(released_function):
    from deploy import lambdas

    version = released_function.deployments.order_by("pk").first().version
    invocation = lambdas.invoke(released_function.first_environment.lambda_name, version, {"probe": 1}, tail=True)
    report = lambdas.parse_report(invocation.log_tail)
    assert invocation.log_tail, "the plane sent no log tail"
    assert report.duration_ms is not None, invocation.log_tail
    assert report.memory_used_mb is None, invocation.log_tail  # the emulator does not measure memory
