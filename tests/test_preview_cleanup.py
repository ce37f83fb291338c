"""Removing previews (portal/deployments/preview_cleanup.py) at the boto3 seam (deploy.aws.client):
a close sends the removal, which waits for the merge request's running deployment and then
deletes URL, statements and alias in that order; the sweep closes idle previews past the TTL,
retries closed ones and removes mr-* aliases no open preview owns."""

from datetime import timedelta
from unittest import mock

import pytest
from botocore.exceptions import ClientError
from django.utils import timezone

from portal.deployments import preview_cleanup
from portal.models import AuditEvent, Deployment, Preview
from tests.preview_fixtures import open_preview, preview_environment, queued

Status, State = Deployment.Status, Preview.State
SHA = "a" * 40


@pytest.fixture
def lam():
    with mock.patch("deploy.aws.client", autospec=True) as client, \
            mock.patch("deploy.aws.time.sleep", autospec=True):
        lam = client.return_value
        for call in (lam.delete_function_url_config, lam.remove_permission, lam.delete_alias):
            call.return_value = {}
        yield lam


@pytest.fixture
def environment(function):
    return preview_environment(function)


def closed(environment, iid=7, **fields):
    preview = open_preview(environment, iid, SHA, version="3", **fields)
    preview_cleanup.close(preview, "the merge request was merged")
    return Preview.objects.get(pk=preview.pk)


def test_a_close_cancels_queued_previews_and_sends_the_removal(transactional_db, environment, sent,
                                                               django_capture_on_commit_callbacks):
    preview = open_preview(environment, 7, SHA)
    waiting = queued(preview)
    with django_capture_on_commit_callbacks(execute=True):
        assert preview_cleanup.close(preview, "merged") is True
        assert preview_cleanup.close(preview, "merged") is False  # closed once
    waiting.refresh_from_db()
    assert (waiting.status, waiting.error_code) == (Status.CANCELLED, "preview-closed")
    assert [c.args[0] for c in sent.call_args_list if c.args[0] == "slipway.preview_cleanup"] == [
        "slipway.preview_cleanup"]
    assert Preview.objects.get(pk=preview.pk).state == State.CLOSED


def test_the_removal_waits_for_the_merge_requests_running_deployment(transactional_db, environment, lam):
    preview = closed(environment)
    running = queued(preview, status=Status.SHIFTING)  # its alias step entered before the close
    assert preview_cleanup.remove(preview.pk) == f"waits for deployment #{running.pk}"
    assert lam.method_calls == []
    running.finish(Status.SUCCEEDED)
    assert preview_cleanup.remove(preview.pk) == "removed url, slipway-mr-7-url, slipway-mr-7-invoke, alias"
    assert [name for name, _, _ in lam.method_calls] == ["delete_function_url_config", "remove_permission",
                                                         "remove_permission", "delete_alias"]
    assert {kwargs.get("Qualifier", kwargs.get("Name")) for _, _, kwargs in lam.method_calls} == {"mr-7"}
    preview.refresh_from_db()
    assert (preview.state, preview.version, preview.url) == (State.REMOVED, "", "")
    assert AuditEvent.objects.filter(action="preview.removed").count() == 1


def test_a_removal_of_an_open_or_reopened_preview_does_nothing(transactional_db, environment, lam):
    preview = open_preview(environment, 7, SHA)
    assert preview_cleanup.remove(preview.pk) == "not closed"
    assert lam.method_calls == []


def test_a_removal_that_aws_refuses_leaves_the_preview_closed_for_the_sweep(transactional_db, environment, lam):
    preview = closed(environment)
    lam.remove_permission.side_effect = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}},
                                                    "RemovePermission")
    with pytest.raises(Exception, match="AccessDenied"):
        preview_cleanup.remove(preview.pk)
    assert Preview.objects.get(pk=preview.pk).state == State.CLOSED
    lam.delete_alias.assert_not_called()


def test_the_sweep_closes_idle_previews_past_the_ttl_and_removes_them(transactional_db, environment, lam, settings,
                                                                      django_capture_on_commit_callbacks, sent):
    settings.SLIPWAY_PREVIEW_TTL_DAYS = 7
    old = timezone.now() - timedelta(days=8)
    idle = open_preview(environment, 1, SHA, last_commit_at=old, version="1")
    busy = open_preview(environment, 2, SHA, last_commit_at=old, version="1")
    queued(busy, status=Status.BUILDING)
    fresh = open_preview(environment, 3, SHA, last_commit_at=timezone.now(), version="1")
    lam.get_function_configuration.return_value = {"FunctionName": "team-hello-preview"}
    lam.list_aliases.return_value = {"Aliases": []}
    with django_capture_on_commit_callbacks(execute=True):
        outcome = preview_cleanup.sweep()
    assert outcome == {"closed": 1, "removed": 1, "orphans": 0}
    assert {p.mr_iid: p.state for p in Preview.objects.all()} == {1: State.REMOVED, 2: State.OPEN, 3: State.OPEN}
    assert Preview.objects.get(pk=idle.pk).removed_reason == "no new commit for 7 days"
    assert fresh.pk


def test_the_sweep_removes_mr_aliases_that_no_open_preview_owns(transactional_db, environment, lam):
    open_preview(environment, 7, SHA, version="3")
    lam.get_function_configuration.return_value = {"FunctionName": "team-hello-preview"}
    lam.list_aliases.return_value = {"Aliases": [{"Name": "mr-7"}, {"Name": "mr-9"}, {"Name": "live"},
                                                 {"Name": "mr-x"}]}
    assert preview_cleanup.remove_orphans() == 1
    assert [c.kwargs for c in lam.delete_alias.call_args_list] == [{"FunctionName": "team-hello-preview",
                                                                    "Name": "mr-9"}]


def test_the_sweep_skips_a_preview_lambda_not_made_yet(transactional_db, environment, lam):
    lam.get_function_configuration.side_effect = ClientError(
        {"Error": {"Code": "ResourceNotFoundException", "Message": "no"}}, "GetFunctionConfiguration")
    assert preview_cleanup.remove_orphans() == 0
    lam.list_aliases.assert_not_called()
