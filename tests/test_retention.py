"""Retention's AWS side at the seam (deploy.aws.client), its schedule and routing.
The rule itself runs on the local plane: tests/integration/test_retention.py."""

from unittest import mock

import pytest
from django.conf import settings

from deploy import ecr, lambdas
from portal.celery import RETENTION_TASK
from tests.conftest import create_function

A, B, C = ("sha256:" + c * 64 for c in "abc")


def test_images_are_deleted_by_digest_in_batches_of_a_hundred_and_refusals_are_reported():
    digests = [f"sha256:{i:064x}" for i in range(150)]
    with mock.patch("deploy.aws.client", autospec=True) as client:
        client.return_value.batch_delete_image.side_effect = [
            {"imageIds": [{"imageDigest": d, "imageTag": "t"} for d in digests[:99]],
             "failures": [{"imageId": {"imageDigest": digests[99]}, "failureCode": "ImageReferencedByManifestList",
                           "failureReason": "in use"}]},
            {"imageIds": [{"imageDigest": d} for d in digests[100:149]],
             "failures": [{"imageId": {"imageDigest": digests[149]}, "failureCode": "ImageNotFound",
                           "failureReason": "gone"}]},
        ]
        gone, refused = ecr.delete_images("slipway/fx", digests)
    calls = client.return_value.batch_delete_image.call_args_list
    assert [len(c.kwargs["imageIds"]) for c in calls] == [100, 50]
    assert all(set(image_id) == {"imageDigest"} for c in calls for image_id in c.kwargs["imageIds"])  # never a tag
    assert gone == digests[:99] + digests[100:150]  # an image already gone counts as gone
    assert refused == {digests[99]: "ImageReferencedByManifestList: in use"}


def test_a_weighted_alias_holds_both_of_its_versions():
    held = lambdas.aliased_versions([
        {"Name": "live", "FunctionVersion": "7", "RoutingConfig": {"AdditionalVersionWeights": {"8": 0.1}}},
        {"Name": "pinned", "FunctionVersion": "7"}])
    assert held == {"7": ["live", "pinned"], "8": ["live"]}


def test_latest_is_never_deleted_as_a_version():
    with mock.patch("deploy.aws.client", autospec=True) as client, pytest.raises(ValueError):
        lambdas.delete_version("slipway-fx", "$LATEST")
    client.return_value.delete_function.assert_not_called()


def test_deleting_a_version_always_names_it():
    with mock.patch("deploy.aws.client", autospec=True) as client:
        assert lambdas.delete_version("slipway-fx", "3") is True
    client.return_value.delete_function.assert_called_once_with(FunctionName="slipway-fx", Qualifier="3")


def test_versions_are_listed_across_pages():
    with mock.patch("deploy.aws.client", autospec=True) as client:
        client.return_value.list_versions_by_function.side_effect = [
            {"Versions": [{"Version": "$LATEST"}, {"Version": "1"}], "NextMarker": "m1"},
            {"Versions": [{"Version": "2"}]}]
        assert [v["Version"] for v in lambdas.list_versions("slipway-fx")] == ["$LATEST", "1", "2"]
    assert client.return_value.list_versions_by_function.call_args.kwargs == {"FunctionName": "slipway-fx",
                                                                             "Marker": "m1"}


def test_retention_is_scheduled_and_runs_on_the_deploys_queue():
    scheduled = [entry for entry in settings.CELERY_BEAT_SCHEDULE.values() if entry["task"] == RETENTION_TASK]
    assert len(scheduled) == 1 and scheduled[0]["schedule"] == settings.RETENTION_INTERVAL_HOURS * 3600.0
    assert settings.CELERY_TASK_ROUTES[RETENTION_TASK] == {"queue": "deploys"}  # never ahead of a rollback
    assert settings.SLIPWAY_RETAIN_RELEASES == 10


