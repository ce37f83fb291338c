"""The detector handler in-process, on real images with real OpenCV."""

import json

import botocore.stub
import cv2
import numpy as np
import pytest

from tests.detector_fixtures import BAD_INPUTS, b64, encode, iou, noise, photo, sample_path


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
                                "max_size": None, "max_side": None}
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

    monkeypatch.setattr(detector.cv2, "imdecode", decode)
    result = detector.process_image(bad_input_event("decompression_bomb"))
    assert result["error"]["code"] == "image_too_large"


def test_it_refuses_an_inline_image_over_the_byte_limit(detector, detector_samples, monkeypatch):
    monkeypatch.setattr(detector, "MAX_BYTES", 1000)
    result = detector.process_image({"image_base64": b64(detector_samples.astronaut_png)})
    assert result["error"]["code"] == "payload_too_large"


def test_it_refuses_an_event_that_is_not_an_object(detector):
    assert detector.process_image(["image"])["error"]["code"] == "invalid_input"


def test_it_raises_on_internal_failures(detector, detector_samples, monkeypatch):
    class Broken:
        def detectMultiScale2(self, *args, **kwargs):
            raise cv2.error("out of memory")

    monkeypatch.setitem(detector.CLASSIFIERS, "face", Broken())
    with pytest.raises(cv2.error):
        detector.process_image({"image_base64": b64(detector_samples.astronaut_png)})


@pytest.mark.parametrize("s3_code, code", [("NoSuchKey", "s3_object_not_found"),
                                           ("NoSuchBucket", "s3_object_not_found"),
                                           ("AccessDenied", "s3_access_denied")])
def test_it_maps_s3_errors_to_codes(detector, s3_code, code):
    with botocore.stub.Stubber(detector.S3) as stub:
        stub.add_client_error("get_object", service_error_code=s3_code)
        result = detector.process_image({"bucket": "photos", "key": "missing.png"})
    assert result["error"]["code"] == code


def test_it_raises_when_s3_itself_fails(detector):
    with botocore.stub.Stubber(detector.S3) as stub:
        stub.add_client_error("get_object", service_error_code="SlowDown", http_status_code=503)
        with pytest.raises(botocore.exceptions.ClientError):
            detector.process_image({"bucket": "photos", "key": "a.png"})


def test_it_finds_no_people_in_an_image_lower_than_the_window(isolated_detector):
    # 200x60 is lower than the HOG window (64x128) even with its padding: OpenCV reads outside the image.
    result = isolated_detector({"image_base64": b64(encode(noise(200, 60))), "detector": "people"})
    assert result["boxes"] == []
    assert result["image"] == {"width": 200, "height": 60, "format": "png"}


def test_it_finds_no_people_when_max_side_shrinks_the_photo_below_the_window(isolated_detector):
    event = {"image_base64": b64(encode(photo("rocket.jpg", 640, 480), ".jpg")), "detector": "people",
             "max_side": 100}
    result = isolated_detector(event)
    assert result["boxes"] == []
    assert result["params"]["max_side"] == 100
