"""A merge request's preview opened from the Previews list in the console, in a real
browser, against the real detector on the local plane: the console opens on the
preview's alias (mr-7 on the preview Lambda) compared with production's live, and
shows the two answers side by side with the moved box marked.

The preview's rows are made in the database and its Lambda on the plane from the
session's detector images (no build): the pipeline that makes them is tested on its own."""

import contextlib

import pytest
from playwright.sync_api import expect

from portal.models import ConsoleRun, Membership, Preview
from tests.browser_fixtures import sign_in
from tests.detector_fixtures import sample_path
from tests.previews import previews_on

pytestmark = pytest.mark.integration


@pytest.fixture
def preview(detector_function, detector_plane, django_user_model):
    """!7's preview: the detector's shifted image, published on the preview Lambda behind mr-7."""
    from deploy import lambdas

    user = django_user_model.objects.create_user("petra", "petra@example.org", "petra-password-1")
    Membership.objects.create(function=detector_function, user=user, role=Membership.Role.DEPLOYER)
    environment = previews_on(detector_function)
    shifted = detector_plane.versions["shifted"]
    config = lambdas.Settings(name=environment.lambda_name, architecture="x86_64", memory_mb=1024, timeout_s=30,
                              environment={}, role_arn=environment.execution_role_arn)
    try:
        lambdas.create(config, shifted["uri"], f"{shifted['commit'][:12]} {shifted['digest']}")
        after = lambdas.wait_updated(environment.lambda_name)
        version = lambdas.publish(environment.lambda_name, f"{shifted['commit'][:12]} {shifted['digest']}",
                                  after=after, image_uri=shifted["uri"])
        lambdas.point_alias(environment.lambda_name, "mr-7", version)
        yield Preview.objects.create(function=detector_function, environment=environment, mr_iid=7,
                                     title="Shift the boxes", author="ada", head_sha=shifted["commit"],
                                     source_branch="shift", target_branch="main", version=version)
    finally:
        from deploy import aws

        with contextlib.suppress(Exception):
            aws.client("lambda").delete_function(FunctionName=environment.lambda_name)


def test_a_preview_is_tried_from_the_previews_list_beside_live(page, preview, detector_function, detector_plane,
                                                              artifacts):
    sign_in(page, "petra", "petra-password-1")
    page.goto(f"/functions/{detector_function.name}/previews/")
    row = page.locator("#mr-7")
    expect(row).to_contain_text("Shift the boxes")
    page.screenshot(path=str(artifacts / "previews-1-list.png"), full_page=True)
    row.get_by_role("link", name="Try in console").click()
    expect(page.locator("#id_target")).to_have_value("mr-7")
    expect(page.locator("#id_compare_with")).to_have_value("production:live")
    page.set_input_files("#id_image", str(sample_path("astronaut.png")))
    page.get_by_role("button", name="Invoke").click()
    expect(page.locator("#compare-summary")).to_contain_text("1 moved", timeout=90_000)
    expect(page.locator(".console-side")).to_have_count(2)
    page.screenshot(path=str(artifacts / "previews-2-console.png"), full_page=True)
    first, second = ConsoleRun.objects.order_by("pk")
    assert (first.environment.preview, first.target, first.executed_version) == (True, "mr-7", preview.version)
    assert (second.environment.name, second.target, second.executed_version) == (
        "production", "live", detector_plane.versions["real"]["version"])
    assert second.compared_with == first
