"""Approvals: which count (portal/deployments/approvals.py), approving and rejecting
(portal/deployments/approving.py), the protection an environment may ask for and the
membership changes that would break it (portal/functions/forms.py and registry.py),
their audit entries and notifications, the deployment page's approvals block and the
read-only API. The release a valid approval sets off runs end to end in
tests/integration/test_browser_approvals.py."""

from datetime import timedelta
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from portal import functions
from portal.celery import DEPLOY_TASK, NOTIFY_TASK
from portal.deployments import approvals, approving, events
from portal.feedback import delivery
from portal.feedback import status as feedback
from portal.functions.forms import EnvironmentForm
from portal.models import ApiToken, Approval, AuditEvent, Deployment, Environment, Membership
from tests.conftest import refused, staged

Status, Kind = Deployment.Status, Deployment.Kind
DIGEST, OTHER = "sha256:" + "a" * 64, "sha256:" + "b" * 64


@pytest.fixture
def envs(function, cast, settings):
    """hello as staging then production; production asks for one approval. erin approves."""
    settings.SLIPWAY_API_DEPLOY_RATE = 0
    settings.SLIPWAY_ALLOWED_LAMBDA_PREFIXES = ["team-"]
    settings.SLIPWAY_ALLOWED_EXECUTION_ROLES = ["arn:aws:iam::123456789012:role/slipway-*"]
    settings.SLIPWAY_DEFAULT_EXECUTION_ROLE = "arn:aws:iam::123456789012:role/slipway-lambda"
    erin = get_user_model().objects.create_user("erin", "erin@example.org", "password-erin")
    Membership.objects.create(function=function, user=erin, role=Membership.Role.APPROVER)
    cast["erin"] = erin
    staging, production = staged(function)
    Environment.objects.filter(pk=production.pk).update(required_approvals=1)
    production.refresh_from_db()
    return staging, production


def held(function, environment, *, by=None, status=Status.AWAITING_APPROVAL, required=1, **fields) -> Deployment:
    """A promotion held for approval, as the gate leaves it."""
    return Deployment.objects.create(function=function, environment=environment, kind=Kind.PROMOTION,
                                     trigger="ui", status=status, digest=DIGEST, requested_by=by,
                                     approvals_required=required, gated_since=timezone.now(), **fields)


def given(deployment, user, *, decision="approved", digest=DIGEST, fingerprint=None, expires_in=3600):
    return Approval.objects.create(
        deployment=deployment, user=user, decision=decision, environment=deployment.environment, digest=digest,
        settings_fingerprint=fingerprint or approvals.fingerprint(deployment.environment),
        expires_at=timezone.now() + timedelta(seconds=expires_in))


# --- Which approvals count ----------------------------------------------------------------------


def test_an_approval_from_another_approver_counts(function, cast, envs):
    deployment = held(function, envs[1], by=cast["bob"])
    given(deployment, cast["erin"])
    assert approvals.counting(deployment).count() == 1
    assert approvals.satisfied(deployment)


def test_the_requester_never_counts(function, cast, envs):
    deployment = held(function, envs[1], by=cast["erin"])
    given(deployment, cast["erin"])
    assert approvals.counting(deployment).count() == 0 and not approvals.satisfied(deployment)


def test_an_automatic_request_counts_every_approver(function, cast, envs):
    deployment = held(function, envs[1], by=None)
    given(deployment, cast["erin"])
    given(deployment, cast["alice"])
    assert approvals.counting(deployment).count() == 2


def test_an_approver_who_lost_the_role_before_the_start_no_longer_counts(function, cast, envs):
    deployment = held(function, envs[1], by=cast["bob"])
    given(deployment, cast["erin"])
    assert approvals.satisfied(deployment)
    Membership.objects.filter(function=function, user=cast["erin"]).update(role=Membership.Role.DEPLOYER)
    assert not approvals.satisfied(deployment)


