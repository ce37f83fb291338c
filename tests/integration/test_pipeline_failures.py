"""The deploy pipeline under pressure and when things go wrong, on the real
local stack: a burst of requests, a worker killed mid-build, a rollback racing
a build, and faults injected at the boto3 seam of the real worker process."""

import io
import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from deploy import aws, ecr, lambdas
from devstack import base_images
from portal.deployments import steps, sweeper
from portal.deployments.requesting import request_deploy, request_rollback
from portal.models import Build, Deployment, DeploymentStep
from tests.conftest import set_environment, wait_for
from tests.integration.conftest import DOCKERFILE, invoke_live, processes, slow_dockerfile, wait_done

pytestmark = pytest.mark.integration
Status = Deployment.Status


def deployed(function, repo, release: str) -> Deployment:
    repo.release(release)
    deployment = wait_done(request_deploy(function, trigger="cli"))
    assert deployment.status == Status.SUCCEEDED, deployment.error_message
    return deployment


def alias_version(function) -> str | None:
    return lambdas.alias_version(function.first_environment.lambda_name, function.first_environment.alias)


def step_names(deployment) -> list[str]:
    return list(deployment.steps.order_by("position").values_list("name", flat=True))


def building(deployment) -> list[int]:
    """The pids of the deployment's docker build CLI once its build step is recorded as running."""
    deployment.refresh_from_db()
    if deployment.status != Status.BUILDING or not deployment.steps.filter(name="build").exists():
        return []
    return build_clis(deployment)


def build_clis(deployment) -> list[int]:
    return processes("build", f"slipway.deployment={deployment.pk}", f"slipway.function={deployment.function.name}")


# --- Concurrency ------------------------------------------------------------------


@pytest.mark.postgres
def test_a_burst_of_requests_ends_with_the_newest_live_and_updates_never_overlap(worker, fixture_function, repo):
    shas = [repo.release(f"r{n}") for n in range(20)]
    first = request_deploy(fixture_function, trigger="api", commit=shas[0])
    # The rest arrive while the first runs: it cannot be superseded, so at least it and the newest update.
    wait_for(lambda: Deployment.objects.get(pk=first.pk).status != Status.QUEUED, 60, "the first deploy to start")
    requests = [first] + [request_deploy(fixture_function, trigger="api", commit=sha) for sha in shas[1:]]

    for deployment in requests:
        wait_done(deployment)
    newest = requests[-1]
    assert newest.status == Status.SUCCEEDED, newest.error_message
    assert invoke_live(fixture_function)["release"] == "r19"
    assert alias_version(fixture_function) == newest.version
    assert {d.status for d in requests} <= {Status.SUCCEEDED, Status.SUPERSEDED}
    windows = sorted(
        (d.steps.get(name="update").started_at, d.steps.get(name="shift").finished_at, d.pk)
        for d in requests if d.status == Status.SUCCEEDED)
    assert len(windows) >= 2, "fewer than two deployments reached the update step: nothing could overlap"
    for (_, earlier_end, earlier), (later_start, _, later) in zip(windows, windows[1:], strict=False):
        assert later_start >= earlier_end, f"#{later} updated the Lambda while #{earlier} was still shifting"
    reached = {name: DeploymentStep.objects.filter(deployment__in=requests, name=name).count()
               for name in ("source", "build", "update", "publish", "shift")}
    print(f"burst on {connection.vendor}: {len(windows)} of 20 ran, steps reached {reached}, "
          f"alias at version {alias_version(fixture_function)}")


