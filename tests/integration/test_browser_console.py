"""The console in a real browser (Playwright + Debian's chromium) against the real
detector: the drawn box lies over the face OpenCV finds, hover and the score
threshold work without a new invoke, compare mode marks the moved box, and an
owner saves a golden case. Screenshots are kept as artifacts."""

import pytest
from playwright.sync_api import expect

from portal.models import ConsoleRun, GoldenCase, Membership
from tests.detector_fixtures import assert_same_boxes, b64, sample_path

pytestmark = pytest.mark.integration


@pytest.fixture
def olga(detector_function, django_user_model):
    user = django_user_model.objects.create_user("olga", "olga@example.org", "olga-password-1")
    Membership.objects.create(function=detector_function, user=user, role=Membership.Role.OWNER)
    return user


def sign_in(page, next_url: str) -> None:
    page.goto(next_url)
    page.get_by_label("Username").fill("olga")
    page.get_by_label("Password").fill("olga-password-1")
    page.get_by_role("button", name="Sign in").click()


def drawn_against_returned(page, box: dict, natural_width: int) -> None:
    """The overlay's rectangle, in screen pixels, where the returned box is on the shown image."""
    shown = page.locator(".console-side img.subject").first.bounding_box()
    # The rectangle's geometry as rendered (its stroke left out), in the same viewport pixels as the image's box.
    rect = page.locator(".console-side g.box rect").first.evaluate(
        "(r) => { const m = r.getScreenCTM(), b = r.getBBox();"
        " return {x: m.a * b.x + m.e, y: m.d * b.y + m.f, width: m.a * b.width, height: m.d * b.height}; }")
    scale = shown["width"] / natural_width
    assert scale > 0.2
    for got, expected in ((rect["x"], shown["x"] + box["x"] * scale), (rect["y"], shown["y"] + box["y"] * scale),
                          (rect["width"], box["w"] * scale), (rect["height"], box["h"] * scale)):
        assert abs(got - expected) <= 1.0, (rect, shown, box)


def test_a_person_checks_a_face_compares_two_versions_and_saves_a_golden_case(page, olga, detector_function,
                                                                               detector_plane, detector, artifacts):
    sign_in(page, f"/functions/{detector_function.name}/console/")
    astronaut = sample_path("astronaut.png")
    page.set_input_files("#id_image", str(astronaut))
    expect(page.locator("#preview")).to_be_visible()
    page.get_by_role("button", name="Invoke").click()
    expect(page.locator("#console-result")).to_be_visible(timeout=60_000)
    run = ConsoleRun.objects.latest("pk")
    expected = detector.process_image({"image_base64": b64(astronaut.read_bytes())})["boxes"]
    assert_same_boxes(run.boxes, expected)
    drawn_against_returned(page, run.boxes[0], 512)
    page.screenshot(path=str(artifacts / "console-1-face.png"), full_page=True)

    page.locator(".console-side g.box").first.hover()
    expect(page.locator("table.boxes tbody tr").first).to_have_class("hot")
    page.locator("input.threshold").evaluate("(s) => { s.value = s.max + 1; s.dispatchEvent(new Event('input')); }")
    expect(page.locator(".console-side g.box").first).to_be_hidden()
    expect(page.locator(".shown-count")).to_have_text("0 of 1 boxes shown")
    assert ConsoleRun.objects.count() == 1  # the threshold filtered without invoking again

    shifted = detector_plane.versions["shifted"]["version"]
    page.select_option("#id_compare_with", shifted)
    page.get_by_role("button", name="Invoke").click()
    expect(page.locator("#compare-summary")).to_contain_text("1 moved", timeout=60_000)
    expect(page.locator(".console-side")).to_have_count(2)
    expect(page.locator(".console-side").nth(1).locator("g.box.moved")).to_have_count(1)
    page.screenshot(path=str(artifacts / "console-2-compare.png"), full_page=True)

    page.get_by_label("Save the left side as a golden case").fill("astronaut face")
    page.get_by_role("button", name="Save golden case").click()
    expect(page.locator("#golden-boxes tbody tr")).to_have_count(1)
    page.screenshot(path=str(artifacts / "console-3-golden.png"), full_page=True)
    case = GoldenCase.objects.get(function=detector_function)
    assert case.name == "astronaut face" and case.boxes == run.boxes


def test_an_image_dropped_or_pasted_on_the_page_is_the_one_sent(page, olga, detector_function):
    sign_in(page, f"/functions/{detector_function.name}/console/")
    as_file = ("async (name) => { const blob = await (await fetch('/console/samples/' + name + '/')).blob();"
               " const t = new DataTransfer(); t.items.add(new File([blob], name + '.png', {type: 'image/png'}));"
               " return t; }")
    page.evaluate(f"async () => {{ const t = await ({as_file})('astronaut');"
                  " document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: t})); }")
    expect(page.locator("#drop-zone .file-name")).to_contain_text("astronaut.png")
    page.evaluate(f"async () => {{ const t = await ({as_file})('chelsea'); document.getElementById('drop-zone')"
                  ".dispatchEvent(new DragEvent('drop', {dataTransfer: t, bubbles: true, cancelable: true})); }")
    expect(page.locator("#drop-zone .file-name")).to_contain_text("chelsea.png")
    page.select_option("#id_detector", "cat_face")
    page.fill("#id_min_neighbors", "2")
    page.get_by_role("button", name="Invoke").click()
    expect(page.locator("#console-result")).to_be_visible(timeout=60_000)
    run = ConsoleRun.objects.get()
    assert run.image_name == "chelsea.png" and run.options == {"detector": "cat_face", "min_neighbors": 2}
    assert [box["label"] for box in run.boxes] == ["cat_face"]