def test_a_deactivated_approver_no_longer_counts(function, cast, envs):
    deployment = held(function, envs[1], by=cast["bob"])
    given(deployment, cast["erin"])
    get_user_model().objects.filter(pk=cast["erin"].pk).update(is_active=False)
    assert not approvals.satisfied(deployment)


def test_staff_count_without_a_role(function, cast, envs):
    deployment = held(function, envs[1], by=cast["bob"])
    given(deployment, get_user_model().objects.create_user("root", is_staff=True))
    assert approvals.satisfied(deployment)


def test_an_expired_approval_no_longer_counts(function, cast, envs):
    deployment = held(function, envs[1], by=cast["bob"])
    given(deployment, cast["erin"], expires_in=60)
    assert approvals.satisfied(deployment)
    assert not approvals.satisfied(deployment, at=timezone.now() + timedelta(seconds=61))


def test_an_approval_of_another_digest_does_not_count(function, cast, envs):
    deployment = held(function, envs[1], by=cast["bob"])
    given(deployment, cast["erin"], digest=OTHER)
    assert not approvals.satisfied(deployment)


def test_an_approval_given_before_the_settings_changed_does_not_count(function, cast, envs):
    production = envs[1]
    deployment = held(function, production, by=cast["bob"])
    given(deployment, cast["erin"])
    assert approvals.satisfied(deployment)
    Environment.objects.filter(pk=production.pk).update(memory_mb=production.memory_mb * 2)
    deployment.environment.refresh_from_db()
    assert not approvals.satisfied(deployment)


def test_raising_protection_applies_to_waiting_requests(function, cast, envs):
    deployment = held(function, envs[1], by=cast["bob"], required=1)
    given(deployment, cast["erin"])
    assert approvals.satisfied(deployment)
    Environment.objects.filter(pk=envs[1].pk).update(required_approvals=2)
    deployment.environment.refresh_from_db()
    assert approvals.required(deployment) == 2 and not approvals.satisfied(deployment)


def test_lowering_protection_applies_only_to_later_requests(function, cast, envs):
    waiting = held(function, envs[1], by=cast["bob"], required=2)
    given(waiting, cast["erin"])
    Environment.objects.filter(pk=envs[1].pk).update(required_approvals=0)
    waiting.environment.refresh_from_db()
    assert approvals.required(waiting) == 2 and not approvals.satisfied(waiting)
    later = held(function, envs[1], by=cast["bob"], required=0)
    assert approvals.required(later) == 0 and approvals.satisfied(later)


# --- Approving and rejecting ------------------------------------------------------------------


def test_an_approval_binds_digest_environment_settings_and_expiry(function, cast, envs, sent, settings):
    settings.SLIPWAY_APPROVAL_TTL = 600
    deployment = held(function, envs[1], by=cast["bob"], required=2)
    before = timezone.now()
    approval = approving.approve(deployment, cast["erin"], "  looks good ")
    assert (approval.digest, approval.environment_id, approval.comment) == (DIGEST, envs[1].pk, "looks good")
    assert approval.settings_fingerprint == approvals.fingerprint(envs[1])
    assert before + timedelta(seconds=600) <= approval.expires_at <= timezone.now() + timedelta(seconds=600)


def test_a_valid_approval_releases_the_deployment(function, cast, envs, sent, django_capture_on_commit_callbacks):
    deployment = held(function, envs[1], by=cast["bob"])
    with django_capture_on_commit_callbacks(execute=True):
        approving.approve(deployment, cast["erin"])
    deployment.refresh_from_db()
    assert deployment.status == Status.QUEUED and deployment.gated_since is None
    assert [c.args[0] for c in sent.call_args_list].count(DEPLOY_TASK) == 1


def test_one_approval_of_two_keeps_it_waiting(function, cast, envs, sent):
    deployment = held(function, envs[1], by=cast["bob"], required=2)
    approving.approve(deployment, cast["erin"])
    assert Deployment.objects.get(pk=deployment.pk).status == Status.AWAITING_APPROVAL
    approving.approve(deployment, cast["alice"])
    assert Deployment.objects.get(pk=deployment.pk).status == Status.QUEUED