@pytest.mark.postgres
def test_retention_locks_the_function_row_before_it_reads_its_deployments(function):
    from botocore.exceptions import ClientError
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from portal.deployments import retention

    with mock.patch("deploy.aws.client", autospec=True) as client, CaptureQueriesContext(connection) as queries:
        client.return_value.get_function_configuration.side_effect = ClientError(
            {"Error": {"Code": "ResourceNotFoundException", "Message": "no such function"}}, "GetFunctionConfiguration")
        (report,) = retention.run(keep=3, dry_run=False, names=[function.name])
    assert report.skipped == f"the Lambda {function.first_environment.lambda_name} does not exist (never deployed)"
    from portal.models import AuditEvent

    assert not AuditEvent.objects.exists()  # nothing to tell about a function never deployed
    sqls = [q["sql"] for q in queries.captured_queries]
    locks = [i for i, sql in enumerate(sqls) if sql.startswith("SELECT") and 'FROM "portal_function"' in sql
             and ("FOR UPDATE" in sql or connection.vendor != "postgresql")]
    reads = [i for i, sql in enumerate(sqls) if sql.startswith("SELECT") and 'FROM "portal_deployment"' in sql]
    assert locks and reads and locks[0] < reads[0]


def test_one_function_failing_does_not_stop_the_others(function, db):
    from portal.deployments import retention

    create_function(name="other", repository_url="https://gitlab.example.com/team/o.git",
                    ecr_repository="team/o", lambda_name="team-o")
    with mock.patch("portal.deployments.retention.retain", autospec=True) as retain:
        retain.side_effect = [RuntimeError("boom"), retention.Report("other", 3, False)]
        reports = retention.run(keep=3, dry_run=False)
    assert [(r.function, r.errors) for r in reports] == [("hello", ["RuntimeError: boom"]), ("other", [])]


# --- Functions sharing an ECR repository: the rule, at the seam ---------------------------------
# `hello` (the conftest function) and `other` both use team/hello; both deployed commit a…
# (the same build inputs: `other` adopted hello's image A). hello has moved on to b… (image B),
# with only its last release kept. Only what the seam answers is made up here: the plane below.

URI = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/hello@{}"


class Plane:
    """deploy.aws.client's answers for Lambda and ECR: versions (by Lambda name) run images."""

    def __init__(self, client, images):
        self.images, self.versions, self.aliases, self.deleted = set(images), {}, {}, []
        api = client.return_value
        api.get_function_configuration.side_effect = lambda FunctionName: {"FunctionName": FunctionName}
        api.list_versions_by_function.side_effect = lambda FunctionName: {
            "Versions": [{"Version": v} for v in self.versions[FunctionName]]}
        api.list_aliases.side_effect = lambda FunctionName: {"Aliases": [
            {"Name": name, "FunctionVersion": v} for name, v in self.aliases.get(FunctionName, {}).items()]}
        api.get_function.side_effect = lambda FunctionName, Qualifier: {
            "Code": {"ImageUri": self.versions[FunctionName][Qualifier]}}
        api.delete_function.side_effect = lambda FunctionName, Qualifier: self.versions[FunctionName].pop(Qualifier)
        api.describe_images.side_effect = lambda repositoryName, **_: {
            "imageDetails": [{"imageDigest": d, "imageTags": [d[7:19]]} for d in sorted(self.images)]}
        api.batch_delete_image.side_effect = self._delete
        self.during_delete = None

    def runs(self, lambda_name: str, live: str, **versions: str) -> None:
        """`lambda_name`'s versions ({"v1": digest, …}), $LATEST running the live one's image."""
        self.versions[lambda_name] = {"$LATEST": URI.format(versions[f"v{live}"])}  # listed first, as Lambda does
        self.versions[lambda_name].update({v[1:]: URI.format(d) for v, d in versions.items()})
        self.aliases[lambda_name] = {"live": live}

    def _delete(self, repositoryName, imageIds):
        if self.during_delete:
            self.during_delete()
        digests = [i["imageDigest"] for i in imageIds]
        self.images -= set(digests)
        self.deleted += digests
        return {"imageIds": [{"imageDigest": d} for d in digests], "failures": []}


