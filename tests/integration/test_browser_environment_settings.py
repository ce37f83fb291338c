"""The environment pages in a real browser: an owner adds staging in front of production
with JavaScript off (plain forms), then edits and deletes it with the `page` fixture,
whose every document axe-core audits."""

import pytest

from portal.models import AuditEvent, Environment
from tests.browser_fixtures import sign_in
from tests.conftest import released, staged

pytestmark = pytest.mark.integration
ROLE = "arn:aws:iam::123456789012:role/slipway-lambda"


@pytest.fixture
def allowed(settings):
    settings.SLIPWAY_ALLOWED_LAMBDA_PREFIXES = ["team-"]
    settings.SLIPWAY_ALLOWED_EXECUTION_ROLES = ["arn:aws:iam::123456789012:role/slipway-*"]


def _names(function):
    return list(function.environments.order_by("position").values_list("name", flat=True))


@pytest.mark.django_db(transaction=True)
def test_an_owner_adds_staging_with_javascript_off(browser, live_server, cast, function, allowed):
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    try:
        page = context.new_page()
        sign_in(page, "alice", "password-alice")
        page.goto("/functions/hello/environments/new/")
        page.get_by_label("Name", exact=True).fill("staging")
        page.get_by_label("Position").fill("0")
        page.get_by_label("Lambda name").fill("team-hello-stg")
        page.get_by_label("Execution role arn").fill(ROLE)
        page.get_by_label("Secret environment", exact=True).fill("TOKEN=s3cret")
        page.get_by_role("button", name="Add").click()
        page.wait_for_url("**/functions/hello/")
        assert "Environment staging added at position 0" in page.content()
    finally:
        context.close()
    assert _names(function) == ["staging", "production"]
    assert Environment.objects.get(name="staging").variables == {"TOKEN": "s3cret"}


@pytest.mark.django_db(transaction=True)
def test_an_owner_edits_and_deletes_an_environment_and_axe_finds_nothing_serious(page, cast, function, allowed):
    staging, production = staged(function)
    released(function, "1", "a" * 40, environment=staging)
    Environment.objects.filter(pk=production.pk).update(execution_role_arn=ROLE)
    sign_in(page, "alice", "password-alice")
    page.goto("/functions/hello/environments/production/edit/")
    assert page.get_by_label("Name", exact=True).is_disabled()
    page.get_by_label("Memory mb").fill("2048")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/functions/hello/")
    assert Environment.objects.get(pk=production.pk).memory_mb == 2048

    refused = page.goto("/functions/hello/environments/staging/delete/")
    assert refused.status == 200 and "Version 1 is live in staging" in page.content()
    page.get_by_role("button", name="Delete staging").click()
    assert "version 1 is live in staging" in page.locator("#error").inner_text()
    assert _names(function) == ["staging", "production"]

    page.goto("/functions/hello/environments/production/delete/")
    page.get_by_role("button", name="Delete production").click()
    page.wait_for_url("**/functions/hello/")
    assert _names(function) == ["staging"]
    assert AuditEvent.objects.filter(action="environment.deleted").count() == 1