def test_the_requester_may_not_approve_their_own_request(function, cast, envs, sent):
    deployment = held(function, envs[1], by=cast["erin"])
    error = refused(lambda: approving.approve(deployment, cast["erin"]), "own-request")
    assert error.status == 403 and not Approval.objects.exists()
    assert Deployment.objects.get(pk=deployment.pk).status == Status.AWAITING_APPROVAL


@pytest.mark.parametrize("name", ["bob", "charlie", "dave"])
def test_a_user_whose_role_does_not_approve_is_refused(function, cast, envs, sent, name):
    deployment = held(function, envs[1], by=None)
    error = refused(lambda: approving.approve(deployment, cast[name]), "not-approver")
    assert error.status == 403 and not Approval.objects.exists()


def test_a_second_decision_by_the_same_user_is_refused(function, cast, envs, sent):
    deployment = held(function, envs[1], by=cast["bob"], required=2)
    approving.approve(deployment, cast["erin"])
    refused(lambda: approving.reject(deployment, cast["erin"]), "already-decided")
    assert list(Approval.objects.values_list("decision", flat=True)) == ["approved"]
    assert Deployment.objects.get(pk=deployment.pk).status == Status.AWAITING_APPROVAL


def test_a_second_decision_racing_past_the_check_meets_the_constraint(function, cast, envs, sent):
    deployment = held(function, envs[1], by=cast["bob"], required=2)
    approving.approve(deployment, cast["erin"])
    with mock.patch.object(approving, "refusal", autospec=True, return_value=None) as check:
        refused(lambda: approving.reject(deployment, cast["erin"]), "already-decided")
    assert check.call_count == 1  # the check let it through: the unique constraint refused it
    assert Deployment.objects.get(pk=deployment.pk).status == Status.AWAITING_APPROVAL
    assert not AuditEvent.objects.filter(action="deployment.rejected").exists()


def test_a_deployment_not_held_is_refused(function, cast, envs, sent):
    deployment = held(function, envs[1], by=cast["bob"], status=Status.QUEUED)
    refused(lambda: approving.approve(deployment, cast["erin"]), "not-awaiting-approval")
    assert not Approval.objects.exists()


def test_a_frozen_deployment_takes_approvals_while_it_still_needs_them(function, cast, envs, sent):
    short = held(function, envs[1], by=cast["bob"], status=Status.FROZEN)
    approving.approve(short, cast["erin"])
    assert Approval.objects.filter(deployment=short).count() == 1
    unprotected = held(function, envs[0], by=cast["bob"], status=Status.FROZEN, required=0)
    refused(lambda: approving.approve(unprotected, cast["erin"]), "not-awaiting-approval")


def test_an_approval_during_a_freeze_is_kept_and_the_freeze_still_holds(function, cast, envs, sent):
    from portal.models import FreezeWindow

    now = timezone.now()
    FreezeWindow.objects.create(environment=envs[1], reason="launch", starts_at=now - timedelta(hours=1),
                                ends_at=now + timedelta(hours=1))
    deployment = held(function, envs[1], by=cast["bob"], status=Status.FROZEN)
    approving.approve(deployment, cast["erin"])
    assert Deployment.objects.get(pk=deployment.pk).status == Status.FROZEN  # the freeze holds it, not approvals
    assert approvals.satisfied(deployment)
    refused(lambda: approving.approve(deployment, cast["alice"]), "not-awaiting-approval")  # nothing left to decide


def test_a_rejection_cancels_the_deployment_with_the_comment(function, cast, envs, sent):
    deployment = held(function, envs[1], by=cast["bob"])
    approving.reject(deployment, cast["erin"], "not during the launch")
    deployment.refresh_from_db()
    assert deployment.status == Status.CANCELLED and deployment.error_code == "rejected"
    assert deployment.error_message == "rejected by erin: not during the launch"


