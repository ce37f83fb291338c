"""Retention on the real local stack: versions first, then images, by digest; what a
rollback needs is kept, and a function with an unfinished deployment is left alone."""

import contextlib
import threading
from unittest import mock

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections

from deploy import aws, ecr, lambdas
from portal.celery import RETENTION_TASK, app
from portal.core.errors import RequestRefused
from portal.deployments import retention
from portal.deployments.requesting import request_deploy, request_rollback
from portal.models import AuditEvent, Build, Deployment, DeploymentStep, ImageDeletion
from tests.conftest import create_function, wait_for
from tests.integration.conftest import invoke_live, remove_from_plane, wait_done

pytestmark = pytest.mark.integration
Status = Deployment.Status


def versions_on_lambda(function) -> set[str]:
    pages = aws.client("lambda").get_paginator("list_versions_by_function").paginate(
        FunctionName=function.first_environment.lambda_name)
    return {v["Version"] for page in pages for v in page["Versions"]}


def digests_in_ecr(function) -> set[str]:
    pages = aws.client("ecr").get_paginator("describe_images").paginate(repositoryName=function.ecr_repository)
    return {image["imageDigest"] for page in pages for image in page["imageDetails"]}


@pytest.fixture
def history(worker, fixture_function, repo):
    """Four deploys (versions 1-4, one cheap build each), a rollback to 2 (live -> 2), and
    an alias `pinned` -> 1. With the last 2 releases kept, version 3 is the one no alias,
    no recent release and nothing newer holds."""
    deploys = []
    for release in ("one", "two", "three", "four"):
        repo.release(release)
        deployment = wait_done(request_deploy(fixture_function, trigger="cli"))
        assert deployment.status == Status.SUCCEEDED, deployment.error_message
        deploys.append(deployment)
    assert [d.version for d in deploys] == ["1", "2", "3", "4"]
    rollback = wait_done(request_rollback(fixture_function, trigger="cli", to="2"))
    assert (rollback.status, rollback.version) == (Status.SUCCEEDED, "2"), rollback.error_message
    lambdas.point_alias(fixture_function.first_environment.lambda_name, "pinned", "1")
    return deploys


def test_retention_deletes_the_unreferenced_version_then_its_image_and_every_kept_release_still_rolls_back(
        history, fixture_function, capsys):
    one, two, three, four = history
    before_versions, before_images = versions_on_lambda(fixture_function), digests_in_ecr(fixture_function)
    assert before_versions == {"$LATEST", "1", "2", "3", "4"} and len(before_images) == 4

    call_command("retention", "--dry-run", "--keep", "2", "--function", fixture_function.name)

    out = capsys.readouterr().out
    assert f"{fixture_function.name}: would delete versions 3 and 1 image(s)" in out
    assert "keep version 1: alias pinned points at it" in out
    assert "keep version 2: alias live points at it" in out
    assert "keep version 4: one of the last 2 releases" in out
    assert f"would delete image {three.build.digest}" in out
    assert (versions_on_lambda(fixture_function), digests_in_ecr(fixture_function)) == (before_versions,
                                                                                         before_images)
    assert not Deployment.objects.filter(function=fixture_function, version_gone=True).exists()
    dry = AuditEvent.objects.get(function=fixture_function, action="retention.dry_run")
    assert dry.detail["deleted_versions"] == ["3"] and dry.detail["dry_run"] is True

    (report,) = retention.run(keep=2, dry_run=False, names=[fixture_function.name])

    assert (report.skipped, report.errors) == ("", [])
    assert report.deleted_versions == ["3"]
    assert list(report.deleted_images) == [three.build.digest]
    assert versions_on_lambda(fixture_function) == {"$LATEST", "1", "2", "4"}
    assert digests_in_ecr(fixture_function) == {one.build.digest, two.build.digest, four.build.digest}
    # Marked in the database: the portal refuses this target without asking AWS.
    assert Deployment.objects.get(pk=three.pk).version_gone
    assert Build.objects.get(pk=three.build_id).image_gone_at is not None
    with pytest.raises(RequestRefused, match="gone from ECR"):
        request_rollback(fixture_function, trigger="cli", to="3")
    # Every kept release can still be put back: its version and its image are there.
    for kept in (one, two, four):
        assert lambdas.version_exists(fixture_function.first_environment.lambda_name, kept.version), kept.version
        assert ecr.find(fixture_function.ecr_repository, digest=kept.build.digest) is not None
        assert not Deployment.objects.get(pk=kept.pk).version_gone
        assert Build.objects.get(pk=kept.build_id).image_gone_at is None
    rollback = wait_done(request_rollback(fixture_function, trigger="cli", to="4"))
    assert (rollback.status, rollback.version) == (Status.SUCCEEDED, "4"), rollback.error_message
    assert lambdas.alias_version(fixture_function.first_environment.lambda_name, "live") == "4"
    # A second run finds nothing more to do and leaves no report behind.
    (again,) = retention.run(keep=2, dry_run=False, names=[fixture_function.name])
    assert (again.deleted_versions, again.deleted_images) == ([], {})
    assert AuditEvent.objects.filter(function=fixture_function, action="retention.applied").count() == 1


