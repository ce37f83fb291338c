"""The detector handler in-process, on real images with real OpenCV."""

import json
import re
import struct

import botocore.stub
import cv2
import numpy as np
import pytest

from tests.detector_fixtures import (
    BAD_INPUTS,
    b64,
    bmp_bomb,
    encode,
    iou,
    noise,
    photo,
    photo_at,
    sample_path,
    webp_bomb,
)


def opencv_haar(image_path, cascade, scale_factor=1.1, min_neighbors=5, min_size=(30, 30)):
    """What OpenCV returns when called directly on the file, as the usual tutorial does."""
    gray = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2GRAY)
    classifier = cv2.CascadeClassifier(cv2.data.haarcascades + cascade)
    rects = classifier.detectMultiScale(gray, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                        minSize=min_size)
    return [[int(v) for v in rect] for rect in rects]


def xywh(result):
    return [[box["x"], box["y"], box["w"], box["h"]] for box in result["boxes"]]


def test_it_finds_the_astronauts_face_as_opencv_does(detector, detector_samples):
    result = detector.process_image({"image_base64": b64(detector_samples.astronaut_png)})
    expected = opencv_haar(sample_path("astronaut.png"), "haarcascade_frontalface_default.xml")
    assert len(expected) == 1
    assert xywh(result) == expected
    assert result["boxes"][0]["label"] == "face"
    # Eileen Collins' face sits in the upper middle of the 512x512 picture.
    box = result["boxes"][0]
    assert 150 < box["x"] < 250 and 40 < box["y"] < 120 and 60 < box["w"] < 140


@pytest.mark.parametrize("detector_name, cascade", [
    ("eye", "haarcascade_eye.xml"),
    ("upperbody", "haarcascade_upperbody.xml"),
    ("fullbody", "haarcascade_fullbody.xml"),
    ("cat_face", "haarcascade_frontalcatface.xml"),
])
def test_it_uses_each_haar_cascade_with_opencvs_defaults(detector, detector_samples, detector_name, cascade):
    event = {"image_base64": b64(detector_samples.astronaut_png), "detector": detector_name}
    result = detector.process_image(event)
    assert xywh(result) == opencv_haar(sample_path("astronaut.png"), cascade)
    assert result["detector"] == detector_name


def test_it_finds_both_eyes(detector, detector_samples):
    result = detector.process_image({"image_base64": b64(detector_samples.astronaut_png), "detector": "eye"})
    assert len(result["boxes"]) == 2
    assert {box["label"] for box in result["boxes"]} == {"eye"}


def test_it_finds_the_cats_face(detector, detector_samples):
    event = {"image_base64": b64(detector_samples.chelsea_png), "detector": "cat_face", "min_neighbors": 2}
    result = detector.process_image(event)
    expected = opencv_haar(sample_path("chelsea.png"), "haarcascade_frontalcatface.xml", min_neighbors=2)
    assert len(expected) == 1
    assert xywh(result) == expected


def test_it_scores_haar_boxes_with_the_neighbour_count(detector, detector_samples):
    result = detector.process_image({"image_base64": b64(detector_samples.astronaut_png)})
    gray = cv2.cvtColor(cv2.imread(str(sample_path("astronaut.png"))), cv2.COLOR_BGR2GRAY)
    classifier = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    _, neighbours = classifier.detectMultiScale2(gray, scaleFactor=1.1, minNeighbors=5, minSize=(30, 30))
    assert [box["score"] for box in result["boxes"]] == [int(n) for n in neighbours]


def test_it_reads_a_jpeg_as_cv2_imread_does(detector, detector_samples):
    result = detector.process_image({"image_base64": b64(detector_samples.astronaut_jpeg)})
    assert result["image"] == {"width": 512, "height": 512, "format": "jpeg"}
    assert xywh(result) == opencv_haar(detector_samples.jpeg_path, "haarcascade_frontalface_default.xml")
    assert len(result["boxes"]) == 1


