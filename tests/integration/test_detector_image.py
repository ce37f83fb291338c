"""The detector image built for arm64 (cross-platform BuildKit path) and amd64, run and invoked.

Each architecture is built once per session and runs in one container, read
only, as an unprivileged user, invoked through the emulator on 127.0.0.1.
"""

import json

import pytest

from tests.detector_fixtures import BAD_INPUTS, assert_same_boxes, b64, encode, noise

pytestmark = pytest.mark.integration

# (case name, sample attribute, options): each answered in-process and by both containers.
CASES = [
    ("face_png", "astronaut_png", {}),
    ("face_jpeg", "astronaut_jpeg", {}),
    ("face_webp", "astronaut_webp", {}),
    ("face_bmp", "astronaut_bmp", {}),
    ("eyes", "astronaut_png", {"detector": "eye"}),
    ("cat_face", "chelsea_png", {"detector": "cat_face", "min_neighbors": 2}),
    ("downscaled", "astronaut_png", {"max_side": 256}),
    ("people", "rocket_jpeg", {"detector": "people"}),
    ("bounded_copy", "astronaut_3200_jpeg", {}),
]


def test_it_builds_for_the_requested_architecture(detector_container):
    image = detector_container.client.images.get(detector_container.container.image.id)
    assert image.attrs["Architecture"] == detector_container.arch
    assert image.attrs["Config"]["Cmd"] == ["detector.process_image"]


@pytest.mark.parametrize("name, sample, options", CASES, ids=[c[0] for c in CASES])
def test_it_finds_the_same_boxes_as_in_process(detector_container, detector, detector_samples, name, sample,
                                               options):
    event = {"image_base64": b64(getattr(detector_samples, sample)), **options}
    expected = detector.process_image(event)
    got = detector_container.invoke(event)
    assert expected["boxes"], "a case without boxes proves nothing"
    assert_same_boxes(got["boxes"], expected["boxes"])
    assert got["image"] == expected["image"]
    assert got["versions"]["opencv"] == expected["versions"]["opencv"]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_it_refuses_bad_input_through_the_container(detector_container, bad_input_event, case):
    result = detector_container.invoke(bad_input_event(case))
    assert result["error"]["code"] == BAD_INPUTS[case]


def test_it_answers_function_url_events(detector_container, detector_samples):
    event = {"version": "2.0", "rawPath": "/", "requestContext": {"http": {"method": "POST"}},
             "headers": {"content-type": "image/png"}, "isBase64Encoded": True,
             "body": b64(detector_samples.astronaut_png)}
    response = detector_container.invoke(event)
    assert response["statusCode"] == 200
    assert len(json.loads(response["body"])["boxes"]) == 1


def test_it_reads_the_image_from_s3_through_the_plane(detector_container, detector_bucket, detector,
                                                      detector_samples):
    where = detector_bucket.put(f"{detector_container.arch}/astronaut.jpg", detector_samples.astronaut_jpeg)
    result = detector_container.invoke(where)
    expected = detector.process_image({"image_base64": b64(detector_samples.astronaut_jpeg)})
    assert_same_boxes(result["boxes"], expected["boxes"])
    assert len(result["boxes"]) == 1


def test_it_reports_a_missing_s3_object(detector_container, detector_bucket):
    result = detector_container.invoke({"bucket": detector_bucket.name, "key": "nothing/here.png"})
    assert result["error"]["code"] == "s3_object_not_found"


def test_it_refuses_an_s3_object_over_the_size_limit(detector_container, detector_bucket, detector):
    where = detector_bucket.put("too-large.bin", b"\0" * (detector.inputs.MAX_BYTES + 1))
    result = detector_container.invoke(where)
    assert result["error"]["code"] == "s3_object_too_large"


def test_it_finds_no_people_in_an_image_lower_than_the_window(detector_container):
    # In-process this once killed the interpreter (SIGSEGV); in the image the runtime would have died.
    result = detector_container.invoke({"image_base64": b64(encode(noise(200, 60))), "detector": "people"})
    assert result["boxes"] == []
    assert result["image"] == {"width": 200, "height": 60, "format": "png"}


def test_it_refuses_a_non_finite_option_in_the_container(detector_container, detector_samples):
    event = {"image_base64": b64(detector_samples.chelsea_png), "scale_factor": "NaN", "min_size": [30, None]}
    assert detector_container.invoke(event)["error"]["code"] == "invalid_option"