def test_retention_skips_a_function_while_its_rollback_runs(worker, released_function, released_plane, inject):
    """The retention task runs in the worker while a rollback of the function is shifting
    (its UpdateAlias throttled for a few seconds): it deletes nothing there."""
    versions_before = versions_on_lambda(released_function)
    inject({"operation": "UpdateAlias", "error": "ThrottlingException", "times": 4,
            "function": released_function.first_environment.lambda_name})
    rollback = request_rollback(released_function, trigger="cli", to=released_plane.releases[0]["version"])

    def shifting():
        rollback.refresh_from_db()
        return rollback.status == Status.SHIFTING
    wait_for(shifting, 60, "the rollback to reach its shift step")
    app.send_task(RETENTION_TASK, kwargs={"dry_run": False, "functions": [released_function.name]})
    skipped = wait_for(lambda: AuditEvent.objects.filter(function=released_function, action="retention.skipped")
                       .first(), 30, "the retention task to report")

    assert f"deployment #{rollback.pk} (rollback) is shifting" in skipped.detail["skipped"]
    rollback = wait_done(rollback)
    assert rollback.status == Status.SUCCEEDED, rollback.error_message
    assert skipped.created_at < rollback.finished_at  # it ran while the rollback was unfinished
    assert versions_on_lambda(released_function) == versions_before
    # Once the rollback ended the function is no longer skipped (dry run: the session's plane stays).
    (report,) = retention.run(keep=1, dry_run=True, names=[released_function.name])
    assert report.skipped == "" and report.deleted_versions == [released_plane.releases[1]["version"]] == ["2"]


def test_the_command_refuses_an_unknown_function_and_a_keep_below_one(db):
    with pytest.raises(CommandError, match="no function named nope"):
        call_command("retention", "--function", "nope")
    with pytest.raises(CommandError, match="at least 1"):
        call_command("retention", "--keep", "0")


# --- Two functions on one ECR repository ---------------------------------------------------------
# The same build inputs give the same tag, so a second function deploying a commit the first one
# pushed adopts its image; the first one's retention must not delete it from under the second.


@pytest.fixture
def sharer(fixture_function, docker_client):
    """A second function on the fixture function's ECR repository and git repository (granted by
    it), with a Lambda of its own: it adopts the images of the commits the first one deployed."""
    from portal.models import Function

    Function.objects.filter(pk=fixture_function.pk).update(shares_images_with=[f"{fixture_function.name}-b"])
    function = create_function(
        name=f"{fixture_function.name}-b", repository_url=fixture_function.repository_url,
        ecr_repository=fixture_function.ecr_repository,
        lambda_name=f"{fixture_function.first_environment.lambda_name}-b",
        architecture=fixture_function.architecture, memory_mb=256, timeout_s=30, smoke_event={"smoke": True},
        execution_role_arn=fixture_function.first_environment.execution_role_arn)
    yield function
    remove_from_plane(function.first_environment.lambda_name, function.ecr_repository)
    for image in docker_client.images.list(filters={"label": f"slipway.function={function.name}"}):
        with contextlib.suppress(Exception):
            docker_client.images.remove(image.id, force=True)


def deploy(function, commit: str, kind=Deployment.Kind.DEPLOY) -> Deployment:
    deployment = wait_done(request_deploy(function, trigger="cli", commit=commit))
    assert deployment.status == Status.SUCCEEDED, deployment.error_message
    assert deployment.kind == kind
    return deployment


def until(status: str, deployment: Deployment) -> Deployment:
    def reached():
        deployment.refresh_from_db()
        return deployment.status == status
    wait_for(reached, 60, f"deployment #{deployment.pk} to reach {status}")
    return deployment


