"""Retention on the real local stack: versions first, then images, by digest; what a
rollback needs is kept, and a function with an unfinished deployment is left alone."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from deploy import aws, ecr, lambdas
from portal import retention
from portal.celery import RETENTION_TASK, app
from portal.models import AuditEvent, Build, Deployment
from portal.services import RequestRefused, request_deploy, request_rollback
from tests.conftest import wait_for
from tests.integration.conftest import wait_done

pytestmark = pytest.mark.integration
Status = Deployment.Status


def versions_on_lambda(function) -> set[str]:
    pages = aws.client("lambda").get_paginator("list_versions_by_function").paginate(
        FunctionName=function.lambda_name)
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
    lambdas.point_alias(fixture_function.lambda_name, "pinned", "1")
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
        assert lambdas.version_exists(fixture_function.lambda_name, kept.version), kept.version
        assert ecr.find(fixture_function.ecr_repository, digest=kept.build.digest) is not None
        assert not Deployment.objects.get(pk=kept.pk).version_gone
        assert Build.objects.get(pk=kept.build_id).image_gone_at is None
    rollback = wait_done(request_rollback(fixture_function, trigger="cli", to="4"))
    assert (rollback.status, rollback.version) == (Status.SUCCEEDED, "4"), rollback.error_message
    assert lambdas.alias_version(fixture_function.lambda_name, "live") == "4"
    # A second run finds nothing more to do and leaves no report behind.
    (again,) = retention.run(keep=2, dry_run=False, names=[fixture_function.name])
    assert (again.deleted_versions, again.deleted_images) == ([], {})
    assert AuditEvent.objects.filter(function=fixture_function, action="retention.applied").count() == 1


def test_retention_skips_a_function_while_its_rollback_runs(worker, released_function, released_plane, inject):
    """The retention task runs in the worker while a rollback of the function is shifting
    (its UpdateAlias throttled for a few seconds): it deletes nothing there."""
    versions_before = versions_on_lambda(released_function)
    inject({"operation": "UpdateAlias", "error": "ThrottlingException", "times": 4,
            "function": released_function.lambda_name})
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
