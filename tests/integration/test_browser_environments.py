"""Environments in a real browser (Debian chromium), against the real local stack: promote
from the environments view and watch production go live, with the same digest as
staging, without a reload. axe-core audits every page and every htmx swap on the way
(the `page` fixture)."""

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from portal.models import Deployment, Membership
from tests.browser_fixtures import sign_in
from tests.conftest import released, staged
from tests.integration.conftest import remove_from_plane, wait_done

pytestmark = pytest.mark.integration
Status = Deployment.Status


@pytest.fixture
def owner(transactional_db, django_user_model):
    return django_user_model.objects.create_user("olive", "olive@example.org", "olive-password-1")


@pytest.fixture
def two_environments(fixture_function, owner):
    """fixture_function as staging (a second Lambda, removed afterwards) then production."""
    Membership.objects.create(function=fixture_function, user=owner, role="owner")
    staging, production = staged(fixture_function)
    type(staging).objects.filter(pk=staging.pk).update(  # the first deploy creates its Lambda
        execution_role_arn=production.execution_role_arn, memory_mb=production.memory_mb,
        timeout_s=production.timeout_s)
    staging.refresh_from_db()
    yield fixture_function, staging, production
    remove_from_plane(staging.lambda_name, "")


def test_promote_from_the_environments_view_and_see_production_go_live_without_a_reload(
        page, worker, repo, two_environments, artifacts):
    from deploy import lambdas
    from portal import deployments

    function, staging, production = two_environments
    repo.release("one")
    pushed = deployments.request_deploy(function, trigger=Deployment.Trigger.CLI)
    assert wait_done(pushed).status == Status.SUCCEEDED, pushed.error_message
    assert pushed.environment == staging

    sign_in(page, "olive", "olive-password-1")
    page.goto(f"/functions/{function.name}/")
    staging_column, production_column = page.locator("#environment-staging"), page.locator("#environment-production")
    expect(staging_column.locator(".version")).to_have_text(pushed.version)
    expect(production_column.locator(".nothing-live")).to_be_visible()
    expect(production_column).to_contain_text(pushed.commit_sha[:8])  # what staging has and production lacks
    page.screenshot(path=str(artifacts / "environments-1-staging-live.png"), full_page=True)

    production_column.get_by_role("button", name="Promote to production…").click()
    digest = pushed.build.digest
    expect(page.locator("#promote-digest")).to_have_text(digest)  # exactly what ships
    expect(page.locator("#promote-commit")).to_have_text(pushed.commit_sha)
    page.get_by_role("button", name="Promote to production", exact=True).click()
    page.wait_for_url(f"**/functions/{function.name}/#environments")
    promotion = Deployment.objects.get(function=function, kind=Deployment.Kind.PROMOTION)
    assert (promotion.environment, promotion.digest) == (production, digest)

    url = page.url
    page.evaluate("() => { window.slipwayStillHere = true }")  # gone if the page is loaded again
    promotion = wait_done(promotion)
    assert promotion.status == Status.SUCCEEDED, f"{promotion.error_code}: {promotion.error_message}"
    # htmx polls the columns every 2 s while something runs: the next swap shows it live.
    expect(production_column.locator(".same-digest")).to_have_text("same digest as staging", timeout=30_000)
    expect(production_column.locator(".version")).to_have_text(promotion.version)
    assert page.url == url and page.evaluate("() => window.slipwayStillHere === true"), "the page was reloaded"
    page.screenshot(path=str(artifacts / "environments-2-production-live.png"), full_page=True)

    steps = set(promotion.steps.values_list("name", flat=True))
    assert steps and not steps & {"source", "build", "push"}, steps  # no build on the promotion's timeline
    shipped = {lambdas.version_image(env.lambda_name, deployments.live_deployment(env).version).rsplit("@", 1)[-1]
               for env in (staging, production)}
    assert shipped == {digest}  # byte for byte the digest that passed staging, as Lambda reports it


@pytest.mark.django_db(transaction=True)
def test_the_environment_pages_in_every_state_pass_axe(page, cast, function):
    """Columns with a live release, a soak, a queued deploy and the badge; the promote
    confirmation; a promotion's page: no critical or serious axe finding (the fixture
    fails the test otherwise). Rows only: no worker, no plane."""
    staging, production = staged(function, promotion="automatic", soak_seconds=600)
    now = timezone.now()
    one = released(function, "1", "a" * 40, environment=staging, finished_at=now - timedelta(hours=2))
    two = released(function, "2", "b" * 40, environment=staging, finished_at=now - timedelta(hours=1))
    shipped = Deployment.objects.create(function=function, environment=production, kind="promotion", trigger="ui",
                                        status=Status.SUCCEEDED, version="5", build=one.build,
                                        digest=one.build.digest, upstream=one, commit_sha=one.commit_sha,
                                        finished_at=now - timedelta(minutes=90))
    soak = Deployment.objects.create(function=function, environment=production, kind="promotion",
                                     trigger="promotion", status=Status.SOAKING, build=two.build,
                                     digest=two.build.digest, upstream=two, commit_sha=two.commit_sha,
                                     promote_at=now + timedelta(minutes=10))
    Deployment.objects.create(function=function, environment=staging, trigger="ui", ref="main")
    sign_in(page, "alice", "password-alice")

    page.goto("/functions/hello/")
    expect(page.locator("#environment-production .soaking")).to_contain_text("promotes at")
    expect(page.locator("#environments")).to_have_attribute("data-poll", "2")
    page.goto("/functions/hello/environments/production/promote/")
    expect(page.locator("#promote-digest")).to_have_text(two.build.digest)
    for path in (f"/deployments/{shipped.pk}/", f"/deployments/{soak.pk}/", f"/deployments/{one.pk}/"):
        assert page.goto(path).status == 200
    expect(page.locator("#promotions")).to_contain_text(f"#{shipped.pk}")

    Deployment.objects.filter(environment=staging, status=Status.QUEUED).update(status=Status.CANCELLED)
    soak.refresh_from_db()
    Deployment.objects.filter(pk=soak.pk).update(status=Status.CANCELLED)
    Deployment.objects.create(function=function, environment=production, kind="promotion", trigger="ui",
                              status=Status.SUCCEEDED, version="6", build=two.build, digest=two.build.digest,
                              upstream=two, commit_sha=two.commit_sha, finished_at=now)
    page.goto("/functions/hello/")
    expect(page.locator("#environment-production .same-digest")).to_have_text("same digest as staging")
    expect(page.locator("#environments")).to_have_attribute("data-poll", "15")
    page.goto("/functions/hello/console/?environment=production")
    expect(page.locator("#console-environment")).to_contain_text("production")