def test_a_comment_over_the_limit_is_refused_and_nothing_is_recorded(function, cast, envs, sent):
    deployment = held(function, envs[1], by=cast["bob"])
    error = refused(lambda: approving.reject(deployment, cast["erin"], "x" * 501), "invalid")
    assert "at most 500" in error.message and not Approval.objects.exists()


# --- Audit and notifications ------------------------------------------------------------------


def test_decisions_are_audited(function, cast, envs, sent):
    first, second = held(function, envs[1], by=cast["bob"]), held(function, envs[1], by=cast["bob"])
    approving.approve(first, cast["erin"], "ok")
    approving.reject(second, cast["alice"], "no")
    rows = AuditEvent.objects.filter(action__startswith="deployment.").order_by("pk")
    assert [(e.action, e.actor_label, e.detail["deployment"], e.detail["comment"]) for e in rows] == [
        ("deployment.approved", "erin", first.pk, "ok"), ("deployment.rejected", "alice", second.pk, "no")]


def test_entering_awaiting_approval_is_audited_and_notified(function, cast, envs, sent,
                                                            django_capture_on_commit_callbacks):
    function.feedback_settings.notify_members.add(cast["alice"])
    deployment = held(function, envs[1], by=cast["erin"])
    with django_capture_on_commit_callbacks(execute=True):
        events.status_changed.send(Deployment, deployment=deployment)
    event = AuditEvent.objects.get(action="deployment.approval_requested")
    assert event.detail == {"deployment": deployment.pk, "environment": "production", "required": 1,
                            "approvers": ["alice"]}  # erin asked: she never counts
    calls = [c.kwargs["args"] for c in sent.call_args_list if c.args[0] == NOTIFY_TASK]
    assert calls == [[function.pk, "approval_requested", deployment.pk, {"required": 1, "approvers": ["alice"]}]]


def test_decisions_are_notified(function, cast, envs, sent, django_capture_on_commit_callbacks):
    function.feedback_settings.notify_members.add(cast["alice"])
    deployment = held(function, envs[1], by=cast["bob"])
    with django_capture_on_commit_callbacks(execute=True):
        approving.reject(deployment, cast["erin"], "wrong build")
    calls = [c.kwargs["args"] for c in sent.call_args_list if c.args[0] == NOTIFY_TASK]
    assert calls == [[function.pk, "rejected", deployment.pk, {"by": "erin", "comment": "wrong build"}]]


def test_the_notification_text_names_who_may_approve(function, cast, envs):
    deployment = held(function, envs[1], by=cast["bob"])
    text, payload = delivery.compose(function, feedback.APPROVAL_REQUESTED, deployment,
                                     {"required": 1, "approvers": ["alice", "erin"]}, secrets=[])
    assert text == f"hello (production): promotion #{deployment.pk} awaits 1 approval(s); who may approve: alice, erin"
    assert payload["approval"] == {"required": 1, "approvers": ["alice", "erin"]}
    text, _ = delivery.compose(function, feedback.APPROVED, deployment, {"by": "erin", "comment": "ok"}, secrets=[])
    assert text == f"hello (production): promotion #{deployment.pk} approved by erin: ok"


def test_a_held_deployment_is_pending_in_gitlab_not_cancelled():
    assert feedback.gitlab_state(Status.AWAITING_APPROVAL) == feedback.PENDING
    assert feedback.gitlab_state(Status.FROZEN) == feedback.PENDING


# --- Protection: N against the approvers ------------------------------------------------------


def edit(environment, user, **values) -> EnvironmentForm:
    initial = EnvironmentForm(function=environment.function, instance=environment)
    data = {name: initial.initial.get(name, field.initial) for name, field in initial.fields.items()}
    data.update(values)
    return EnvironmentForm(data, function=environment.function, instance=environment, user=user)