@pytest.fixture
def other(function):

    return create_function(name="other", repository_url=function.repository_url,
                           ecr_repository=function.ecr_repository, lambda_name="team-other")


@pytest.fixture
def shared(function, other):
    """hello: releases 1 (a…, image A) and 2 (b…, image B); other: release 1 (a…, adopted A)."""
    from tests.conftest import released

    hello = [released(function, "1", "a" * 40), released(function, "2", "b" * 40)]
    theirs = [released(other, "1", "a" * 40)]
    with mock.patch("deploy.aws.client", autospec=True) as client:
        plane = Plane(client, {A, B})
        plane.runs(function.first_environment.lambda_name, "2", v1=A, v2=B)
        plane.runs(other.first_environment.lambda_name, "1", v1=A)
        yield plane, hello, theirs


def retain(function, dry_run=False):
    from portal.deployments import retention

    (report,) = retention.run(keep=1, dry_run=dry_run, names=[function.name])
    return report


def test_an_image_another_function_on_the_repository_runs_is_kept_and_says_why(function, other, shared):
    plane, _, _ = shared
    report = retain(function)
    assert report.deleted_versions == ["1"] and plane.deleted == []
    assert report.kept_images[A] == "other needs it: its version 1 runs it"


@pytest.fixture
def moved_on(other, shared):
    """other moved on to c… (image C) and its version 1 is gone: nobody needs A any more."""
    from tests.conftest import released

    plane = shared[0]
    released(other, "2", "c" * 40)
    plane.images.add(C)
    plane.runs(other.first_environment.lambda_name, "2", v2=C)
    return shared


def test_an_image_no_function_on_the_repository_needs_is_deleted_and_every_build_of_it_marked_gone(
        function, moved_on):
    plane, hello, theirs = moved_on
    report = retain(function)
    assert plane.deleted == [A] and list(report.deleted_images) == [A]
    gone = {b.function.name: b.image_gone_at is not None for b in (hello[0].build, theirs[0].build)
            if not b.refresh_from_db()}
    assert gone == {"hello": True, "other": True}


def test_the_images_a_function_on_the_repository_kept_as_releases_stay_after_their_versions_went(
        function, other, shared):
    plane, _, theirs = shared
    plane.runs(other.first_environment.lambda_name, "2", v2=B)  # its version 1 was deleted; release 1 is still its last
    report = retain(function)
    assert plane.deleted == []
    assert report.kept_images[A] == (f"other needs it: the image of its deployment #{theirs[0].pk}, one of its last "
                                     "1 releases")


def test_no_image_is_deleted_while_another_function_on_the_repository_has_a_deployment_running(
        function, other, moved_on):
    from portal.models import Deployment

    plane, _, _ = moved_on
    busy = Deployment.objects.create(function=other, trigger="cli", status=Deployment.Status.BUILDING)
    report = retain(function)
    assert plane.deleted == [] and report.deleted_versions == ["1"]  # its own versions still go
    assert report.deferred == (f"deployment #{busy.pk} (deploy) of other is building: no image in team/hello is "
                               "deleted while a function on it has a deployment waiting or running")
    assert report.kept_images[A].startswith("deferred: ")


def test_an_image_is_marked_while_it_is_deleted_and_unmarked_after(function, moved_on):
    from portal.deployments import retention
    from portal.models import ImageDeletion

    plane, _, _ = moved_on
    seen = []
    plane.during_delete = lambda: seen.append(retention.marked("team/hello", A))
    retain(function)
    assert (seen, plane.deleted) == ([True], [A])
    assert not ImageDeletion.objects.exists()