def test_it_finds_people_with_hog_weights_and_nms(detector, detector_samples):
    result = detector.process_image({"image_base64": b64(detector_samples.rocket_jpeg), "detector": "people"})
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    rects, weights = hog.detectMultiScale(cv2.imread(str(sample_path("rocket.jpg"))), winStride=(8, 8),
                                          padding=(8, 8), scale=1.05)
    boxes = [list(map(int, r)) for r in rects]
    keep = np.ravel(cv2.dnn.NMSBoxes(boxes, np.ravel(weights).tolist(), 0.0, 0.3))
    assert xywh(result) == [[int(v) for v in rects[i]] for i in keep]
    assert [box["score"] for box in result["boxes"]] == [round(float(np.ravel(weights)[i]), 4) for i in keep]
    assert len(result["boxes"]) == 1 and result["boxes"][0]["label"] == "person"


def test_it_maps_downscaled_boxes_back_to_original_pixels(detector, detector_samples):
    full = detector.process_image({"image_base64": b64(detector_samples.astronaut_png)})
    small = detector.process_image({"image_base64": b64(detector_samples.astronaut_png), "max_side": 256})
    assert small["image"] == full["image"]
    assert small["params"]["max_side"] == 256
    assert len(small["boxes"]) == 1
    assert iou(small["boxes"][0], full["boxes"][0]) >= 0.8


def test_it_reports_the_image_params_and_versions(detector, detector_samples):
    result = detector.process_image({"image_base64": b64(detector_samples.chelsea_png), "scale_factor": 1.2})
    assert result["image"] == {"width": 451, "height": 300, "format": "png"}
    assert result["params"] == {"scale_factor": 1.2, "min_neighbors": 5, "min_size": [30, 30],
                                "max_size": None, "max_side": 1600}
    assert result["versions"] == {"opencv": cv2.__version__, "function": detector.__version__}
    assert set(result["timings_ms"]) == {"fetch", "decode", "detect", "total"}
    json.dumps(result)  # what Lambda will do with it


def test_it_answers_a_function_url_event_with_an_http_response(detector, detector_samples):
    event = {
        "version": "2.0", "rawPath": "/", "requestContext": {"http": {"method": "POST"}},
        "headers": {"Content-Type": "image/jpeg"}, "queryStringParameters": {"min_size": "60x60"},
        "body": b64(detector_samples.astronaut_jpeg), "isBase64Encoded": True,
    }
    response = detector.process_image(event)
    assert response["statusCode"] == 200
    assert response["headers"]["content-type"] == "application/json"
    body = json.loads(response["body"])
    assert body["params"]["min_size"] == [60, 60]
    assert xywh(body) == opencv_haar(detector_samples.jpeg_path, "haarcascade_frontalface_default.xml",
                                     min_size=(60, 60))


def test_it_takes_a_json_body_over_http(detector, detector_samples):
    request = {"image_base64": b64(detector_samples.chelsea_png), "detector": "cat_face", "min_neighbors": 2}
    event = {"httpMethod": "POST", "requestContext": {}, "headers": {"content-type": "application/json"},
             "body": json.dumps(request), "isBase64Encoded": False}
    response = detector.process_image(event)
    assert response["statusCode"] == 200
    assert len(json.loads(response["body"])["boxes"]) == 1


def test_it_answers_http_errors_with_a_4xx_status(detector, detector_samples):
    event = {"rawPath": "/", "requestContext": {}, "body": b64(b"plain text"), "isBase64Encoded": True}
    response = detector.process_image(event)
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["error"]["code"] == "not_an_image"


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_it_refuses_bad_input_with_a_stable_code(detector, bad_input_event, case):
    result = detector.process_image(bad_input_event(case))
    assert set(result) == {"error"}
    assert result["error"]["code"] == BAD_INPUTS[case]
    assert result["error"]["message"]