def test_protection_above_the_approvers_minus_one_is_refused_with_the_count(function, cast, envs):
    form = edit(envs[1], cast["alice"], required_approvals=2)
    assert not form.is_valid()
    assert form.errors["required_approvals"] == [
        "hello has 2 member(s) who may approve (owners and approvers); the requester never counts, so at most "
        "1 approval(s) can be required: add approvers first"]


def test_protection_within_the_limit_is_saved_and_audited(function, cast, envs):
    Environment.objects.filter(pk=envs[1].pk).update(required_approvals=0)
    envs[1].refresh_from_db()
    form = edit(envs[1], cast["alice"], required_approvals=1, during_freeze="refuse")
    assert form.is_valid(), form.errors
    saved = functions.update_environment(form, user=cast["alice"])
    saved.refresh_from_db()
    assert (saved.required_approvals, saved.during_freeze) == (1, "refuse")
    event = AuditEvent.objects.get(action="environment.edited")
    assert event.detail["required_approvals"] == 1 and event.detail["during_freeze"] == "refuse"


def test_protection_is_checked_again_under_the_lock(function, cast, envs):
    Environment.objects.filter(pk=envs[1].pk).update(required_approvals=0)
    envs[1].refresh_from_db()
    form = edit(envs[1], cast["alice"], required_approvals=1)
    assert form.is_valid(), form.errors
    Membership.objects.filter(user=cast["erin"]).update(role="deployer")  # meanwhile, past the form
    refused(lambda: functions.update_environment(form, user=cast["alice"]), "protection-unsatisfiable")
    assert Environment.objects.get(pk=envs[1].pk).required_approvals == 0


def test_lowering_protection_is_never_refused(function, cast, envs):
    Environment.objects.filter(pk=envs[1].pk).update(required_approvals=5)
    envs[1].refresh_from_db()
    form = edit(envs[1], cast["alice"], required_approvals=3)
    assert form.is_valid(), form.errors


def test_demoting_an_approver_a_protection_needs_is_refused(function, cast, envs):
    error = refused(lambda: functions.set_member(function, cast["erin"], "deployer", user=cast["alice"]),
                    "protection-unsatisfiable")
    assert error.message == (
        "making erin deployer would leave hello with 1 member(s) who may approve, so at most 0 approval(s) could "
        "be given to a request (its requester never counts), but production requires 1: lower the requirement "
        "or add an approver first")
    assert Membership.objects.get(user=cast["erin"]).role == "approver"


def test_removing_an_approver_a_protection_needs_is_refused(function, cast, envs):
    refused(lambda: functions.remove_member(function, cast["erin"], user=cast["alice"]), "protection-unsatisfiable")
    assert Membership.objects.filter(user=cast["erin"]).exists()


def test_a_transfer_that_leaves_too_few_approvers_is_refused(function, cast, envs):
    refused(lambda: functions.transfer_ownership(function, cast["erin"], user=cast["alice"]),
            "protection-unsatisfiable")
    assert Membership.objects.get(user=cast["alice"]).role == "owner"


def test_a_membership_change_that_keeps_enough_approvers_is_allowed(function, cast, envs):
    functions.set_member(function, cast["bob"], "approver", user=cast["alice"])
    functions.set_member(function, cast["erin"], "viewer", user=cast["alice"])
    assert Membership.objects.get(user=cast["erin"]).role == "viewer"


# --- The deployment page ------------------------------------------------------------------------


def test_the_page_shows_the_requirement_and_who_may_approve(client, function, cast, envs):
    deployment = held(function, envs[1], by=cast["bob"])
    given(deployment, cast["alice"], decision="approved")
    client.force_login(cast["erin"])
    page = client.get(reverse("portal-deployment", args=[deployment.pk])).content.decode()
    assert 'id="approvals-required">1<' in page and '<span id="approvers">alice, erin</span>' in page
    assert 'data-user="alice" data-decision="approved"' in page
    assert 'id="approve-form"' in page


