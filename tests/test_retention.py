"""Retention's AWS side at the seam (deploy.aws.client), its schedule and routing.
The rule itself runs on the local plane: tests/integration/test_retention.py."""

from unittest import mock

import pytest
from django.conf import settings

from deploy import ecr, lambdas
from portal.celery import RETENTION_TASK

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

    from portal import retention

    with mock.patch("deploy.aws.client", autospec=True) as client, CaptureQueriesContext(connection) as queries:
        client.return_value.get_function_configuration.side_effect = ClientError(
            {"Error": {"Code": "ResourceNotFoundException", "Message": "no such function"}}, "GetFunctionConfiguration")
        (report,) = retention.run(keep=3, dry_run=False, names=[function.name])
    assert report.skipped == f"the Lambda {function.lambda_name} does not exist (never deployed)"
    sqls = [q["sql"] for q in queries.captured_queries]
    locks = [i for i, sql in enumerate(sqls) if sql.startswith("SELECT") and 'FROM "portal_function"' in sql
             and ("FOR UPDATE" in sql or connection.vendor != "postgresql")]
    reads = [i for i, sql in enumerate(sqls) if sql.startswith("SELECT") and 'FROM "portal_deployment"' in sql]
    assert locks and reads and locks[0] < reads[0]


def test_one_function_failing_does_not_stop_the_others(function, db):
    from portal import retention
    from portal.models import Function

    Function.objects.create(name="other", repository_url="https://gitlab.example.com/team/o.git",
                            ecr_repository="team/o", lambda_name="team-o")
    with mock.patch("portal.retention.retain", autospec=True) as retain:
        retain.side_effect = [RuntimeError("boom"), retention.Report("other", 3, False)]
        reports = retention.run(keep=3, dry_run=False)
    assert [(r.function, r.errors) for r in reports] == [("hello", ["RuntimeError: boom"]), ("other", [])]