def test_it_refuses_a_bomb_before_decoding_it(detector, bad_input_event, monkeypatch):
    def decode(*args):
        raise AssertionError("decoded a decompression bomb")

    monkeypatch.setattr(detector.sniff.cv2, "imdecode", decode)
    result = detector.process_image(bad_input_event("decompression_bomb"))
    assert result["error"]["code"] == "image_too_large"


def test_it_refuses_an_inline_image_over_the_byte_limit(detector, detector_samples, monkeypatch):
    monkeypatch.setattr(detector.inputs, "MAX_BYTES", 1000)
    result = detector.process_image({"image_base64": b64(detector_samples.astronaut_png)})
    assert result["error"]["code"] == "payload_too_large"


def test_it_refuses_an_event_that_is_not_an_object(detector):
    assert detector.process_image(["image"])["error"]["code"] == "invalid_input"


def test_it_raises_on_internal_failures(detector, detector_samples, monkeypatch):
    class Broken:
        def detectMultiScale2(self, *args, **kwargs):
            raise cv2.error("out of memory")

    monkeypatch.setitem(detector.detection.CLASSIFIERS, "face", Broken())
    with pytest.raises(cv2.error):
        detector.process_image({"image_base64": b64(detector_samples.astronaut_png)})


@pytest.mark.parametrize("s3_code, code", [("NoSuchKey", "s3_object_not_found"),
                                           ("NoSuchBucket", "s3_object_not_found"),
                                           ("AccessDenied", "s3_access_denied")])
def test_it_maps_s3_errors_to_codes(detector, s3_code, code):
    with botocore.stub.Stubber(detector.inputs.S3) as stub:
        stub.add_client_error("get_object", service_error_code=s3_code)
        result = detector.process_image({"bucket": "photos", "key": "missing.png"})
    assert result["error"]["code"] == code


def test_it_raises_when_s3_itself_fails(detector):
    with botocore.stub.Stubber(detector.inputs.S3) as stub:
        stub.add_client_error("get_object", service_error_code="SlowDown", http_status_code=503)
        with pytest.raises(botocore.exceptions.ClientError):
            detector.process_image({"bucket": "photos", "key": "a.png"})


def test_it_finds_no_people_in_an_image_lower_than_the_window(isolated_detector):
    # 200x60 is lower than the HOG window (64x128) even with its padding: OpenCV reads outside the image.
    result = isolated_detector({"image_base64": b64(encode(noise(200, 60))), "detector": "people"})
    assert result["boxes"] == []
    assert result["image"] == {"width": 200, "height": 60, "format": "png"}


@pytest.mark.parametrize("detector_name", ["face", "eye", "fullbody", "upperbody", "cat_face", "people"])
@pytest.mark.parametrize("width, height", [(1, 1), (13, 9), (60, 200), (2000, 3)])
def test_it_finds_nothing_in_images_smaller_than_each_detectors_window(isolated_detector, detector_name, width,
                                                                        height):
    result = isolated_detector({"image_base64": b64(encode(noise(width, height))), "detector": detector_name})
    assert result["boxes"] == []
    assert result["image"] == {"width": width, "height": height, "format": "png"}


def test_it_finds_no_people_when_max_side_shrinks_the_photo_below_the_window(isolated_detector):
    event = {"image_base64": b64(encode(photo("rocket.jpg", 640, 480), ".jpg")), "detector": "people",
             "max_side": 100}
    result = isolated_detector(event)
    assert result["boxes"] == []
    assert result["params"]["max_side"] == 100


