"""Managing freeze windows and overriding one (portal/deployments/freezing.py): the rules,
who may, what is audited and notified, and that an override puts the row back in the
queue (gates.reconsider). Nothing is patched but Celery's send_task (the `sent` seam)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from portal.celery import NOTIFY_TASK
from portal.core.errors import RequestRefused
from portal.deployments import freezing, requesting
from portal.models import AuditEvent, Deployment, FreezeWindow

Status = Deployment.Status
SHA = "a" * 40


def form(instance=None, **data):
    return freezing.FreezeWindowForm({"reason": "launch", "timezone": "Europe/Berlin", **data}, instance=instance)


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user("erin", "erin@example.org", "password-erin", is_staff=True)


@pytest.fixture
def production(function):
    return function.first_environment


def one_off(environment, **fields) -> FreezeWindow:
    """A window holding now (an hour either side)."""
    now = timezone.now()
    return FreezeWindow.objects.create(environment=environment, reason=fields.pop("reason", "launch"),
                                       starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=1), **fields)


def frozen(function) -> Deployment:
    """A deploy held by a freeze after its push (its digest pinned, as the pipeline leaves it)."""
    deployment = requesting.request_deploy(function, trigger="api", commit=SHA)
    Deployment.objects.filter(pk=deployment.pk).update(status=Status.FROZEN, gated_since=timezone.now(),
                                                       digest="sha256:" + "a" * 64)
    deployment.refresh_from_db()
    return deployment


# --- The form's rules -------------------------------------------------------------------------


def test_a_recurring_window_needs_two_valid_crons(db):
    valid = form(start_cron="0 18 * * 5", end_cron="0  8 * * 1")
    assert valid.is_valid() and valid.cleaned_data["end_cron"] == "0 8 * * 1"
    bad = form(start_cron="0 25 * * *", end_cron="0 8 * * 1")
    assert not bad.is_valid() and "not a valid cron" in bad.errors["start_cron"][0]
    half = form(start_cron="0 18 * * 5")
    assert not half.is_valid() and "both crons" in half.errors["end_cron"][0]


def test_a_one_off_window_ends_after_it_starts(db):
    assert form(starts_at="2026-12-24 00:00", ends_at="2026-12-27 00:00").is_valid()
    for end in ("2026-12-24 00:00", "2026-12-23 00:00"):
        backwards = form(starts_at="2026-12-24 00:00", ends_at=end)
        assert not backwards.is_valid() and "after the start" in backwards.errors["ends_at"][0]
    half = form(starts_at="2026-12-24 00:00")
    assert not half.is_valid() and "both times" in half.errors["ends_at"][0]


def test_it_refuses_a_mix_nothing_an_unknown_zone_and_no_reason(db):
    mixed = form(start_cron="0 18 * * 5", end_cron="0 8 * * 1", starts_at="2026-12-24 00:00",
                 ends_at="2026-12-27 00:00")
    assert not mixed.is_valid() and "not both" in mixed.non_field_errors()[0]
    assert "Give a start" in form().errors["__all__"][0]
    zone = form(start_cron="0 18 * * 5", end_cron="0 8 * * 1", timezone="Mars/Olympus")
    assert not zone.is_valid() and "IANA" in zone.errors["timezone"][0]
    blank = form(start_cron="0 18 * * 5", end_cron="0 8 * * 1", reason="   ")
    assert not blank.is_valid() and "reason" in blank.errors


def test_the_zone_defaults_to_utc(db):
    valid = freezing.FreezeWindowForm({"reason": "x", "start_cron": "0 1 * * *", "end_cron": "0 2 * * *"})
    assert valid.is_valid() and valid.cleaned_data["timezone"] == "UTC"


# --- Who manages windows, and the audit -------------------------------------------------------


def test_an_owner_adds_an_environments_window_and_it_is_audited(cast, production):
    valid = form(start_cron="0 18 * * 5", end_cron="0 8 * * 1")
    assert valid.is_valid()
    window = freezing.create(valid, production, cast["alice"])
    assert (window.environment, window.created_by, window.timezone) == (production, cast["alice"], "Europe/Berlin")
    event = AuditEvent.objects.get(action="freeze.created")
    assert event.actor == cast["alice"] and event.function == production.function
    assert event.detail["environment"] == "production" and event.detail["window"] == window.pk


@pytest.mark.parametrize("who", ["bob", "charlie", "dave"])
def test_only_owners_manage_an_environments_windows(cast, production, who):
    valid = form(start_cron="0 18 * * 5", end_cron="0 8 * * 1")
    assert valid.is_valid()
    with pytest.raises(PermissionDenied):
        freezing.create(valid, production, cast[who])
    window = one_off(production)
    with pytest.raises(PermissionDenied):
        freezing.delete(window, cast[who])
    assert FreezeWindow.objects.count() == 1 and not AuditEvent.objects.filter(action__startswith="freeze.").exists()


def test_only_staff_manage_global_windows(cast, staff):
    valid = form(starts_at="2026-12-24 00:00", ends_at="2026-12-27 00:00")
    assert valid.is_valid()
    with pytest.raises(PermissionDenied):
        freezing.create(valid, None, cast["alice"])
    window = freezing.create(valid, None, staff)
    assert window.environment is None
    event = AuditEvent.objects.get(action="freeze.created")
    assert event.function is None and event.detail["environment"] == "(every environment)"


def test_an_edit_that_ends_a_freeze_is_audited_as_ending_it(cast, production):
    window = one_off(production)
    edit = form(instance=window, starts_at="2020-01-01 00:00", ends_at="2020-01-02 00:00")
    assert edit.is_valid()
    freezing.update(edit, cast["alice"])
    window.refresh_from_db()
    assert window.ends_at.year == 2020
    event = AuditEvent.objects.get(action="freeze.edited")
    assert event.detail["ended"] is True and "UTC" in event.detail["before"]


def test_a_delete_is_audited(cast, production):
    window = one_off(production, reason="month end")
    freezing.delete(window, cast["alice"])
    assert not FreezeWindow.objects.exists()
    event = AuditEvent.objects.get(action="freeze.deleted")
    assert event.detail["reason"] == "month end" and event.detail["ended"] is True


# --- Override ---------------------------------------------------------------------------------


def test_an_owners_override_queues_the_deployment_audits_and_notifies(cast, function, production, sent,
                                                                      django_capture_on_commit_callbacks):
    function.feedback_settings.notify_members.add(cast["alice"])
    one_off(production, reason="launch week")
    deployment = frozen(function)
    with django_capture_on_commit_callbacks(execute=True):
        after = freezing.override(deployment, cast["alice"], "  hotfix for   the outage ")
    assert after is not None and after.status == Status.QUEUED  # gates.reconsider released it
    deployment.refresh_from_db()
    assert (deployment.status, deployment.override_reason, deployment.overridden_by) == (
        Status.QUEUED, "hotfix for the outage", cast["alice"])
    event = AuditEvent.objects.get(action="freeze.overridden")
    assert event.detail["deployment"] == deployment.pk and "launch week" in event.detail["windows"][0]
    notices = [c.kwargs["args"] for c in sent.call_args_list if c.args[0] == NOTIFY_TASK]
    assert notices == [[function.pk, "freeze_override", deployment.pk,
                        {"by": "alice", "reason": "hotfix for the outage"}]]


def test_an_override_leaves_an_approval_gate_in_place(cast, function, production):
    production.required_approvals = 1
    production.save()
    one_off(production)
    deployment = frozen(function)
    after = freezing.override(deployment, cast["alice"], "hotfix")
    assert after.status == Status.AWAITING_APPROVAL
    assert Deployment.objects.get(pk=deployment.pk).status == Status.AWAITING_APPROVAL


@pytest.mark.parametrize("who", ["bob", "charlie"])
def test_only_owners_override(cast, function, production, who):
    one_off(production)
    deployment = frozen(function)
    with pytest.raises(PermissionDenied):
        freezing.override(deployment, cast[who], "hotfix")
    deployment.refresh_from_db()
    assert deployment.status == Status.FROZEN and deployment.override_reason == ""


def test_only_staff_override_a_global_freeze(cast, function, staff):
    one_off(None, reason="year end")
    deployment = frozen(function)
    assert not freezing.may_override(cast["alice"], deployment)
    with pytest.raises(PermissionDenied, match="staff"):
        freezing.override(deployment, cast["alice"], "hotfix")
    assert Deployment.objects.get(pk=deployment.pk).status == Status.FROZEN
    assert freezing.override(deployment, staff, "hotfix").status == Status.QUEUED


def test_an_override_needs_a_reason(cast, function, production):
    one_off(production)
    deployment = frozen(function)
    for reason in ("", "   ", "x" * 501):
        with pytest.raises(RequestRefused) as refused:
            freezing.override(deployment, cast["alice"], reason)
        assert refused.value.code == "invalid" and refused.value.status == 400
    assert Deployment.objects.get(pk=deployment.pk).status == Status.FROZEN


def test_only_a_frozen_deployment_is_overridden_and_only_once(cast, function, production):
    one_off(production)
    queued = requesting.request_deploy(function, trigger="api", commit=SHA)
    with pytest.raises(RequestRefused) as refused:
        freezing.override(queued, cast["alice"], "hotfix")
    assert refused.value.code == "not-frozen" and refused.value.status == 409
    production.required_approvals = 1
    production.save()
    deployment = frozen(function)
    freezing.override(deployment, cast["alice"], "first")
    Deployment.objects.filter(pk=deployment.pk).update(status=Status.FROZEN)  # as if held again
    with pytest.raises(RequestRefused):
        freezing.override(deployment, cast["alice"], "second")
    assert Deployment.objects.get(pk=deployment.pk).override_reason == "first"
    assert AuditEvent.objects.filter(action="freeze.overridden").count() == 1


def test_the_override_notification_names_who_why_and_the_deployment(cast, function, production):
    from portal.feedback import delivery

    deployment = frozen(function)
    text, payload = delivery.compose(function, "freeze_override", deployment, {"by": "alice", "reason": "hotfix"},
                                     secrets=[])
    assert text == f"hello (production): alice let deploy #{deployment.pk} through the freeze: hotfix"
    assert payload["event"] == "freeze_override" and payload["deployment"]["id"] == deployment.pk


# --- Deleting or shortening a freeze releases what it held ------------------------------------


def test_deleting_a_freeze_runs_the_newest_held_request_and_supersedes_the_older(cast, function, production, sent):
    window = one_off(production)
    older, newer = frozen(function), frozen(function)
    freezing.delete(window, cast["alice"])
    older.refresh_from_db()
    newer.refresh_from_db()
    assert (older.status, older.superseded_by_id, newer.status) == (Status.SUPERSEDED, newer.pk, Status.QUEUED)


def test_an_edit_that_ends_a_freeze_releases_and_one_that_keeps_it_does_not(cast, function, production, sent):
    window = one_off(production)
    deployment = frozen(function)
    still = form(instance=window, reason="still on", starts_at=window.starts_at, ends_at=window.ends_at + timedelta(
        hours=1))
    assert still.is_valid()
    freezing.update(still, cast["alice"])
    assert Deployment.objects.get(pk=deployment.pk).status == Status.FROZEN
    ended = form(instance=window, starts_at="2020-01-01 00:00", ends_at="2020-01-02 00:00")
    assert ended.is_valid()
    freezing.update(ended, cast["alice"])
    assert Deployment.objects.get(pk=deployment.pk).status == Status.QUEUED


def test_deleting_one_of_two_freezes_releases_nothing(cast, function, production, sent):
    window = one_off(production)
    one_off(None, reason="year end")
    deployment = frozen(function)
    freezing.delete(window, cast["alice"])
    assert Deployment.objects.get(pk=deployment.pk).status == Status.FROZEN