def test_a_worker_killed_mid_build_is_settled_as_worker_lost_and_leaves_nothing_behind(
        worker, fixture_function, repo, unique, settings, docker_client):
    marker = f"slipway-kill-{unique}"
    repo.release("slow", dockerfile=slow_dockerfile(marker, 60))
    deployment = request_deploy(fixture_function, trigger="cli")
    cli_pids = wait_for(lambda: building(deployment), 60, "the build to run in a docker CLI process")
    wait_for(lambda: processes(marker), 30, "the slow RUN step to start")
    try:
        worker.kill()
        wait_for(lambda: not any(build_clis(deployment) + processes(marker)),
                 20, f"the build CLI {cli_pids} and its RUN step to go away with the worker")
    finally:
        worker.start()

    settings.HEARTBEAT_STALE_SECONDS = 1  # in this process only: the sweeper is run here, on demand
    wait_for(lambda: deployment.pk in sweeper.sweep()["worker_lost"], 30, "the sweeper to settle the row")
    deployment.refresh_from_db()
    assert (deployment.status, deployment.error_code) == (Status.FAILED, "worker-lost")
    assert not deployment.steps.filter(status=DeploymentStep.Status.RUNNING).exists()
    assert deployment.build.status == deployment.build.Status.FAILED
    assert not (steps.work_root() / "workspaces" / steps.workspace_name(deployment.pk)).exists()
    # Deployment numbers repeat across stacks sharing the engine; the function's name does not.
    label = {"label": [f"slipway.deployment={deployment.pk}", f"slipway.function={fixture_function.name}"]}
    assert docker_client.containers.list(all=True, filters=label) == []
    assert docker_client.images.list(filters=label) == []

    assert deployed(fixture_function, repo, "after").version == "1"
    assert invoke_live(fixture_function)["release"] == "after"