# (option, value) pairs that must each be answered with invalid_option, whatever the detector.
BAD_OPTIONS = [
    ("scale_factor", float("nan")), ("scale_factor", float("inf")), ("scale_factor", float("-inf")),
    ("scale_factor", "NaN"), ("scale_factor", "Infinity"), ("scale_factor", "1e999"), ("scale_factor", 10**400),
    ("scale_factor", "1e-400"), ("scale_factor", True), ("scale_factor", [1.1]), ("scale_factor", {"v": 1.1}),
    ("scale_factor", ""), ("scale_factor", "1.1" * 1000),
    ("min_neighbors", 2.5), ("min_neighbors", "2.5"), ("min_neighbors", float("inf")), ("min_neighbors", "inf"),
    ("min_neighbors", 10**30), ("min_neighbors", "9" * 5000), ("min_neighbors", False),
    ("min_size", [None, 30]), ("min_size", [30, None]), ("min_size", [None]), ("min_size", []),
    ("min_size", [[30], 30]), ("min_size", "30x"), ("min_size", "x"), ("min_size", "nan,30"),
    ("min_size", [True, 30]), ("min_size", [30.5, 30]), ("min_size", float("inf")), ("min_size", [0, 30]),
    ("min_size", {"width": 30}), ("max_size", [None, None]), ("max_size", "inf"), ("max_size", [1e308, 1e308]),
    ("max_side", float("nan")), ("max_side", 0), ("max_side", "100.5"), ("max_side", 10**6), ("max_side", 1601),
    ("detector", 42), ("detector", ["face"]), ("detector", {"name": "face"}),
]


@pytest.mark.parametrize("detector_name", ["face", "people"])
@pytest.mark.parametrize("name, value", BAD_OPTIONS, ids=[f"{n}={str(v)[:20]}" for n, v in BAD_OPTIONS])
def test_it_refuses_an_option_of_the_wrong_type_or_range(detector, detector_samples, detector_name, name, value):
    event = {"image_base64": b64(detector_samples.chelsea_png), "detector": detector_name, name: value}
    result = detector.process_image(event)
    assert set(result) == {"error"}
    assert result["error"]["code"] == "invalid_option"
    assert name in result["error"]["message"] and len(result["error"]["message"]) < 300


def test_it_takes_a_null_option_as_its_default(detector, detector_samples):
    event = {"image_base64": b64(detector_samples.astronaut_png), "detector": None, "scale_factor": None,
             "min_size": None}
    result = detector.process_image(event)
    assert result["detector"] == "face"
    assert result["params"]["scale_factor"] == 1.1 and result["params"]["min_size"] == [30, 30]
    assert len(result["boxes"]) == 1


def test_it_takes_whole_numbers_written_as_floats_or_strings(detector, detector_samples):
    event = {"image_base64": b64(detector_samples.astronaut_png), "min_neighbors": 4.0, "min_size": "40x40",
             "max_side": "400", "scale_factor": "1.2"}
    params = detector.process_image(event)["params"]
    assert params["min_neighbors"] == 4 and isinstance(params["min_neighbors"], int)
    assert params["min_size"] == [40, 40] and params["max_side"] == 400 and params["scale_factor"] == 1.2


def test_it_checks_min_neighbors_for_people_too(detector, detector_samples):
    event = {"image_base64": b64(detector_samples.rocket_jpeg), "detector": "people", "min_neighbors": "many"}
    assert detector.process_image(event)["error"]["code"] == "invalid_option"


def json_over_http(body, **extra) -> dict:
    """A Function URL event whose body is `body` (str), declared as JSON."""
    return {"rawPath": "/", "requestContext": {}, "headers": {"content-type": "application/json"},
            "body": body, "isBase64Encoded": False, **extra}


NOT_STRICT_JSON = {
    "nan_literal": '{"image_base64": "AAAA", "scale_factor": NaN}',
    "infinity_literal": '{"image_base64": "AAAA", "min_neighbors": Infinity}',
    "minus_infinity_literal": '{"image_base64": "AAAA", "max_side": -Infinity}',
    "duplicate_keys": '{"detector": "face", "detector": "people", "image_base64": "AAAA"}',
    "deeply_nested": '{"detector": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "trailing_comma": '{"image_base64": "AAAA",}',
    "not_an_object": '["image_base64"]',
}


