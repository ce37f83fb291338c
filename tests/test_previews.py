"""Merge requests' previews: enabling them, the Merge Request Hook from GitLab's documented
payloads (tests/fixtures/gitlab/merge_request*.json), the per-MR queue and its rules, fork
approval, and the preview environment kept out of production's order and records. Celery's
send_task is the one seam patched."""

from __future__ import annotations

import pytest

from portal import deployments
from portal.deployments import previews as preview_rules
from portal.models import AuditEvent, Deployment, Environment, Preview, WebhookDelivery
from tests.conftest import refused, released, staged
from tests.gitlab_hooks import deliver, hook
from tests.previews import merge_request, mr_deliver, previews_on

OPEN_SHA = "9b2f4e6a8c0d1e3f5a7b9c1d3e5f7a9b1c3d5e7f"
UPDATE_SHA = "4d7c2b9e1f3a5c7e9b1d3f5a7c9e1b3d5f7a9c1e"
FORK_SHA = "7a1c3e5b9d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c"
Status, Kind = Deployment.Status, Deployment.Kind


@pytest.fixture(autouse=True)
def _allowed(settings, sent):
    settings.SLIPWAY_ALLOWED_LAMBDA_PREFIXES = ["team-"]


@pytest.fixture
def hooked(function):
    return hook(function)


@pytest.fixture
def previewing(hooked):
    previews_on(hooked)
    return hooked


# --- Enabling ---------------------------------------------------------------------------------


def test_enabling_previews_makes_an_isolated_environment_outside_the_order(function, settings):
    first = function.first_environment
    first.variables, first.secret_keys = {"MODE": "fast", "API_KEY": "s3cret"}, ["API_KEY"]
    first.save()
    environment = previews_on(function)
    assert (environment.preview, environment.name, environment.position, environment.lambda_name) == (
        True, "preview", 2000, "team-hello-preview")
    assert environment.execution_role_arn == settings.SLIPWAY_PREVIEW_EXECUTION_ROLE != first.execution_role_arn
    assert (environment.variables, environment.secret_keys) == ({"MODE": "fast"}, [])  # no secret value
    assert environment.preview_policy.allow_forks is False and environment.preview_policy.url_auth == ""
    assert AuditEvent.objects.filter(action="previews.enabled", function=function).exists()
    function.refresh_from_db()
    assert function.first_environment == first
    assert deployments.next_environment(first) is None
    assert list(function.environments.in_order()) == [first]


@pytest.mark.parametrize(("lambda_name", "error"), [
    ("team-" + "x" * 60, "at most 64"),
    ("other-hello", "may only manage Lambda functions whose names start with team-"),
    ("team-hello", "already deploys to this Lambda"),
    ("team hello", "letters, digits"),
])
def test_a_preview_lambda_name_is_checked_as_a_field(function, lambda_name, error):
    from portal.functions import PreviewsForm

    form = PreviewsForm({"lambda_name": lambda_name}, function=function)
    assert not form.is_valid() and error in form.errors["lambda_name"][0]
    assert not Environment.objects.filter(preview=True).exists()


def test_the_default_name_too_long_is_a_field_error(function):
    from portal.functions import PreviewsForm

    Environment.objects.filter(pk=function.first_environment.pk).update(lambda_name="team-" + "h" * 56)
    form = PreviewsForm({}, function=function)
    assert not form.is_valid() and "69 characters" in form.errors["lambda_name"][0]


@pytest.mark.parametrize(("role", "why"), [("", "no preview execution role is configured"),
                                           ("arn:aws:iam::111111111111:role/x", "is not one of")])
def test_previews_cannot_be_enabled_without_an_allowed_preview_role(function, settings, role, why):
    from portal.functions import PreviewsForm

    settings.SLIPWAY_PREVIEW_EXECUTION_ROLE = role
    form = PreviewsForm({}, function=function)
    assert not form.is_valid() and why in form.non_field_errors()[0]


def test_the_preview_environment_is_never_moved_counted_or_deleted_with_the_order(function, cast):
    from portal.functions import delete_environment

    preview = previews_on(function)
    staging, production = staged(function)
    preview.refresh_from_db()
    assert preview.position == 2000
    assert deployments.environment_named(function, deploying=True) == staging
    refused(lambda: deployments.environment_named(function, "preview"), "environment-unknown")
    refused(lambda: delete_environment(preview, user=cast["alice"]), "preview-environment")
    assert deployments.next_environment(production) is None


