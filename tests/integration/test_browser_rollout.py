"""Rollouts in a real browser (axe-core audits every document the `page` fixture opens): an
owner picks a preset on the environment's settings page; a deployer pauses a rollout from the
environment's column; the deployment page draws the weight over time. The rollouts are rows
made in the database: no worker, no AWS."""

import pytest

from portal.models import Deployment, Environment, Rollout
from tests.browser_fixtures import sign_in
from tests.rollout_fixtures import rolling_out

pytestmark = pytest.mark.integration
ROLE = "arn:aws:iam::123456789012:role/slipway-lambda"


@pytest.mark.django_db(transaction=True)
def test_a_preset_a_pause_and_the_weight_chart(page, cast, function, settings):
    settings.SLIPWAY_ALLOWED_EXECUTION_ROLES = ["arn:aws:iam::123456789012:role/slipway-*"]
    production = function.first_environment
    settings.SLIPWAY_ALLOWED_LAMBDA_PREFIXES = [production.lambda_name]
    Environment.objects.filter(pk=production.pk).update(execution_role_arn=ROLE)
    sign_in(page, "alice", "password-alice")
    page.goto("/functions/hello/environments/production/edit/")
    page.get_by_label("Rollout preset").select_option("Linear10PercentEvery2Minutes")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/functions/hello/")
    production.refresh_from_db()
    assert (production.rollout_strategy, production.rollout_percent, production.rollout_minutes) == ("linear", 10, 2)

    running = rolling_out(function, weights=(0.1, 0.2), strategy="linear", percent=10, minutes=2)
    page.reload()
    column = page.locator('[data-rollout="production"]')
    assert "takes 20 %" in " ".join(column.inner_text().split())
    column.get_by_role("button", name="Pause").click()
    page.wait_for_url("**/functions/hello/#environments")
    page.locator('[data-rollout="production"][data-state="paused"]').wait_for()
    assert Rollout.objects.get(deployment=running).paused_at is not None

    done = rolling_out(function, status=Deployment.Status.SUCCEEDED, weights=(0.1, 0.2, 1.0), strategy="linear")
    page.goto(f"/deployments/{done.pk}/")
    chart = page.get_by_role("img", name="Rollout of version 2: weight over time")
    assert chart.is_visible()
    assert "0% → 10% → 20% → 100%" in chart.locator("desc").text_content()
    assert page.locator("#steps tr.rollout-event").count() == 4  # sub-steps of shift: start and three weights