@pytest.mark.parametrize("case", NOT_STRICT_JSON)
def test_it_refuses_a_body_that_is_not_strict_json(detector, case):
    response = detector.process_image(json_over_http(NOT_STRICT_JSON[case]))
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["error"]["code"] == "invalid_input"


def test_it_refuses_a_json_body_that_is_not_utf8(detector):
    event = json_over_http(b64(b'{"image_base64": "\xff\xfe"}'), isBase64Encoded=True)
    assert json.loads(detector.process_image(event)["body"])["error"]["code"] == "invalid_input"


@pytest.mark.parametrize("field, value", [("headers", ["content-type"]), ("queryStringParameters", ["min_size"]),
                                          ("queryStringParameters", "min_size=30"), ("headers", "text/plain")])
def test_it_refuses_http_fields_of_the_wrong_shape(detector, detector_samples, field, value):
    event = {"rawPath": "/", "requestContext": {}, "body": b64(detector_samples.astronaut_png),
             "isBase64Encoded": True, field: value}
    response = detector.process_image(event)
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["error"]["code"] == "invalid_input"


def test_it_refuses_a_non_finite_query_parameter(detector, detector_samples):
    event = {"rawPath": "/", "requestContext": {}, "body": b64(detector_samples.astronaut_png),
             "isBase64Encoded": True, "queryStringParameters": {"scale_factor": "NaN"}}
    response = detector.process_image(event)
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["error"]["code"] == "invalid_option"


def test_it_reads_a_webp_as_cv2_imread_does(detector, detector_samples):
    result = detector.process_image({"image_base64": b64(detector_samples.astronaut_webp)})
    assert result["image"] == {"width": 512, "height": 512, "format": "webp"}
    assert xywh(result) == opencv_haar(detector_samples.webp_path, "haarcascade_frontalface_default.xml")
    assert len(result["boxes"]) == 1


@pytest.mark.parametrize("lossless, mode, chunk", [(True, "RGB", b"VP8L"), (False, "RGBA", b"VP8X")])
def test_it_reads_lossless_and_extended_webp(detector, lossless, mode, chunk):
    import io

    from PIL import Image

    image = Image.fromarray(photo("chelsea.png", 451, 300)[..., ::-1].copy()).convert(mode)
    if mode == "RGBA":
        image.putalpha(Image.linear_gradient("L").resize(image.size))  # real transparency: an ALPH chunk
    data = io.BytesIO()
    image.save(data, format="WEBP", quality=80, lossless=lossless)
    assert data.getvalue()[12:16] == chunk
    result = detector.process_image({"image_base64": b64(data.getvalue()), "detector": "cat_face"})
    assert result["image"] == {"width": 451, "height": 300, "format": "webp"}


def test_it_reads_a_bmp_as_opencv_decodes_it(detector, detector_samples):
    result = detector.process_image({"image_base64": b64(detector_samples.astronaut_bmp)})
    assert result["image"] == {"width": 512, "height": 512, "format": "bmp"}
    assert xywh(result) == opencv_haar(sample_path("astronaut.png"), "haarcascade_frontalface_default.xml")
    assert len(result["boxes"]) == 1


@pytest.mark.parametrize("mode", ["1", "P", "L", "RGBA"])
def test_it_reads_bmps_of_every_depth(detector, mode):
    import io

    from PIL import Image

    data = io.BytesIO()
    Image.fromarray(photo("chelsea.png", 45, 30)[..., ::-1].copy()).convert(mode).save(data, format="BMP")
    result = detector.process_image({"image_base64": b64(data.getvalue())})
    assert result["image"] == {"width": 45, "height": 30, "format": "bmp"}


def test_it_reads_a_top_down_bmp(detector):
    data = bytearray(encode(photo("chelsea.png", 45, 30), ".bmp"))
    struct.pack_into("<i", data, 22, -30)  # rows stored top-down: the height is negative
    result = detector.process_image({"image_base64": b64(bytes(data))})
    assert result["image"] == {"width": 45, "height": 30, "format": "bmp"}