def test_an_image_another_run_is_deleting_is_left_to_it_but_a_stale_mark_is_not(function, moved_on):
    from django.utils import timezone

    from portal.deployments import retention
    from portal.models import ImageDeletion

    mark = ImageDeletion.objects.create(repository="team/hello", digest=A)
    assert retain(function, dry_run=True).kept_images[A] == "another retention run is deleting it"
    ImageDeletion.objects.filter(pk=mark.pk).update(marked_at=timezone.now() - retention.MARK_STALE)
    assert not retention.marked("team/hello", A)
    assert list(retain(function, dry_run=True).deleted_images) == [A]


@pytest.mark.postgres
def test_retention_locks_every_function_on_the_repository_in_key_order_before_reading_deployments(
        function, other, shared):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        retain(function)
    sqls = [q["sql"] for q in queries.captured_queries]
    # The functions registered with team/hello, or with a build pushed there, all in one statement.
    locks = [i for i, sql in enumerate(sqls) if sql.startswith('SELECT "portal_function"."id"')
             and '"portal_function"."ecr_repository" = ' in sql and 'FROM "portal_build"' in sql]
    reads = [i for i, sql in enumerate(sqls) if sql.startswith("SELECT") and 'FROM "portal_deployment"' in sql]
    assert locks and reads and locks[0] < reads[0]
    assert 'ORDER BY "portal_function"."id" ASC' in sqls[locks[0]]
    assert "FOR UPDATE" in sqls[locks[0]] or connection.vendor != "postgresql"


# --- The source step and a marked image ---------------------------------------------------------


MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture
def adopting(other):
    """other's deploy of a…, in its source step, with the build whose tag ECR holds (image A)."""
    from portal.deployments.steps import Run
    from portal.models import Build, Deployment

    build = Build.objects.create(function=other, commit_sha="a" * 40, architecture="arm64", inputs_digest="a" * 64)
    deployment = Deployment.objects.create(function=other, trigger="cli", build=build, status=Deployment.Status.SOURCE)
    with mock.patch("deploy.aws.client", autospec=True) as client:
        client.return_value.describe_images.return_value = {"imageDetails": [
            {"imageDigest": A, "imageSizeInBytes": 10, "imageManifestMediaType": MANIFEST}]}
        client.return_value.batch_get_image.return_value = {"images": [
            {"imageManifestMediaType": MANIFEST, "imageManifest": '{"layers": []}'}]}
        yield Run(deployment)


def test_the_source_step_adopts_an_unmarked_image_and_records_its_repository(adopting):
    from portal.deployments import steps

    assert steps.adopt_held_image(adopting, [].append) is True
    adopting.build.refresh_from_db()
    assert (adopting.build.digest, adopting.build.repository) == (A, "team/hello")


def test_the_source_step_never_adopts_an_image_retention_is_deleting(adopting):
    from portal.deployments import steps
    from portal.deployments.recording import Stopped
    from portal.models import Deployment, ImageDeletion

    ImageDeletion.objects.create(repository="team/hello", digest=A)
    Deployment.objects.filter(pk=adopting.deployment.pk).update(cancel_requested=True)  # ends the wait
    said = []
    with pytest.raises(Stopped):
        steps.adopt_held_image(adopting, said.append)
    adopting.build.refresh_from_db()
    assert adopting.build.digest == ""
    assert said[-1] == f"retention is deleting team/hello@{A}: waiting until it is done"


def test_each_environment_keeps_its_own_releases_and_an_image_any_of_them_runs_stays(function):
    """hello's production has moved on to b… (image B); its staging still runs a… (image A)
    as its one release: production's version 1 goes, staging's stays, and so does A."""
    from portal.models import Environment
    from tests.conftest import released

    staging = Environment.objects.create(function=function, name="staging", position=1, lambda_name="team-hello-stg")
    released(function, "1", "a" * 40), released(function, "2", "b" * 40)
    kept = released(function, "1", "a" * 39 + "f", environment=staging)  # same image A, its own release
    with mock.patch("deploy.aws.client", autospec=True) as client:
        plane = Plane(client, {A, B})
        plane.runs(function.first_environment.lambda_name, "2", v1=A, v2=B)
        plane.runs(staging.lambda_name, "1", v1=A)
        report = retain(function)
    assert report.deleted_versions == ["production:1"] and plane.deleted == []
    assert report.kept_versions["staging:1"] == "alias live points at it"
    assert "1" in plane.versions[staging.lambda_name] and "1" not in plane.versions["team-hello"]
    assert report.kept_images[A] == "version staging:$LATEST, staging:1 runs it"
    assert kept.environment == staging


