"""Approvals in a real browser (Debian chromium), against the real local stack: a
promotion into a protected production waits for approval; its requester's page says
they cannot approve it; a second user approves from the deployment page, and both
pages show it leave awaiting_approval and go live without a reload. axe-core audits
every page and htmx swap of the approver's browser (the `page` fixture)."""

import time

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from portal.models import Approval, AuditEvent, Deployment, Environment, Membership
from tests.browser_fixtures import sign_in
from tests.conftest import staged
from tests.integration.conftest import remove_from_plane, wait_done

pytestmark = pytest.mark.integration
Status = Deployment.Status


@pytest.fixture
def protected(fixture_function, django_user_model):
    """fixture_function as staging then production, which needs one approval; olive owns it
    (and requests), april approves."""
    olive = django_user_model.objects.create_user("olive", "olive@example.org", "olive-password-1")
    april = django_user_model.objects.create_user("april", "april@example.org", "april-password-1")
    Membership.objects.create(function=fixture_function, user=olive, role="owner")
    Membership.objects.create(function=fixture_function, user=april, role="approver")
    staging, production = staged(fixture_function)
    Environment.objects.filter(pk=staging.pk).update(  # the first deploy creates its Lambda
        execution_role_arn=production.execution_role_arn, memory_mb=production.memory_mb,
        timeout_s=production.timeout_s)
    Environment.objects.filter(pk=production.pk).update(required_approvals=1)
    staging.refresh_from_db()
    production.refresh_from_db()
    yield fixture_function, staging, production, olive
    remove_from_plane(staging.lambda_name, "")


def test_a_second_user_approves_from_the_page_and_sees_it_go_live_without_a_reload(
        page, browser, live_server, worker, repo, protected, artifacts):
    from portal import deployments

    function, staging, production, olive = protected
    repo.release("one")
    pushed = deployments.request_deploy(function, trigger=Deployment.Trigger.CLI)
    assert wait_done(pushed).status == Status.SUCCEEDED, pushed.error_message
    assert pushed.environment == staging
    # The promotion as request_promotion pins it, held as the gate holds it (its hold is gate-engine's).
    held = Deployment.objects.create(
        function=function, environment=production, kind=Deployment.Kind.PROMOTION, trigger=Deployment.Trigger.UI,
        requested_by=olive, ref=pushed.commit_sha, commit_sha=pushed.commit_sha, build=pushed.build,
        digest=pushed.build.digest, upstream=pushed, status=Status.AWAITING_APPROVAL, approvals_required=1,
        gated_since=timezone.now())
    deployments.status_changed.send(Deployment, deployment=held)  # as the gate announces it
    assert AuditEvent.objects.filter(action="deployment.approval_requested", detail__deployment=held.pk).exists()

    # The requester's browser: it says why she cannot approve, and keeps polling.
    requester = browser.new_context(base_url=live_server.url)
    mine = requester.new_page()
    sign_in(mine, "olive", "olive-password-1")
    mine.goto(f"/deployments/{held.pk}/")
    expect(mine.locator("#live-deployment .badge")).to_have_attribute("data-status", "awaiting_approval")
    expect(mine.locator("#why-not")).to_contain_text("you requested this deployment")
    expect(mine.locator("#approve-form")).to_have_count(0)
    mine.evaluate("() => { window.slipwayStillHere = true }")  # gone if the page is loaded again

    # Neither the requester nor a token may approve: the row stays held.
    from portal.core.errors import RequestRefused
    from portal.deployments import approving
    from portal.models import ApiToken

    with pytest.raises(RequestRefused) as own:
        approving.approve(held, olive)
    assert own.value.code == "own-request"
    _, raw = ApiToken.issue(Membership.objects.get(user__username="april").user, "ci")
    answer = mine.request.post(f"/deployments/{held.pk}/approve/", headers={"Authorization": f"Bearer {raw}"},
                               max_redirects=0)
    assert answer.status == 403
    held.refresh_from_db()
    assert held.status == Status.AWAITING_APPROVAL and not held.approvals.exists()

    # The approver's browser.
    sign_in(page, "april", "april-password-1")
    page.goto(f"/deployments/{held.pk}/")
    expect(page.locator("#awaiting-approval")).to_contain_text("0 of 1")
    expect(page.locator("#approvers")).to_have_text("april")
    page.screenshot(path=str(artifacts / "approvals-1-awaiting.png"), full_page=True)
    page.get_by_label("Comment").fill("staging looks right")
    started = time.monotonic()
    with page.expect_navigation():  # the form posts, then lands on the page again
        page.get_by_role("button", name="Approve").click()
    page.evaluate("() => { window.slipwayStillHere = true }")
    expect(page.locator("#decisions tr[data-user='april']")).to_contain_text("staging looks right")

    # Both pages see it leave awaiting_approval, then go live, by htmx's poll alone.
    for seen in (page, mine):
        expect(seen.locator("#live-deployment .badge")).not_to_have_attribute("data-status", "awaiting_approval",
                                                                              timeout=30_000)
    left = time.monotonic() - started
    done = wait_done(held)
    assert done.status == Status.SUCCEEDED, f"{done.error_code}: {done.error_message}"
    for seen in (page, mine):
        expect(seen.locator("#is-live")).to_contain_text("live", timeout=30_000)
        assert seen.evaluate("() => window.slipwayStillHere === true"), "the page was reloaded"
    live = time.monotonic() - started
    page.screenshot(path=str(artifacts / "approvals-2-live.png"), full_page=True)
    requester.close()

    approval = Approval.objects.get(deployment=held)
    assert (approval.user.username, approval.digest, approval.decision) == ("april", pushed.build.digest, "approved")
    assert deployments.live_deployment(production).pk == held.pk
    print(f"\napproval to not awaiting: {left:.1f} s; approval to live: {live:.1f} s")