def test_the_requester_sees_why_they_cannot_approve(client, function, cast, envs):
    deployment = held(function, envs[1], by=cast["erin"])
    client.force_login(cast["erin"])
    page = client.get(reverse("portal-deployment", args=[deployment.pk])).content.decode()
    assert 'id="approve-form"' not in page
    assert "you requested this deployment: another approver must decide on it" in page


def test_approving_from_the_page_releases_it(client, function, cast, envs, sent):
    deployment = held(function, envs[1], by=cast["bob"])
    client.force_login(cast["erin"])
    response = client.post(reverse("portal-deployment-approve", args=[deployment.pk]), {"comment": "ship it"})
    assert response.status_code == 302
    assert Deployment.objects.get(pk=deployment.pk).status == Status.QUEUED
    assert Approval.objects.get().comment == "ship it"


def test_a_refusal_is_shown_on_the_page(client, function, cast, envs, sent):
    deployment = held(function, envs[1], by=cast["erin"])
    client.force_login(cast["erin"])
    response = client.post(reverse("portal-deployment-approve", args=[deployment.pk]), follow=True)
    assert "you requested this deployment" in response.content.decode()
    assert not Approval.objects.exists()


def test_approving_needs_the_csrf_token(function, cast, envs, sent):
    from django.test import Client

    deployment = held(function, envs[1], by=cast["bob"])
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(cast["erin"])
    assert browser.post(reverse("portal-deployment-approve", args=[deployment.pk])).status_code == 403
    assert not Approval.objects.exists()


# The role matrix of the approve and reject URLs (the freeze and override URLs have their own).
@pytest.mark.parametrize("name, code", [("bob", 403), ("charlie", 403), ("dave", 404)])
def test_the_decision_urls_refuse_deployers_viewers_and_strangers(client, function, cast, envs, sent, name, code):
    deployment = held(function, envs[1], by=None)
    client.force_login(cast[name])
    for url in ("portal-deployment-approve", "portal-deployment-reject"):
        assert client.post(reverse(url, args=[deployment.pk])).status_code == code, url
    assert not Approval.objects.exists()
    assert Deployment.objects.get(pk=deployment.pk).status == Status.AWAITING_APPROVAL


@pytest.mark.parametrize("signed_in", [False, True])
def test_the_decision_urls_refuse_an_api_token(client, function, cast, envs, sent, signed_in):
    deployment = held(function, envs[1], by=None)
    _, raw = ApiToken.issue(cast["erin"], "ci")
    if signed_in:
        client.force_login(cast["erin"])
    for url in ("portal-deployment-approve", "portal-deployment-reject"):
        response = client.post(reverse(url, args=[deployment.pk]), HTTP_AUTHORIZATION=f"Bearer {raw}")
        assert response.status_code == 403, url
    assert not Approval.objects.exists()


@pytest.mark.parametrize("name, decision", [("erin", "approved"), ("alice", "rejected"), ("root", "approved")])
def test_the_decision_urls_work_for_approvers_owners_and_staff(client, function, cast, envs, sent, name, decision):
    cast["root"] = get_user_model().objects.create_user("root", is_staff=True)
    deployment = held(function, envs[1], by=None)
    client.force_login(cast[name])
    url = "portal-deployment-approve" if decision == "approved" else "portal-deployment-reject"
    assert client.post(reverse(url, args=[deployment.pk])).status_code == 302
    assert Approval.objects.get().decision == decision
    assert Deployment.objects.get(pk=deployment.pk).status in (Status.QUEUED, Status.CANCELLED)


# --- The read-only API ------------------------------------------------------------------------


def test_the_api_lists_what_the_token_user_could_approve(client, function, cast, envs):
    mine = held(function, envs[1], by=cast["bob"])
    held(function, envs[1], by=cast["erin"])  # erin's own request: not hers to approve
    decided = held(function, envs[1], by=cast["bob"], required=2)
    given(decided, cast["erin"])
    _, raw = ApiToken.issue(cast["erin"], "ci")
    body = client.get("/api/v1/approvals", HTTP_AUTHORIZATION=f"Bearer {raw}").json()
    assert [item["deployment"] for item in body["items"]] == [mine.pk]
    assert body["items"][0]["approvers"] == ["alice", "erin"] and body["items"][0]["required"] == 1