@pytest.fixture
def staged_plane(function):
    """hello as staging (team-hello-stg: versions 1 = image A, 2 = C, live 2) then production
    (team-hello: version 1 = B, live), keeping one release: staging's version 1 and image A
    are what the rule lets go."""
    from tests.conftest import released, staged

    staging, production = staged(function)
    released(function, "1", "a" * 40, environment=staging)
    released(function, "1", "b" * 40, environment=production)
    released(function, "2", "c" * 40, environment=staging)
    with mock.patch("deploy.aws.client", autospec=True) as client:
        plane = Plane(client, {A, B, C})
        plane.runs(production.lambda_name, "1", v1=B)
        plane.runs(staging.lambda_name, "2", v1=A, v2=C)
        yield plane, staging, production


def test_a_soaking_promotion_never_blocks_retention_and_its_pinned_digest_stays(function, staged_plane):
    from portal.models import Deployment

    plane, staging, production = staged_plane
    soak = Deployment.objects.create(function=function, environment=production, trigger="promotion",
                                     kind=Deployment.Kind.PROMOTION, status=Deployment.Status.SOAKING, digest=A)
    report = retain(function)
    assert (report.skipped, report.deferred) == ("", "")
    assert report.deleted_versions == ["staging:1"]
    assert report.kept_images[A] == f"promotion #{soak.pk} into hello (production) ships it"
    assert plane.deleted == [] and A in plane.images
    soak.request_cancel()  # the pin goes with the soak: the next run lets A go
    assert retain(function).deleted_images == {A: A[7:19]} and plane.deleted == [A]


def test_a_queued_promotion_keeps_every_image_of_its_function(function, staged_plane):
    from portal.models import Deployment

    plane, staging, production = staged_plane
    queued = Deployment.objects.create(function=function, environment=production, trigger="api",
                                       kind=Deployment.Kind.PROMOTION, digest=A)
    assert retain(function).skipped.startswith(f"deployment #{queued.pk} (promotion) is queued")
    assert plane.deleted == [] and "1" in plane.versions[staging.lambda_name]


def test_a_digest_live_in_a_function_on_another_repository_is_never_deleted(function, staged_plane):
    from tests.conftest import create_function, released

    plane, _, _ = staged_plane
    mirror = create_function(name="mirror", repository_url=function.repository_url, ecr_repository="team/mirror",
                             lambda_name="team-mirror")
    live = released(mirror, "4", "a" * 40)  # the same content, pushed to its own repository
    report = retain(function)
    assert report.kept_images[A] == f"live in mirror (production), deployment #{live.pk}"
    assert plane.deleted == []


def test_a_promotion_that_went_live_is_one_of_its_environments_releases(function, staged_plane):
    from portal.models import Deployment

    plane, staging, production = staged_plane
    plane.versions[production.lambda_name]["2"] = URI.format(C)
    promoted = Deployment.objects.create(function=function, environment=production, trigger="api",
                                         kind=Deployment.Kind.PROMOTION, status=Deployment.Status.SUCCEEDED,
                                         version="2", digest=C)
    plane.aliases[production.lambda_name] = {}  # nothing points at either: only the release rule keeps one
    report = retain(function)
    assert report.kept_versions["production:2"] == f"one of the last 1 releases (deployment #{promoted.pk})"
    assert "production:1" in report.deleted_versions
