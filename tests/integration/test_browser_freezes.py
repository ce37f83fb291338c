"""The freeze pages in a real browser: an owner adds a window holding production now with
JavaScript off (plain forms), sees it on the function page next to the Rollback button, and
overrides a frozen deployment from its page with the `page` fixture, whose every document
axe-core audits."""

from datetime import timedelta

import pytest
from django.utils import timezone

from portal.models import AuditEvent, Deployment, FreezeWindow
from tests.browser_fixtures import sign_in
from tests.conftest import released

pytestmark = pytest.mark.integration


@pytest.mark.django_db(transaction=True)
def test_an_owner_adds_a_freeze_with_javascript_off(browser, live_server, cast, function):
    released(function, "1", "a" * 40)
    released(function, "2", "b" * 40)
    now = timezone.now()
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    try:
        page = context.new_page()
        sign_in(page, "alice", "password-alice")
        page.goto("/functions/hello/environments/production/freezes/")
        page.get_by_label("Reason").fill("launch week")
        page.get_by_label("Starts at").fill((now - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M"))
        page.get_by_label("Ends at").fill((now + timedelta(hours=2)).strftime("%Y-%m-%d %H:%M"))
        page.get_by_role("button", name="Add the window").click()
        assert "Freeze window added: launch week" in page.content()
        assert "Frozen now" in page.locator("#freeze-shown").inner_text()
        page.goto("/functions/hello/")
        column = page.locator("#environment-production")
        assert "Frozen: launch week" in column.inner_text()
        assert "rollbacks pass the freeze" in column.inner_text()
    finally:
        context.close()
    window = FreezeWindow.objects.get()
    assert window.environment == function.first_environment and window.created_by == cast["alice"]


@pytest.mark.django_db(transaction=True)
def test_an_owner_overrides_a_frozen_deployment_and_axe_finds_nothing_serious(page, cast, function, sent):
    now = timezone.now()
    FreezeWindow.objects.create(environment=function.first_environment, reason="launch week",
                                starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=1))
    deployment = Deployment.objects.create(function=function, environment=function.first_environment,
                                           trigger="api", ref="main", status=Deployment.Status.FROZEN)
    sign_in(page, "alice", "password-alice")
    page.goto("/functions/hello/environments/production/freezes/")
    page.goto(f"/deployments/{deployment.pk}/")
    assert "launch week" in page.locator("#freeze-override").inner_text()
    page.get_by_label("Reason to override the freeze").fill("the outage fix")
    page.get_by_role("button", name="Override the freeze").click()
    page.wait_for_url(f"**/deployments/{deployment.pk}/")
    assert "Freeze overridden" in page.content()
    deployment.refresh_from_db()
    assert (deployment.status, deployment.override_reason) == (Deployment.Status.QUEUED, "the outage fix")
    assert AuditEvent.objects.filter(action="freeze.overridden", actor=cast["alice"]).count() == 1