def test_retention_of_one_function_keeps_the_image_another_function_on_its_repository_deploys_runs_and_rolls_back_to(
        worker, fixture_function, sharer, repo, inject):
    one, two = repo.release("one"), repo.release("two")
    first = deploy(fixture_function, one)
    deploy(fixture_function, two)
    image = first.build.digest  # fixture_function keeps only version 2 with the last release kept

    # Mid-deploy: the sharer adopts `image` and is held at its shift step (CreateAlias throttled).
    inject({"operation": "CreateAlias", "error": "ThrottlingException", "times": 4,
            "function": sharer.first_environment.lambda_name})
    adopting = until(Status.SHIFTING, request_deploy(sharer, trigger="cli", commit=one))
    (report,) = retention.run(keep=1, dry_run=False, names=[fixture_function.name])
    assert report.deleted_versions == ["1"] and report.deleted_images == {}
    assert f"deployment #{adopting.pk} (redeploy) of {sharer.name} is shifting" in report.deferred
    assert wait_done(adopting).status == Status.SUCCEEDED and adopting.build.digest == image
    assert image in digests_in_ecr(fixture_function)

    # Live: the sharer's version 1 runs it.
    (report,) = retention.run(keep=1, dry_run=False, names=[fixture_function.name])
    assert report.deferred == "" and report.deleted_images == {}
    assert report.kept_images[image] == f"{sharer.name} needs it: its version 1 runs it"
    assert image in digests_in_ecr(fixture_function) and Build.objects.get(pk=adopting.build_id).image_gone_at is None
    assert invoke_live(sharer)["release"] == "one"

    # Mid-rollback: the sharer moved on to "two" and rolls back to version 1, held at its shift step.
    assert deploy(sharer, two, kind=Deployment.Kind.REDEPLOY).version == "2"
    inject({"operation": "UpdateAlias", "error": "ThrottlingException", "times": 4,
            "function": sharer.first_environment.lambda_name})
    rollback = until(Status.SHIFTING, request_rollback(sharer, trigger="cli", to="1"))
    (report,) = retention.run(keep=1, dry_run=False, names=[fixture_function.name])
    assert f"deployment #{rollback.pk} (rollback) of {sharer.name} is shifting" in report.deferred
    assert report.deleted_images == {} and image in digests_in_ecr(fixture_function)
    assert wait_done(rollback).status == Status.SUCCEEDED, rollback.error_message
    assert (lambdas.alias_version(sharer.first_environment.lambda_name, "live"),
            invoke_live(sharer)["release"]) == ("1", "one")


@pytest.mark.postgres
def test_a_deploy_that_finds_its_image_marked_by_another_functions_retention_waits_and_the_image_survives(
        worker, fixture_function, sharer, repo):
    """Retention for one function marks an image and commits; before it deletes it, the other
    function's deploy of the same commit finds the image in ECR. It must not adopt it: it waits
    for the delete, then builds and pushes the commit again. (Retention runs here, in a thread,
    and is held just before its delete until the deploy has seen the mark: the real delete runs.)"""
    one, two = repo.release("one"), repo.release("two")
    doomed = deploy(fixture_function, one).build
    deploy(fixture_function, two)
    marked, go, reports = threading.Event(), threading.Event(), []
    real_delete = ecr.delete_images

    def held_delete(repository, digests):
        marked.set()
        assert go.wait(120), "the deploy never reached the marked image"
        return real_delete(repository, digests)

    def run_retention():
        try:
            reports.extend(retention.run(keep=1, dry_run=False, names=[fixture_function.name]))
        finally:
            connections.close_all()

    with mock.patch("portal.deployments.retention.ecr.delete_images", autospec=True, side_effect=held_delete):
        thread = threading.Thread(target=run_retention)
        thread.start()
        try:
            assert marked.wait(60), "retention never came to delete"
            assert ImageDeletion.objects.filter(repository=doomed.repository, digest=doomed.digest).exists()
            adopting = request_deploy(sharer, trigger="cli", commit=one)
            wait_for(lambda: DeploymentStep.objects.filter(deployment=adopting, name="source",
                                                           output__contains="retention is deleting").exists(),
                     60, "the deploy to find the image marked")
        finally:
            go.set()
            thread.join(60)
    (report,) = reports
    assert list(report.deleted_images) == [doomed.digest]  # deleted after the deploy had found it
    adopting = wait_done(adopting)
    assert adopting.status == Status.SUCCEEDED, adopting.error_message
    assert adopting.kind == Deployment.Kind.DEPLOY  # built and pushed again, not adopted
    source = adopting.steps.get(name="source").output
    assert source.index("ECR holds") < source.index("retention is deleting") < source.index("ECR does not hold")
    assert adopting.build.digest in digests_in_ecr(fixture_function)
    assert Build.objects.get(pk=adopting.build_id).image_gone_at is None
    assert not ImageDeletion.objects.exists()
    assert invoke_live(sharer)["release"] == "one"
