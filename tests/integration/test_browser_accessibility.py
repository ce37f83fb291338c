"""Every portal page an owner reaches passes axe-core with no critical or serious violation (the
`page` fixture audits each one and fails the test otherwise), including those the journeys in
test_browser_portal.py and test_browser_console.py do not visit."""

import pytest

from tests.conftest import released

pytestmark = pytest.mark.integration


@pytest.mark.django_db(transaction=True)
def test_an_owner_tours_every_page_and_axe_finds_nothing_serious(page, cast, function):
    deployment = released(function, "1", "a" * 40)
    # A step log long enough to scroll: a scrolling region must be reachable from the keyboard.
    deployment.steps.create(name="build", position=0, status="succeeded", output="#1 layer\n" * 200)
    page.goto("/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("password-alice")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/functions/")
    pages = ["/functions/", "/functions/new/", "/functions/hello/", "/functions/hello/edit/",
             "/functions/hello/deploy/", f"/functions/hello/rollback/{deployment.pk}/", "/functions/hello/deliveries/",
             "/functions/hello/feedback/", "/functions/hello/console/", f"/deployments/{deployment.pk}/", "/audit/",
             "/account/tokens/"]
    answered = {path: page.goto(path).status for path in pages}
    assert answered == {path: 200 for path in pages}
    # 503 while a part is down (no worker runs beside the tests): the page is audited either way.
    assert page.goto("/health/").status in (200, 503)