@pytest.mark.parametrize("bomb", [lambda: webp_bomb("VP8"), lambda: webp_bomb("VP8L"), lambda: webp_bomb("VP8X"),
                                  lambda: bmp_bomb()], ids=["vp8", "vp8l", "vp8x", "bmp_rle8"])
def test_it_refuses_a_webp_or_bmp_bomb_before_decoding_it(detector, monkeypatch, bomb):
    def decode(*args):
        raise AssertionError("decoded a decompression bomb")

    monkeypatch.setattr(detector.sniff.cv2, "imdecode", decode)
    result = detector.process_image({"image_base64": b64(bomb())})
    assert result["error"]["code"] == "image_too_large"
    assert "16383x16383" in result["error"]["message"] or "8000x6000" in result["error"]["message"]


def test_it_decodes_the_bmp_bomb_for_real_when_it_is_small(detector):
    # The RLE8 bomb is a real image: the same file at 300x200 decodes (so the 8000x6000 one is a real bomb).
    result = detector.process_image({"image_base64": b64(bmp_bomb(300, 200))})
    assert result["image"] == {"width": 300, "height": 200, "format": "bmp"}
    assert result["boxes"] == []


def opencv_people(image):
    """OpenCV's HOG people detector called directly with the handler's defaults, then the same NMS."""
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    rects, weights = hog.detectMultiScale(image, winStride=(8, 8), padding=(8, 8), scale=1.05)
    keep = np.ravel(cv2.dnn.NMSBoxes([list(map(int, r)) for r in rects], np.ravel(weights).tolist(), 0.0, 0.3))
    return [[int(v) for v in rects[i]] for i in keep]


# (detector, cascade or None for HOG, sample, min_neighbors): ordinary photos scaled to 1600 px on the long side.
PHOTOS_AT_1600 = [
    ("face", "haarcascade_frontalface_default.xml", "astronaut.png", 5),
    ("eye", "haarcascade_eye.xml", "astronaut.png", 5),
    ("upperbody", "haarcascade_upperbody.xml", "camera.png", 3),
    ("fullbody", "haarcascade_fullbody.xml", "motorcycle_left.png", 5),
    ("cat_face", "haarcascade_frontalcatface.xml", "astronaut.png", 2),
    ("people", None, "camera.png", 5),
]


@pytest.mark.parametrize("detector_name, cascade, sample, min_neighbors", PHOTOS_AT_1600,
                         ids=[f"{d}-{s}" for d, _, s, _ in PHOTOS_AT_1600])
def test_it_finds_what_opencv_finds_on_photos_of_1600_px(detector, detector_name, cascade, sample, min_neighbors):
    image = photo_at(sample, 1600)
    event = {"image_base64": b64(encode(image)), "detector": detector_name, "min_neighbors": min_neighbors}
    result = detector.process_image(event)
    if cascade:
        classifier = cv2.CascadeClassifier(cv2.data.haarcascades + cascade)
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        rects = classifier.detectMultiScale(gray, 1.1, min_neighbors, minSize=(30, 30))
        expected = [[int(v) for v in r] for r in rects]
    else:
        expected = opencv_people(image)
    assert expected, "a case without boxes proves nothing"
    # Sorted: OpenCV's own order changes from one call to the next (its threads add windows as they finish).
    assert sorted(xywh(result)) == sorted(expected)
    assert result["image"]["width"] == 1600 or result["image"]["height"] == 1600