def test_a_pool_process_killed_mid_build_is_settled_by_its_worker_and_the_next_deployment_starts(
        worker, fixture_function, repo, unique):
    marker = f"slipway-orphan-{unique}"
    repo.release("slow", dockerfile=slow_dockerfile(marker, 60))
    deployment = request_deploy(fixture_function, trigger="cli")
    cli = wait_for(lambda: building(deployment), 60, "the build to run in a docker CLI process")[0]
    wait_for(lambda: processes(marker), 30, "the slow RUN step to start")
    parent = int(Path(f"/proc/{cli}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert worker.node in Path(f"/proc/{parent}/cmdline").read_text(), "the CLI's parent is not our worker"
    repo.release("next")
    following = request_deploy(fixture_function, trigger="cli")  # waits behind the build
    killed_at, killed = timezone.now(), time.monotonic()

    os.kill(parent, signal.SIGKILL)  # that process alone, as the OOM killer would: no signal reaches the CLI

    wait_for(lambda: not any(build_clis(deployment) + processes(marker)), 20,
             "the build CLI and its RUN step to die with their parent (PR_SET_PDEATHSIG)")
    wait_done(deployment, timeout=30)  # the sweeper never runs here, and the worker's heartbeat window is an hour
    assert (deployment.status, deployment.error_code) == (Status.FAILED, "worker-lost")
    assert "the worker process running it died" in deployment.error_message, "not settled by the worker"
    started = wait_for(lambda: Deployment.objects.get(pk=following.pk).started_at, 30, "the next deployment")
    print(f"pool process SIGKILL at {killed_at:%H:%M:%S.%f} -> row settled at {deployment.finished_at:%H:%M:%S.%f}, "
          f"next deployment started at {started:%H:%M:%S.%f}; seen here {time.monotonic() - killed:.1f} s after it")
    assert wait_done(following).status == Status.SUCCEEDED, following.error_message


@pytest.mark.postgres
def test_a_rollback_requested_during_a_build_goes_live_and_the_deploy_never_shifts(
        worker, fixture_function, repo, unique):
    first = deployed(fixture_function, repo, "one")
    deployed(fixture_function, repo, "two")
    repo.release("three", dockerfile=slow_dockerfile(f"slipway-race-{unique}", 8))
    deploy = request_deploy(fixture_function, trigger="webhook")
    wait_for(lambda: building(deploy), 60, "the deploy's build to run")

    rollback = wait_done(request_rollback(fixture_function, trigger="ui"))
    assert rollback.status == Status.SUCCEEDED, rollback.error_message
    assert invoke_live(fixture_function)["release"] == "one"

    wait_done(deploy)
    assert (deploy.status, deploy.error_code, deploy.superseded_by_id) == (Status.SUPERSEDED, "superseded",
                                                                             rollback.pk)
    assert step_names(deploy) == ["source", "build"]
    assert rollback.finished_at < deploy.steps.get(name="build").finished_at, "the rollback waited behind the build"
    assert alias_version(fixture_function) == first.version == rollback.version
    assert invoke_live(fixture_function)["release"] == "one"
    print(f"rollback during a build on {connection.vendor}: rollback took {rollback.duration.total_seconds():.2f} s, "
          f"the deploy stopped after {step_names(deploy)}, alias at version {alias_version(fixture_function)}")


# --- Faults, each with its own error code and the alias left alone -----------------------


def test_an_update_conflict_is_waited_out_and_the_deploy_succeeds(worker, fixture_function, repo, inject, faults):
    deployed(fixture_function, repo, "one")
    inject({"operation": "UpdateFunctionCode", "error": "ResourceConflictException", "times": 2,
            "function": fixture_function.first_environment.lambda_name})
    second = deployed(fixture_function, repo, "two")
    assert json.loads(faults.read_text())[0]["times"] == 0
    assert alias_version(fixture_function) == second.version
    assert invoke_live(fixture_function)["release"] == "two"


def test_lambdas_size_error_leaves_no_secret_value_in_the_step_log_the_api_or_the_worker_log(
        worker, fixture_function, repo, inject, faults, client):
    """The local plane does not enforce the 4 KB limit: its answer, as AWS words it, is injected."""
    from django.contrib.auth import get_user_model

    from portal.models import ApiToken, Membership
    from tests.api_client import Api, openapi
    from tests.test_secrets import ENV, TOO_LARGE, leaks

    set_environment(fixture_function, environment=dict(ENV), secret_keys=["TOKEN"])
    inject({"operation": "CreateFunction", "error": "InvalidParameterValueException", "times": 1,
            "function": fixture_function.first_environment.lambda_name,
            "message": TOO_LARGE + json.dumps(ENV, separators=(",", ":"), ensure_ascii=False)})
    repo.release("one")
    failed = wait_done(request_deploy(fixture_function, trigger="cli"))
    assert (failed.status, failed.error_code) == (Status.FAILED, "lambda-InvalidParameterValueException")
    assert json.loads(faults.read_text())[0]["times"] == 0
    assert "exceeded the 4KB limit" in failed.error_message
    viewer = get_user_model().objects.create_user(f"viewer-{fixture_function.name}")
    Membership.objects.create(function=fixture_function, user=viewer, role="viewer")
    api = Api(client, openapi(client), ApiToken.issue(viewer, "viewer's")[1])
    shown = api.call("get", "/deployments/{deployment_id}", deployment_id=failed.pk)
    assert shown.status_code == 200 and "exceeded the 4KB limit" in shown.json()["steps"][-1]["output"]
    log = worker.log.read_text(errors="replace")
    channels = {"error_message": failed.error_message, "API": shown.content, "worker log": log,
                "steps": "\n".join(DeploymentStep.objects.filter(deployment=failed).values_list("output", flat=True))}
    assert {name: leaks(text) for name, text in channels.items() if leaks(text)} == {}
    assert "String measured:" not in str(channels)
    assert f"deployment {failed.pk} failed: lambda-InvalidParameterValueException" in log  # the log was searched


def test_a_failed_lambda_update_ends_with_its_reason_code_and_the_alias_unchanged(
        worker, fixture_function, repo, inject, faults):
    first = deployed(fixture_function, repo, "one")
    failed = {"LastUpdateStatus": "Failed", "LastUpdateStatusReasonCode": "ImageAccessDenied",
              "LastUpdateStatusReason": "injected: Lambda cannot read the image"}
    inject({"operation": "GetFunction", "patch": {"Configuration": failed}, "times": 3,
            "function": fixture_function.first_environment.lambda_name})
    repo.release("two")
    second = wait_done(request_deploy(fixture_function, trigger="cli"))
    assert (second.status, second.error_code) == (Status.FAILED, "lambda-update-failed-ImageAccessDenied")
    assert "cannot read the image" in second.error_message
    assert json.loads(faults.read_text())[0]["times"] < 3
    assert step_names(second)[-1] == "wait" and "shift" not in step_names(second)
    assert alias_version(fixture_function) == first.version
    assert invoke_live(fixture_function)["release"] == "one"


def test_an_amd64_image_for_an_arm64_function_is_refused_before_the_push(
        worker, arm64_function, repo):
    fixture_function = arm64_function
    first = deployed(fixture_function, repo, "one")
    images = ecr.count_images(fixture_function.ecr_repository)
    amd64 = DOCKERFILE.replace("FROM ${BASE_IMAGE}", f"FROM --platform=linux/amd64 {base_images.image_tag('amd64')}")
    repo.release("amd64", dockerfile=amd64)
    second = wait_done(request_deploy(fixture_function, trigger="cli"))
    assert (second.status, second.error_code) == (Status.FAILED, "architecture-mismatch")
    assert "linux/amd64" in second.error_message
    assert step_names(second) == ["source", "build", "push"]
    assert second.build.status == second.build.Status.FAILED
    assert ecr.count_images(fixture_function.ecr_repository) == images
    assert alias_version(fixture_function) == first.version


def test_a_publish_after_someone_else_changed_the_function_fails_and_keeps_the_alias(
        worker, fixture_function, repo, inject, faults):
    first = deployed(fixture_function, repo, "one")
    # The local plane ignores RevisionId on PublishVersion; AWS answers this when it changed meanwhile.
    inject({"operation": "PublishVersion", "error": "PreconditionFailedException", "times": 1,
            "function": fixture_function.first_environment.lambda_name})
    repo.release("two")
    second = wait_done(request_deploy(fixture_function, trigger="cli"))
    assert (second.status, second.error_code) == (Status.FAILED, "revision-mismatch")
    assert json.loads(faults.read_text())[0]["times"] == 0
    assert step_names(second)[-1] == "publish" and second.version == ""
    assert alias_version(fixture_function) == first.version
    assert invoke_live(fixture_function)["release"] == "one"


def test_a_smoke_event_answered_with_an_error_keeps_the_alias(worker, fixture_function, repo):
    first = deployed(fixture_function, repo, "one")
    fixture_function.smoke_event = {"fail": True}
    fixture_function.save(update_fields=["smoke_event"])
    repo.release("two")
    second = wait_done(request_deploy(fixture_function, trigger="cli"))
    assert (second.status, second.error_code) == (Status.FAILED, "smoke-error-result")
    assert "asked to fail" in second.error_message and second.version not in ("", first.version)
    assert "shift" not in step_names(second)
    assert alias_version(fixture_function) == first.version
    assert invoke_live(fixture_function)["release"] == "one"


def test_a_rollback_to_an_image_gone_from_ecr_fails_and_keeps_the_alias(worker, fixture_function, repo):
    first = deployed(fixture_function, repo, "one")
    second = deployed(fixture_function, repo, "two")
    gone = aws.client("ecr").batch_delete_image(repositoryName=fixture_function.ecr_repository,
                                                imageIds=[{"imageDigest": first.build.digest}])
    assert gone["failures"] == []
    rollback = wait_done(request_rollback(fixture_function, trigger="cli"))
    assert (rollback.status, rollback.error_code) == (Status.FAILED, "image-missing")
    assert step_names(rollback) == ["check"]
    assert alias_version(fixture_function) == second.version
    assert invoke_live(fixture_function)["release"] == "two"


def test_a_deploy_cancelled_while_building_stops_before_touching_the_lambda(worker, fixture_function, repo, unique):
    first = deployed(fixture_function, repo, "one")
    repo.release("slow", dockerfile=slow_dockerfile(f"slipway-cancel-{unique}", 8))
    deploy = request_deploy(fixture_function, trigger="cli")
    wait_for(lambda: building(deploy), 60, "the build to run")
    call_command("cancel", str(deploy.pk), stdout=io.StringIO())
    wait_done(deploy)
    assert (deploy.status, deploy.error_code) == (Status.CANCELLED, "cancelled")
    assert "update" not in step_names(deploy)
    assert alias_version(fixture_function) == first.version


def test_a_rollback_to_a_deleted_version_updates_code_to_its_digest(worker, fixture_function, repo):
    first = deployed(fixture_function, repo, "one")
    deployed(fixture_function, repo, "two")
    aws.client("lambda").delete_function(FunctionName=fixture_function.first_environment.lambda_name,
                                         Qualifier=first.version)
    rollback = wait_done(request_rollback(fixture_function, trigger="cli"))
    assert rollback.status == Status.SUCCEEDED, rollback.error_message
    assert step_names(rollback) == ["check", "update", "wait", "publish", "verify", "shift"]
    assert invoke_live(fixture_function)["release"] == "one"
    published = aws.client("lambda").get_function(FunctionName=fixture_function.first_environment.lambda_name,
                                                  Qualifier=rollback.version)
    assert published["Code"]["ImageUri"].endswith(f"@{first.build.digest}")


# --- Source errors, recorded where the user sees them -------------------------------------


def test_an_absolute_symlink_in_the_repository_fails_the_build_step_in_seconds_as_bad_checkout(
        worker, fixture_function, repo):
    repo.release("one")
    (repo.path / "a-link").symlink_to("/etc/passwd")  # sorts first: git archive is still writing big.bin
    (repo.path / "big.bin").write_bytes(os.urandom(1 << 20))
    repo.commit("an absolute symlink", {})
    deployment = wait_done(request_deploy(fixture_function, trigger="cli"), timeout=60)
    assert (deployment.status, deployment.error_code) == (Status.FAILED, "bad-checkout")
    step = deployment.steps.get(name="build")
    assert step.status == DeploymentStep.Status.FAILED
    assert "error bad-checkout" in step.output and "a-link" in step.output
    assert (step.finished_at - step.started_at).total_seconds() < 10
    assert deployment.build.status == deployment.build.Status.FAILED


# --- Single-platform images only ------------------------------------------------------------


def put_manifest(repository: str, reference: str, body: bytes, media_type: str) -> None:
    """PUT a manifest through the local plane's registry API, as another pipeline might."""
    url = f"http://{os.environ['SLIPWAY_REGISTRY_HOST']}/v2/{repository}/manifests/{reference}"
    request = urllib.request.Request(url, data=body, method="PUT", headers={"Content-Type": media_type})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201


def test_an_image_index_already_held_in_ecr_is_refused_before_it_is_deployed(worker, fixture_function, repo):
    first = deployed(fixture_function, repo, "one")
    real = ecr.find(fixture_function.ecr_repository, digest=first.build.digest)
    _, manifest = ecr.manifest(fixture_function.ecr_repository, real.digest)
    sha = repo.release("two")
    tag = Build(commit_sha=sha, architecture=fixture_function.architecture, inputs_digest=Build.digest_inputs(
        sha, fixture_function.architecture, steps.build_inputs(fixture_function))).tag
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": manifest["mediaType"], "digest": real.digest, "size": len(json.dumps(manifest)),
         "platform": {"os": "linux", "architecture": "amd64"}}]}
    put_manifest(fixture_function.ecr_repository, tag, json.dumps(index).encode(), index["mediaType"])

    second = wait_done(request_deploy(fixture_function, trigger="cli"), timeout=60)
    assert (second.status, second.error_code) == (Status.FAILED, "image-index"), second.error_message
    assert f"{fixture_function.ecr_repository}:{tag}" in second.error_message
    assert step_names(second) == ["source"] and second.build.status != second.build.Status.SUCCEEDED
    assert alias_version(fixture_function) == first.version
    assert invoke_live(fixture_function)["release"] == "one"


# --- Rollbacks never queue behind builds ------------------------------------------------------


def test_a_rollback_finishes_while_every_deploy_worker_is_busy_building(
        workers_apart, fixture_function, released_function, repo, unique):
    repo.release("slow", dockerfile=slow_dockerfile(f"slipway-busy-{unique}", 40))
    busy = request_deploy(fixture_function, trigger="cli")
    wait_for(lambda: building(busy), 60, "the only deploy process to be building")

    rollback = wait_done(request_rollback(released_function, trigger="ui"), timeout=60)

    assert rollback.status == Status.SUCCEEDED, rollback.error_message
    assert invoke_live(released_function)["release"] == "one"
    busy.refresh_from_db()
    assert busy.status == Status.BUILDING, "the build had ended: no deploy worker was busy during the rollback"
    assert busy.steps.get(name="build").finished_at is None
    print(f"rollback beside a busy deploy worker took {rollback.duration.total_seconds():.2f} s")
