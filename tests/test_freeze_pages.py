"""The freeze pages: an environment's windows (owners), the global ones (staff), the
Override form of a frozen deployment's page, and the function page's columns."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from portal.deployments import requesting
from portal.models import AuditEvent, Deployment, Environment, FreezeWindow
from tests.conftest import released

Status = Deployment.Status
LIST = "/functions/hello/environments/production/freezes/"


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user("erin", "erin@example.org", "password-erin", is_staff=True)


def holding_now(environment, reason="launch week") -> FreezeWindow:
    now = timezone.now()
    return FreezeWindow.objects.create(environment=environment, reason=reason, starts_at=now - timedelta(hours=1),
                                       ends_at=now + timedelta(hours=1))


def frozen(function) -> Deployment:
    deployment = requesting.request_deploy(function, trigger="api", commit="a" * 40)
    Deployment.objects.filter(pk=deployment.pk).update(status=Status.FROZEN, gated_since=timezone.now())
    return Deployment.objects.get(pk=deployment.pk)


def test_an_owner_adds_and_deletes_a_window(client, cast, function):
    client.force_login(cast["alice"])
    response = client.post(LIST, {"reason": "weekend", "start_cron": "0 17 * * 5", "end_cron": "0 8 * * 1",
                                  "timezone": "Europe/Berlin"}, follow=True)
    window = FreezeWindow.objects.get()
    assert window.environment == function.first_environment and b"Freeze window added" in response.content
    assert b"0 17 * * 5" in response.content
    response = client.post(f"{LIST}{window.pk}/delete/", follow=True)
    assert response.status_code == 200 and not FreezeWindow.objects.exists()


def test_an_invalid_window_is_shown_with_its_errors(client, cast, function):
    client.force_login(cast["alice"])
    response = client.post(LIST, {"reason": "weekend", "start_cron": "0 25 * * *", "end_cron": "0 8 * * 1"})
    assert response.status_code == 400 and b"not a valid cron expression" in response.content
    assert not FreezeWindow.objects.exists()


@pytest.mark.parametrize("who, status", [("bob", 403), ("charlie", 403), ("dave", 404)])
def test_only_owners_reach_an_environments_windows(client, cast, function, who, status):
    window = holding_now(function.first_environment)
    client.force_login(cast[who])
    assert client.get(LIST).status_code == status
    assert client.post(LIST, {"reason": "x", "start_cron": "0 1 * * *", "end_cron": "0 2 * * *"}).status_code == status
    assert client.post(f"{LIST}{window.pk}/delete/").status_code == status
    assert list(FreezeWindow.objects.all()) == [window]


def test_global_windows_are_for_staff(client, cast, staff, function):
    client.force_login(cast["alice"])
    assert client.get("/freezes/").status_code == 403
    assert client.post("/freezes/", {"reason": "year end", "starts_at": "2026-12-20 00:00",
                                      "ends_at": "2027-01-04 00:00"}).status_code == 403
    client.force_login(staff)
    response = client.post("/freezes/", {"reason": "year end", "starts_at": "2026-12-20 00:00",
                                         "ends_at": "2027-01-04 00:00"}, follow=True)
    assert b"Global freeze window added" in response.content
    assert FreezeWindow.objects.get().environment is None


def test_an_owner_overrides_a_frozen_deployment_from_its_page(client, cast, function, sent):
    holding_now(function.first_environment)
    deployment = frozen(function)
    client.force_login(cast["alice"])
    page = client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert "launch week" in page and "Override the freeze" in page and "{# freeze override #}" not in page
    response = client.post(f"/deployments/{deployment.pk}/override/", {"reason": "the outage fix"}, follow=True)
    assert b"Freeze overridden" in response.content
    deployment.refresh_from_db()
    assert (deployment.status, deployment.override_reason) == (Status.QUEUED, "the outage fix")
    assert AuditEvent.objects.filter(action="freeze.overridden").count() == 1


def test_an_override_without_a_reason_is_refused_on_the_page(client, cast, function):
    holding_now(function.first_environment)
    deployment = frozen(function)
    client.force_login(cast["alice"])
    response = client.post(f"/deployments/{deployment.pk}/override/", {"reason": " "}, follow=True)
    assert b"Not overridden" in response.content
    assert Deployment.objects.get(pk=deployment.pk).status == Status.FROZEN


def test_a_deployer_sees_no_override_form(client, cast, function):
    holding_now(function.first_environment)
    deployment = frozen(function)
    client.force_login(cast["bob"])
    page = client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert "launch week" in page and "Override the freeze" not in page
    assert client.post(f"/deployments/{deployment.pk}/override/", {"reason": "x"}).status_code == 403


def test_the_columns_show_the_freeze_and_that_rollbacks_pass_it(client, cast, function):
    environment = function.first_environment
    released(function, "1", "a" * 40)
    released(function, "2", "b" * 40)
    client.force_login(cast["bob"])
    page = client.get("/functions/hello/").content.decode()
    assert "Roll back production" in page and "rollbacks pass the freeze" not in page
    FreezeWindow.objects.create(environment=environment, reason="month end", starts_at=timezone.now() + timedelta(
        days=2), ends_at=timezone.now() + timedelta(days=3))
    assert "Next freeze: month end" in client.get("/functions/hello/").content.decode()
    holding_now(None, reason="year end")
    page = client.get("/functions/hello/").content.decode()
    assert "Frozen: year end" in page and "rollbacks pass the freeze" in page


def test_a_protected_environments_rollback_says_it_needs_no_approval(client, cast, function):
    released(function, "1", "a" * 40)
    released(function, "2", "b" * 40)
    client.force_login(cast["bob"])
    assert "rollbacks need no approval" not in client.get("/functions/hello/").content.decode()
    Environment.objects.filter(pk=function.first_environment.pk).update(required_approvals=1)
    page = client.get("/functions/hello/").content.decode()
    assert "Roll back production" in page and "rollbacks need no approval" in page
    holding_now(None, reason="year end")
    assert "rollbacks pass the freeze and need no approval" in client.get("/functions/hello/").content.decode()