def test_the_api_lists_a_frozen_deployment_only_while_it_still_needs_approvals(client, function, cast, envs):
    short = held(function, envs[1], by=cast["bob"], status=Status.FROZEN)
    enough = held(function, envs[1], by=cast["bob"], status=Status.FROZEN)
    given(enough, cast["alice"])
    _, raw = ApiToken.issue(cast["erin"], "ci")
    body = client.get("/api/v1/approvals", HTTP_AUTHORIZATION=f"Bearer {raw}").json()
    assert [item["deployment"] for item in body["items"]] == [short.pk]


def test_the_api_lists_nothing_for_a_deployer(client, function, cast, envs):
    held(function, envs[1], by=None)
    _, raw = ApiToken.issue(cast["bob"], "ci")
    assert client.get("/api/v1/approvals", HTTP_AUTHORIZATION=f"Bearer {raw}").json()["count"] == 0


def test_the_api_shows_a_deployments_decisions(client, function, cast, envs):
    deployment = held(function, envs[1], by=cast["bob"])
    given(deployment, cast["erin"], digest=OTHER)
    _, raw = ApiToken.issue(cast["charlie"], "read")
    body = client.get(f"/api/v1/deployments/{deployment.pk}/approvals", HTTP_AUTHORIZATION=f"Bearer {raw}").json()
    assert (body["required"], body["counted"]) == (1, 0)
    assert [(d["user"], d["decision"], d["counts"]) for d in body["decisions"]] == [("erin", "approved", False)]


def test_the_api_has_no_way_to_approve(client, function, cast, envs):
    deployment = held(function, envs[1], by=None)
    _, raw = ApiToken.issue(cast["erin"], "ci")
    for path in (f"/api/v1/deployments/{deployment.pk}/approvals", f"/api/v1/deployments/{deployment.pk}/approve"):
        assert client.post(path, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code in (404, 405), path
    assert not Approval.objects.exists()


def test_the_environment_api_shows_and_takes_protection(client, function, cast, envs):
    _, raw = ApiToken.issue(cast["alice"], "admin")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    body = client.get("/api/v1/functions/hello/environments/production", **auth).json()
    assert (body["required_approvals"], body["during_freeze"]) == (1, "wait")
    answer = client.patch("/api/v1/functions/hello/environments/production", {"required_approvals": 2},
                          content_type="application/json", **auth)
    assert answer.status_code == 400
    assert "at most 1 approval(s)" in answer.json()["error"]["fields"]["required_approvals"][0]
    answer = client.patch("/api/v1/functions/hello/environments/production", {"during_freeze": "refuse"},
                          content_type="application/json", **auth)
    assert answer.status_code == 200 and answer.json()["during_freeze"] == "refuse"


def test_the_environment_column_shows_protection(client, function, cast, envs):
    client.force_login(cast["charlie"])
    page = client.get(reverse("portal-function", args=[function.name])).content.decode()
    assert page.count('class="muted protection"') == 1  # production's; staging asks for none
    assert 'data-required="1">Protected: a deploy or promotion needs 1 approval (never' in page


def test_the_environment_page_edits_protection(client, function, cast, envs):
    client.force_login(cast["alice"])
    url = reverse("portal-environment-edit", args=[function.name, "production"])
    page = client.get(url).content.decode()
    assert 'name="required_approvals"' in page and 'name="during_freeze"' in page
    form = EnvironmentForm(function=function, instance=envs[1]).initial
    data = {name: value for name, value in form.items() if value is not None and name != "name"}
    answer = client.post(url, {**data, "lambda_name": envs[1].lambda_name, "required_approvals": 2})
    assert answer.status_code == 400 and "at most 1 approval(s) can be required" in answer.content.decode()
    assert Environment.objects.get(pk=envs[1].pk).required_approvals == 1
