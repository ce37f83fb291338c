"""Sign in, register a function, deploy it and watch it go live without
reloading, roll back to the earlier release, see the banner, resume —
in a real browser, against the real local stack."""

import pytest
from playwright.sync_api import expect

from portal.models import Deployment, Function
from tests.integration.conftest import remove_from_plane

pytestmark = pytest.mark.integration


@pytest.fixture
def erin(transactional_db, django_user_model):
    return django_user_model.objects.create_user("erin", "erin@example.org", "erin-password-1")


@pytest.fixture
def cleanup_plane(unique):
    names = {"lambda": f"slipway-ui-{unique}", "ecr": f"slipway/ui-{unique}"}
    yield names
    remove_from_plane(names["lambda"], names["ecr"])


def deploy_from_the_page(page, artifacts, shot: str) -> None:
    page.get_by_role("button", name="Review deploy…").click()
    page.get_by_role("button", name="Deploy", exact=True).click()
    expect(page.locator("#steps")).to_be_visible()
    url = page.url
    expect(page.locator("#is-live")).to_be_visible(timeout=180_000)  # htmx polls the fragment in
    assert page.url == url, "the page was reloaded or left"
    page.screenshot(path=str(artifacts / shot), full_page=True)


def test_a_user_registers_deploys_rolls_back_and_resumes(page, erin, worker, repo, unique, cleanup_plane, artifacts):
    repo.release("one")
    page.goto("/functions/")
    page.get_by_label("Username").fill("erin")
    page.get_by_label("Password").fill("erin-password-1")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Register a function").click()
    page.get_by_label("Name", exact=True).fill(f"ui-{unique}")
    page.get_by_label("Repository url").fill(str(repo.path))
    page.get_by_label("Architecture").select_option("x86_64")
    page.get_by_label("Ecr repository").fill(cleanup_plane["ecr"])
    page.get_by_label("Lambda name").fill(cleanup_plane["lambda"])
    page.get_by_label("Memory mb").fill("256")
    page.get_by_label("Execution role arn").fill("arn:aws:iam::000000000000:role/slipway-test")
    page.get_by_label("Smoke event").fill('{"smoke": true}')
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("heading", name=f"ui-{unique}")).to_be_visible()
    page.screenshot(path=str(artifacts / "1-registered.png"), full_page=True)

    deploy_from_the_page(page, artifacts, "2-first-deploy-live.png")
    repo.release("two")
    page.get_by_role("link", name=f"ui-{unique}").first.click()
    deploy_from_the_page(page, artifacts, "3-second-deploy-live.png")

    page.get_by_role("link", name=f"ui-{unique}").first.click()
    page.get_by_role("link", name="Roll back").click()
    expect(page.locator("#commits")).to_contain_text("release two")  # what goes away
    page.get_by_role("button", name="Roll back").click()
    expect(page.locator("#is-live")).to_be_visible(timeout=60_000)
    page.get_by_role("link", name=f"ui-{unique}").first.click()
    expect(page.locator("#paused-banner")).to_contain_text("rolled back to version 1")
    page.screenshot(path=str(artifacts / "4-rolled-back.png"), full_page=True)
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#paused-banner")).to_have_count(0)

    function = Function.objects.get(name=f"ui-{unique}")
    kinds = list(Deployment.objects.filter(function=function, status="succeeded").order_by("pk")
                 .values_list("kind", "version"))
    assert kinds == [("deploy", "1"), ("deploy", "2"), ("rollback", "1")]
    assert function.first_environment.paused_reason == ""
