"""Back to GitLab for previews (portal/feedback/preview_notes.py and the commit status), against
the local GitLab that checks the API (tests/fake_gitlab.py): one note per function on the merge
request, edited in place, posted anew on 403/404, one poster at a time; the commit status only
where the policy opts in, a fork's with its merge request's ref."""

from unittest import mock

import pytest

from deploy import outbound
from portal.feedback import delivery, preview_notes
from portal.feedback import status as feedback
from portal.models import Deployment, Preview, PreviewPolicy
from tests.preview_fixtures import open_preview, preview_environment, queued
from tests.test_feedback import reporting

SHA = "a" * 40
Status = Deployment.Status


@pytest.fixture
def preview(function, fake, settings):
    settings.SLIPWAY_NOTIFY_TIMEOUT, settings.SLIPWAY_NOTIFY_ATTEMPTS, settings.SLIPWAY_NOTIFY_BACKOFF = 0.5, 2, 0.01
    reporting(function, fake.url)
    made = open_preview(preview_environment(function), 7, SHA, version="4",
                        url="https://abc.lambda-url.us-east-1.on.aws/")
    queued(made, status=Status.SUCCEEDED)
    return made


def test_one_note_per_function_is_posted_then_edited_in_place(transactional_db, preview, fake):
    assert preview_notes.report(preview.pk) == "posted note 100"
    note = fake.notes[100]
    assert note["iid"] == 7 and note["body"].startswith("<!-- slipway:preview:hello -->")
    assert "version 4 behind alias `mr-7` of `team-hello-preview`" in note["body"]
    assert "https://abc.lambda-url.us-east-1.on.aws/" in note["body"]
    Preview.objects.filter(pk=preview.pk).update(state=Preview.State.REMOVED, removed_reason="merged")
    assert preview_notes.report(preview.pk) == "edited note 100"
    assert list(fake.notes) == [100] and "Removed: merged." in fake.notes[100]["body"]
    assert fake.errors == []


@pytest.mark.parametrize("gone", ["403: another user wrote it", "404: deleted"])
def test_a_note_that_cannot_be_edited_is_posted_anew(transactional_db, preview, fake, gone):
    preview_notes.report(preview.pk)
    if gone.startswith("403"):
        fake.foreign_notes.add(100)
    else:
        fake.notes.pop(100)
    assert preview_notes.report(preview.pk) == "posted note 101"
    assert Preview.objects.get(pk=preview.pk).note_id == 101


def test_two_previews_finishing_together_post_one_note(transactional_db, preview, fake):
    """The second task finds the lease taken and leaves; the holder posts what the rows say then."""
    real = outbound.post_mr_note
    answers = []

    def racing(*args, **kwargs):
        answers.append(preview_notes.report(preview.pk))  # a second task while the first posts
        return real(*args, **kwargs)

    with mock.patch.object(outbound, "post_mr_note", autospec=True, side_effect=racing):
        assert preview_notes.report(preview.pk) == "posted note 100"
    assert answers == ["busy: the lease holder posts the newest state when it is done"]
    assert len(fake.of("POST", "/merge_requests/7/notes")) == 1
    assert Preview.objects.get(pk=preview.pk).note_lease_until is None


def test_a_failed_preview_says_why_on_the_merge_request(transactional_db, preview, fake):
    queued(preview, status=Status.FAILED, error_code="preview-cap",
           error_message="2 previews are open (the cap is 2) and none is idle")
    preview_notes.report(preview.pk)
    assert "failed: preview-cap: 2 previews are open (the cap is 2) and none is idle" in fake.notes[100]["body"]


def test_a_preview_commit_status_is_sent_only_where_the_policy_opts_in(transactional_db, preview, sent,
                                                                        django_capture_on_commit_callbacks):
    deployment = queued(preview, status=Status.BUILDING)
    with django_capture_on_commit_callbacks(execute=True):
        feedback.report_status(deployment)
    assert sent.call_count == 0
    PreviewPolicy.objects.filter(environment=preview.environment).update(commit_status=True)
    with django_capture_on_commit_callbacks(execute=True):
        feedback.report_status(deployment)
    assert sent.call_args.args[0] == "slipway.commit_status"


@pytest.mark.parametrize("fork, ref", [(False, "feature-7"), (True, "refs/merge-requests/7/head")])
def test_a_preview_commit_status_names_its_ref_explicitly(transactional_db, preview, fake, fork, ref):
    Preview.objects.filter(pk=preview.pk).update(fork=fork)
    deployment = queued(Preview.objects.get(pk=preview.pk), status=Status.SUCCEEDED)
    assert delivery.report_commit_status(deployment.pk, feedback.SUCCESS) == feedback.SUCCESS
    assert fake.of("POST", f"/statuses/{SHA}")[-1].body["ref"] == ref