def test_turning_forks_on_is_audited(function, cast):
    previews_on(function, cast["alice"])
    previews_on(function, cast["alice"], allow_forks=True)
    assert function.environments.get(preview=True).preview_policy.allow_forks is True
    assert AuditEvent.objects.filter(action="previews.forks_allowed", actor=cast["alice"]).count() == 1


# --- Merge Request Hook -------------------------------------------------------------------------


def test_an_opened_merge_request_queues_a_preview_of_its_last_commit(client, previewing, sent,
                                                                      django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        answer = mr_deliver(client, merge_request())
    preview = Preview.objects.get()
    deployment = Deployment.objects.get()
    assert (answer["outcome"], answer["deployment"], answer["merge_request"]) == ("accepted", deployment.pk, 12)
    assert (preview.mr_iid, preview.state, preview.head_sha, preview.author, preview.fork) == (
        12, "open", OPEN_SHA, "ada", False)
    assert (preview.source_branch, preview.target_branch, preview.title) == (
        "faster-cold-starts", "main", "Faster cold starts")
    assert preview.alias == "mr-12" and preview.last_commit_at is not None
    assert (deployment.kind, deployment.preview, deployment.environment, deployment.commit_sha) == (
        Kind.PREVIEW, preview, previewing.environments.get(preview=True), OPEN_SHA)
    delivery = WebhookDelivery.objects.get()
    assert (delivery.preview, delivery.deployment, preview.delivery) == (preview, deployment, delivery)
    assert sent.call_args.kwargs["args"] == [deployment.pk]


@pytest.mark.parametrize(("name", "detail"), [
    ("merge_request_update_no_oldrev.json", "!12 updated without new commits (no oldrev): the preview stays"),
    ("merge_request_approved.json", "!12 approved: approvals do not change a preview"),
    ("merge_request_null_last_commit.json", "!12: no last_commit (its source branch is gone): nothing to preview"),
])
def test_events_that_change_no_code_are_ignored_with_why(client, previewing, name, detail):
    answer = mr_deliver(client, merge_request(name))
    assert (answer["outcome"], answer["detail"]) == ("ignored", detail)
    assert WebhookDelivery.objects.get().detail == detail
    assert not Deployment.objects.exists()


def test_an_update_with_new_commits_moves_the_preview_and_supersedes_the_queued_one(client, previewing):
    first = mr_deliver(client, merge_request())
    second = mr_deliver(client, merge_request("merge_request_update.json"))
    older, newer = Deployment.objects.get(pk=first["deployment"]), Deployment.objects.get(pk=second["deployment"])
    assert (older.status, older.superseded_by, newer.status, newer.commit_sha) == (
        Status.SUPERSEDED, newer, Status.QUEUED, UPDATE_SHA)
    assert Preview.objects.get().head_sha == UPDATE_SHA


def test_newest_wins_by_updated_at_not_by_arrival(client, previewing):
    mr_deliver(client, merge_request("merge_request_update.json"))
    late = mr_deliver(client, merge_request())  # the open, delivered after the update
    assert late["outcome"] == "ignored" and late["detail"].startswith("older than what preview !12 holds")
    assert Preview.objects.get().head_sha == UPDATE_SHA
    assert list(Deployment.objects.values_list("commit_sha", flat=True)) == [UPDATE_SHA]


def test_on_a_tie_of_updated_at_the_later_delivery_wins(client, previewing):
    mr_deliver(client, merge_request())
    tie = merge_request("merge_request_update.json", updated_at="2026-11-20T09:02:11Z")
    answer = mr_deliver(client, tie)
    assert answer["outcome"] == "accepted" and Preview.objects.get().head_sha == UPDATE_SHA
    # The same event's earlier delivery, replayed by hand into the past, loses the tie.
    preview = Preview.objects.get()
    stale = preview_rules.MergeRequest(iid=12, action="update", updated_at=preview.mr_updated_at, head_sha=OPEN_SHA)
    received = preview_rules.request_preview(previewing, stale, delivery=preview.delivery_id - 1)
    assert not received.accepted and "older than" in received.detail


def test_close_marks_the_preview_closed_stops_its_queue_and_announces_the_clean_up(client, previewing):
    closed = []

    def _closed(sender, preview, **_):
        closed.append((preview.pk, preview.state))
    deployments.preview_closed.connect(_closed)
    try:
        queued = mr_deliver(client, merge_request())["deployment"]
        answer = mr_deliver(client, merge_request("merge_request_close.json"))
    finally:
        deployments.preview_closed.disconnect(_closed)
    preview = Preview.objects.get()
    assert (answer["outcome"], preview.state, preview.removed_reason) == ("accepted", "closed",
                                                                          "merge request closed")
    assert closed == [(preview.pk, "closed")]
    assert Deployment.objects.get(pk=queued).status == Status.CANCELLED
    assert WebhookDelivery.objects.filter(preview=preview).count() == 2


def test_an_update_after_a_close_is_ignored_and_a_reopen_enables_it_again(client, previewing):
    mr_deliver(client, merge_request())
    mr_deliver(client, merge_request("merge_request_merge.json"))
    late = mr_deliver(client, merge_request("merge_request_update.json", updated_at="2026-11-22T00:00:00Z"))
    assert late["outcome"] == "ignored" and "an update after a close is ignored" in late["detail"]
    reopened = mr_deliver(client, merge_request(action="reopen", updated_at="2026-11-23T00:00:00Z"))
    preview = Preview.objects.get()
    assert reopened["outcome"] == "accepted" and preview.state == "open" and preview.removed_reason == ""
    assert Deployment.objects.get(pk=reopened["deployment"]).commit_sha == OPEN_SHA


def test_a_close_older_than_a_reopen_is_ignored(client, previewing):
    mr_deliver(client, merge_request())
    mr_deliver(client, merge_request(action="reopen", updated_at="2026-11-25T00:00:00Z"))
    answer = mr_deliver(client, merge_request("merge_request_close.json"))
    assert answer["outcome"] == "ignored" and Preview.objects.get().state == "open"


def test_a_repeat_of_the_same_head_queues_nothing_more(client, previewing):
    mr_deliver(client, merge_request())
    again = mr_deliver(client, merge_request(updated_at="2026-11-20T09:30:00Z"))
    assert again["outcome"] == "ignored" and "already previewed or queued" in again["detail"]
    assert Deployment.objects.count() == 1


@pytest.mark.parametrize(("attributes", "detail"), [
    ({"target_branch": "release"}, "!12 targets release; previews are for merge requests into main"),
    ({"draft": True}, "!12 is a draft: drafts do not preview"),
    ({"source": None}, "!12: its source project was deleted: refused"),
    ({"target": {"path_with_namespace": "team/other", "git_http_url": "https://gitlab.example.com/team/other.git",
                 "web_url": "https://gitlab.example.com/team/other"}},
     "!12 targets team/other, not hello's repository"),
])
def test_what_does_not_preview_is_ignored_with_why(client, previewing, attributes, detail):
    answer = mr_deliver(client, merge_request(**attributes))
    assert (answer["outcome"], answer["detail"]) == ("ignored", detail)
    assert not Preview.objects.exists() and not Deployment.objects.exists()


def test_target_branches_and_drafts_follow_the_policy(client, hooked):
    previews_on(hooked, target_branches=["release", "main"], allow_drafts=True)
    answer = mr_deliver(client, merge_request(target_branch="release", draft=True))
    assert answer["outcome"] == "accepted" and Preview.objects.get().target_branch == "release"


def test_a_draft_taken_off_previews_without_new_commits(client, previewing):
    body = merge_request("merge_request_update_no_oldrev.json", draft=False)
    body["changes"] = {"draft": {"previous": True, "current": False}}
    assert mr_deliver(client, body)["outcome"] == "accepted"


def test_a_fork_is_refused_unless_allowed_and_audited(client, previewing):
    answer = mr_deliver(client, merge_request("merge_request_fork.json"))
    assert answer["outcome"] == "ignored" and answer["detail"].startswith("!13 comes from a fork (project 77)")
    audit = AuditEvent.objects.get(action="preview.refused")
    assert "fork" in audit.detail["reason"] and not Preview.objects.exists()


def test_an_allowed_fork_waits_for_a_deployers_approval_of_each_head(client, hooked, cast):
    previews_on(hooked, allow_forks=True)
    answer = mr_deliver(client, merge_request("merge_request_fork.json"))
    preview = Preview.objects.get()
    assert answer["outcome"] == "accepted" and "waits for a deployer's approval" in answer["detail"]
    assert (preview.fork, preview.awaiting_approval, preview.author) == (True, True, "outsider")
    assert not Deployment.objects.exists()
    refused(lambda: deployments.approve_preview(preview, user=cast["bob"], commit=OPEN_SHA), "head-moved")
    deployment = deployments.approve_preview(preview, user=cast["bob"], commit=FORK_SHA)
    preview.refresh_from_db()
    assert (deployment.kind, deployment.commit_sha, deployment.requested_by) == (Kind.PREVIEW, FORK_SHA, cast["bob"])
    assert (preview.approved_sha, preview.approved_by, preview.awaiting_approval) == (FORK_SHA, cast["bob"], False)
    assert AuditEvent.objects.filter(action="preview.approved", actor=cast["bob"]).exists()
    refused(lambda: deployments.approve_preview(preview, user=cast["bob"], commit=FORK_SHA), "already-approved")
    # A new head of the fork waits again.
    moved = merge_request("merge_request_fork.json", updated_at="2026-11-22T15:00:00Z", oldrev=FORK_SHA,
                          action="update")
    moved["object_attributes"]["last_commit"]["id"] = UPDATE_SHA
    assert "waits for a deployer's approval" in mr_deliver(client, moved)["detail"]
    assert Deployment.objects.count() == 1 and Preview.objects.get().awaiting_approval


def test_a_same_project_merge_request_needs_no_approval(client, previewing, cast):
    mr_deliver(client, merge_request())
    refused(lambda: deployments.approve_preview(Preview.objects.get(), user=cast["bob"], commit=OPEN_SHA),
            "not-a-fork")


def test_remove_then_redeploy_brings_a_preview_back(client, previewing, cast):
    mr_deliver(client, merge_request())
    preview = deployments.remove_preview(Preview.objects.get(), user=cast["bob"])
    assert (preview.state, preview.removed_reason) == ("closed", "removed by bob")
    deployment = deployments.redeploy_preview(preview, user=cast["bob"])
    preview.refresh_from_db()
    assert preview.state == "open" and deployment.commit_sha == OPEN_SHA
    mr_deliver(client, merge_request("merge_request_merge.json"))
    refused(lambda: deployments.redeploy_preview(preview, user=cast["bob"]), "preview-closed")


def test_previews_off_or_malformed(client, hooked):
    answer = mr_deliver(client, merge_request())
    assert answer["detail"] == "!12: previews are off for hello"
    previews_on(hooked)
    response = deliver(client, "hello", merge_request(updated_at="yesterday"), event="Merge Request Hook")
    assert response.status_code == 400
    assert "updated_at is not a time: 'yesterday'" in WebhookDelivery.objects.first().detail


# --- The per-MR queue ---------------------------------------------------------------------------


def test_previews_of_different_merge_requests_never_wait_for_each_other_or_for_production(
        client, previewing, sent, django_capture_on_commit_callbacks):
    running = Deployment.objects.create(function=previewing, trigger="cli", status=Status.BUILDING)
    with django_capture_on_commit_callbacks(execute=True):
        a = mr_deliver(client, merge_request())["deployment"]
        b = mr_deliver(client, merge_request(iid=14, updated_at="2026-11-20T10:00:00Z"))["deployment"]
    assert [call.kwargs["args"] for call in sent.call_args_list] == [[a], [b]]
    assert running.environment != Deployment.objects.get(pk=a).environment


def test_a_preview_waits_behind_its_own_merge_requests_running_one_and_dispatch_sends_it(
        client, previewing, sent, django_capture_on_commit_callbacks):
    from portal.deployments import queue

    first = mr_deliver(client, merge_request())["deployment"]
    Deployment.objects.filter(pk=first).update(status=Status.BUILDING)
    second = mr_deliver(client, merge_request("merge_request_update.json"))["deployment"]
    other = mr_deliver(client, merge_request(iid=14))["deployment"]
    second_row = Deployment.objects.get(pk=second)
    assert (second_row.status, second_row.enqueued_at) == (Status.QUEUED, None)  # behind #first, same MR
    assert Deployment.objects.get(pk=other).enqueued_at is not None  # another MR: sent at once
    Deployment.objects.filter(pk=first).update(status=Status.SUCCEEDED)
    sent.reset_mock()
    with django_capture_on_commit_callbacks(execute=True):
        queue.dispatch(second_row.environment_id)
    assert [call.kwargs["args"] for call in sent.call_args_list] == [[second]]


# --- Kept out of production's records ------------------------------------------------------------


def test_a_preview_is_never_what_is_live_a_rollback_target_or_a_gitlab_deployment(previewing):
    from portal.feedback import gitlab_deployments

    environment = previewing.environments.get(preview=True)
    preview = Preview.objects.create(function=previewing, environment=environment, mr_iid=3, head_sha="a" * 40)
    row = released(previewing, "4", "a" * 40, environment=environment, kind=Kind.PREVIEW, preview=preview)
    assert deployments.live_deployment(environment) is None
    assert not deployments.went_live(environment).exists()
    assert gitlab_deployments.wanted(row) == ""
    live = released(previewing, "2", "b" * 40)
    assert deployments.live_deployment(previewing.first_environment) == live


def test_retention_keeps_no_preview_version_for_being_recent(previewing):
    from portal.deployments import retention

    environment = previewing.environments.get(preview=True)
    kept, cutoff = retention._releases(environment, 10)
    assert kept == {} and cutoff is not None  # so only an alias keeps a preview's version


def test_a_previews_shift_records_no_drift_baseline(previewing):
    from portal.feedback import drift
    from portal.models import DriftState

    environment = previewing.environments.get(preview=True)
    row = released(previewing, "4", "a" * 40, environment=environment, kind=Kind.PREVIEW)
    drift.record_shift(row, {"memory_mb": 1024})
    assert DriftState.objects.get(environment=environment).expected_state == {}



def test_no_freeze_or_approval_rule_holds_a_preview(previewing):
    from datetime import timedelta

    from django.utils import timezone

    from portal.deployments import gates
    from portal.models import FreezeWindow

    FreezeWindow.objects.create(reason="year end", starts_at=timezone.now() - timedelta(hours=1),
                                ends_at=timezone.now() + timedelta(hours=1))  # global: every environment
    environment = previewing.environments.get(preview=True)
    row = Deployment.objects.create(function=previewing, environment=environment, trigger="webhook", kind=Kind.PREVIEW,
                                    approvals_required=2, digest="sha256:" + "a" * 64)
    deploy = Deployment.objects.create(function=previewing, trigger="webhook")
    assert gates.hold_reason(row) is None
    assert gates.hold_reason(deploy)[0] == Status.FROZEN  # what the same freeze does to production's deploy


@pytest.mark.parametrize(("repository_url", "same"), [
    ("https://gitlab.example.com/team/hello.git", True),
    ("https://gitlab.example.com/team/hello", True),
    ("git@gitlab.example.com:team/hello.git", True),
    ("ssh://git@gitlab.example.com:2222/team/hello.git", True),  # same host and path, another port
    ("https://GitLab.example.com/Team/Hello.git/", True),
    ("https://gitlab.example.com/team/hello-fork.git", False),
    ("https://other.example.com/team/hello.git", False),
    ("/srv/git/hello.git", False),
])
def test_a_payloads_project_is_the_functions_repository_by_url_or_path(repository_url, same):
    from portal.hooks.merge_requests import same_repository
    from tests.gitlab_hooks import payload

    assert same_repository(repository_url, payload("merge_request.json")["project"]) is same


@pytest.mark.parametrize("written", ["2026-11-20T09:02:11Z", "2026-11-20 09:02:11 UTC", "2026-11-20T10:02:11+01:00",
                                     "2026-11-20T09:02:11.000Z"])
def test_updated_at_in_each_form_gitlab_writes_it(written):
    import datetime

    from portal.hooks.merge_requests import _when

    assert _when(written) == datetime.datetime(2026, 11, 20, 9, 2, 11, tzinfo=datetime.UTC)