def test_it_groups_windows_exactly_as_opencv_does(detector):
    rng = np.random.default_rng(8)
    checked = 0
    for _ in range(40):
        count, spots = int(rng.integers(1, 300)), rng.integers(0, 300, (int(rng.integers(1, 12)), 2))
        sides = rng.choice([20, 24, 26, 29, 35, 41, 50], count)
        rects = np.column_stack([spots[rng.integers(0, len(spots), count)] + rng.integers(-9, 10, (count, 2)),
                                 sides, sides * rng.choice([1, 2])])
        for threshold in (1, 3, 5):
            rects_cv, counts_cv = cv2.groupRectangles(rects.tolist(), threshold, 0.2)
            got, counts = detector.grouping.group(rects, threshold)
            assert got.tolist() == [list(r) for r in np.reshape(rects_cv, (-1, 4)).tolist()]
            assert counts.tolist() == np.ravel(counts_cv).tolist()
            checked += len(got)
    assert checked > 100


def test_it_groups_hog_windows_exactly_as_opencv_does(detector):
    image = photo_at("motorcycle_left.png", 1000)
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    rects, weights = hog.detectMultiScale(image, winStride=(8, 8), padding=(8, 8), scale=1.05)
    got, got_weights = detector.detection.hog_detect(image, detector.options.HOG_DEFAULTS)
    assert len(rects) >= 2
    expected = sorted(zip(np.reshape(rects, (-1, 4)).tolist(), np.round(np.ravel(weights), 9).tolist(), strict=True))
    assert sorted(zip(got.tolist(), np.round(got_weights, 9).tolist(), strict=True)) == expected


def test_it_keeps_a_person_cut_by_the_border_as_opencv_clips_it(detector):
    image = photo_at("rocket.jpg", 640)[:, 290:]  # the person now stands at the left edge
    result = detector.process_image({"image_base64": b64(encode(image)), "detector": "people"})
    assert xywh(result) == opencv_people(image)
    assert result["boxes"] and result["boxes"][0]["x"] == 0


def test_it_searches_a_copy_of_a_large_image_at_1600_px_and_maps_the_boxes_back(detector, detector_samples):
    result = detector.process_image({"image_base64": b64(detector_samples.astronaut_3200_jpeg)})
    expected = detector.process_image({"image_base64": b64(encode(photo_at("astronaut.png", 1600), ".jpg"))})
    assert result["image"]["width"] == 3200 and result["params"]["max_side"] == 1600
    assert len(result["boxes"]) == len(expected["boxes"]) >= 3
    for box in expected["boxes"]:
        doubled = {**box, **{k: box[k] * 2 for k in "xywh"}}
        assert max(iou(doubled, got) for got in result["boxes"]) >= 0.9


def test_it_refuses_a_search_over_the_budget_and_names_the_max_side_that_fits(detector, detector_samples):
    event = {"image_base64": b64(detector_samples.astronaut_3200_jpeg), "scale_factor": 1.01}
    refused = detector.process_image(event)
    assert refused["error"]["code"] == "invalid_option"
    fits = int(re.search(r"set max_side to (\d+) or less", refused["error"]["message"]).group(1))
    assert 32 < fits < 1600
    _, params = detector.options.parse({**event, "max_side": fits})
    detector.detection.check_budget("face", 3200, 3200, params)  # the named max_side fits: no BadInput
    with pytest.raises(detector.BadInput):
        detector.detection.check_budget("face", 3200, 3200, {**params, "max_side": fits + 40})


@pytest.mark.parametrize("width, height", [(1600, 1600), (1600, 37), (6400, 6240), (40_000, 1000)])
@pytest.mark.parametrize("detector_name", ["face", "eye", "fullbody", "upperbody", "cat_face", "people"])
def test_it_never_refuses_default_scale_factors_whatever_the_sizes(detector, detector_name, width, height):
    checked = 0
    for min_size, max_size in [([30, 30], None), ([1, 1], None), ([1, 1], [20000, 20000]), ([200, 400], None)]:
        _, params = detector.options.parse({"detector": detector_name, "min_size": min_size, "max_size": max_size})
        detector.detection.check_budget(detector_name, width, height, params)  # raises BadInput when over
        checked += 1
    assert checked == 4
