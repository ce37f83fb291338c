"""No input makes the detector raise or crash: Hypothesis draws decodable images and options.

The handler runs in a child process (a crash inside OpenCV kills it, not pytest) whose pixel cap
is lowered to CAP, so that examples reach the cap, and the bounded copy, in milliseconds: the
code paths are the same as at the deployed 40 MP (bench/detector_worst_case.py measures those).
Two examples in three are faces the detector finds under options moved off their defaults, so the
property covers successful detections, not only refusals and empty answers; the test counts what
its examples reached and fails when under 30 % of them were such detections.
"""

import json
from collections import Counter

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.detector_fixtures import IsolatedHandler, b64, photo

CAP = 120_000
# Largest side each encoder takes: JPEG 65535, WebP 16383; PNG and BMP far more than CAP.
FORMATS = {".png": CAP, ".jpg": 65_500, ".webp": 16_383, ".bmp": CAP}
DETECTORS = ["face", "eye", "fullbody", "upperbody", "cat_face", "people"]
SETTINGS = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def capped_detector():
    handler = IsolatedHandler(env={"DETECTOR_MAX_PIXELS": str(CAP)})
    yield handler
    handler.close()


@st.composite
def images(draw):
    """(file bytes, format, width, height): decodable; ordinary sizes, or exactly at or just over CAP pixels
    in any aspect from 1 x CAP to CAP x 1."""
    ext = draw(st.sampled_from(sorted(FORMATS)))
    limit = FORMATS[ext]
    shape = draw(st.sampled_from(["ordinary", "at_cap", "over_cap"]))
    if shape == "ordinary":
        width, height = draw(st.integers(1, 400)), draw(st.integers(1, 300))
    else:
        width = draw(st.integers(max(1, CAP // limit + 1), min(limit, CAP)))
        height = min(limit, CAP // width + (shape == "over_cap"))
    pixels = draw(st.sampled_from([noise, flat, tiled_faces, photo_of]))(width, height, draw(st.integers(0, 255)))
    return draw(encoded(pixels, ext))


@st.composite
def encoded(draw, pixels, ext: str):
    """(file bytes, format, width, height) of BGR `pixels` as `ext`, in 1, 3 or 4 channels (and 16 bits for PNG)."""
    height, width = pixels.shape[:2]
    channels = draw(st.sampled_from([1, 3, 4]))
    depth = draw(st.sampled_from([np.uint8, np.uint16])) if ext == ".png" else np.uint8
    pixels = {1: cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY), 3: pixels, 4: cv2.cvtColor(pixels, cv2.COLOR_BGR2BGRA)}
    pixels = pixels[channels].astype(depth) * (257 if depth is np.uint16 else 1)
    ok, data = cv2.imencode(ext, pixels)
    assert ok
    return data.tobytes(), {".jpg": "jpeg"}.get(ext, ext[1:]), width, height


def noise(width: int, height: int, seed: int):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def flat(width: int, height: int, value: int):
    return np.full((height, width, 3), value, np.uint8)


def tiled_faces(width: int, height: int, seed: int):
    """The astronaut's face tiled: many boxes, up to the image's edges."""
    side = 24 + seed % 80
    face = cv2.resize(photo("astronaut.png", 512, 512)[47:180, 158:291], (side, side), interpolation=cv2.INTER_AREA)
    return np.tile(face, (height // side + 1, width // side + 1, 1))[:height, :width].copy()


def photo_of(width: int, height: int, _):
    return photo("astronaut.png", width, height)


@st.composite
def options(draw):
    chosen = {"detector": draw(st.sampled_from(DETECTORS))}
    optional = {
        "max_side": st.integers(32, 1600),
        "scale_factor": st.floats(1.01, 2.0),
        "min_neighbors": st.integers(0, 100),
        "min_size": st.lists(st.integers(1, 400), min_size=2, max_size=2),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            chosen[name] = draw(strategy)
    if draw(st.booleans()):
        smallest = chosen.get("min_size", [30, 30])
        chosen["max_size"] = [v + draw(st.integers(0, 400)) for v in smallest]
    return chosen


@st.composite
def findable(draw):
    """(image, options): faces the face detector finds under any of the options drawn, in any format.

    Faces of a known side (the astronaut's photo, or her face tiled), with every option moved off
    its default within the range that still finds them: min_size below the face, max_size above it,
    max_side shrinking it at most to 3/4 and its faces to no less than 48 px."""
    if draw(st.booleans()):
        side = draw(st.integers(40, 100))
        width, height = draw(st.integers(side, 400)), draw(st.integers(side, 300))
        pixels = tiled_faces(width, height, side - 24)
    else:
        width, height = draw(st.integers(240, 400)), draw(st.integers(220, 300))
        side = 133 * min(width, height) // 512  # her face is 133 px square in the 512 px photo
        pixels = photo_of(width, height, 0)
    ext, longest = draw(st.sampled_from(sorted(FORMATS))), max(width, height)
    chosen = {"detector": "face"}
    optional = {
        "scale_factor": st.floats(1.02, 1.3),
        "min_neighbors": st.integers(0, 4),
        "min_size": st.lists(st.integers(8, side // 2), min_size=2, max_size=2),
        "max_side": st.integers(min(longest, max(3 * longest // 4, -(-48 * longest // side))), longest),
    }
    for name, strategy in optional.items():
        if draw(st.integers(0, 3)):  # three times in four
            chosen[name] = draw(strategy)
    if draw(st.booleans()):
        chosen["max_size"] = [2 * side + draw(st.integers(0, 200))] * 2
    return draw(encoded(pixels, ext)), chosen


# Mostly findable faces under varied options; else the edge cases: noise, flat colour, any detector, any
# option value in range, sizes at and over the cap.
SCENES = st.sampled_from(["findable", "findable", "edge"]).flatmap(
    lambda kind: findable() if kind == "findable" else st.tuples(images(), options()))


def answer(handler, image: bytes, chosen: dict, over_http: bool) -> dict:
    if not over_http:
        return handler({"image_base64": b64(image), **chosen})
    query = {k: ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in chosen.items()}
    response = handler({"rawPath": "/", "requestContext": {}, "body": b64(image), "isBase64Encoded": True,
                        "headers": {"content-type": "application/octet-stream"}, "queryStringParameters": query})
    return json.loads(response["body"])


# What the generated examples reached, counted by the property itself (Hypothesis' event() only
# prints statistics): the test below requires detections under non-default options to be common.
OUTCOMES: Counter = Counter()
FOUND_WITH_OPTIONS = "boxes found with non-default options"
# Values that are the handler's own defaults (Haar's, then HOG's scale_factor): not a non-default option.
DEFAULT_VALUES = {"scale_factor": (1.1, 1.05), "min_neighbors": (5,), "min_size": ([30, 30],)}
EXPLICIT = [
    (((cv2.imencode(".png", np.zeros((60, 200, 3), np.uint8))[1].tobytes(), "png", 200, 60),
      {"detector": "people"}), False),
    (((cv2.imencode(".bmp", np.zeros((1, CAP, 3), np.uint8))[1].tobytes(), "bmp", CAP, 1),
      {"detector": "people", "max_side": 32}), True),
    (((cv2.imencode(".jpg", tiled_faces(399, 299, 76))[1].tobytes(), "jpeg", 399, 299),
      {"detector": "face", "max_side": 133, "min_neighbors": 3}), False),
]


def non_default(chosen: dict, width: int, height: int) -> list[str]:
    """The options in `chosen` that change what the detector does on a width x height image."""
    changed = [name for name, value in chosen.items()
               if name in DEFAULT_VALUES and value not in DEFAULT_VALUES[name]]
    changed += ["max_size"] if "max_size" in chosen else []
    changed += ["max_side"] if chosen.get("max_side", CAP) < max(width, height) else []
    return changed


def outcome(result: dict, chosen: dict, width: int, height: int) -> str:
    if "error" in result:
        return result["error"]["code"]
    if not result["boxes"]:
        return "no boxes"
    return FOUND_WITH_OPTIONS if non_default(chosen, width, height) else "boxes found with default options"


@SETTINGS
@given(scene=SCENES, over_http=st.booleans())
def answers_every_decodable_image_without_raising_or_crashing(capped_detector, scene, over_http):
    (data, fmt, width, height), chosen = scene
    result = answer(capped_detector, data, chosen, over_http)
    if (scene, over_http) not in EXPLICIT:
        OUTCOMES[outcome(result, chosen, width, height)] += 1
    if width * height > CAP:
        assert result["error"]["code"] == "image_too_large"
        return
    assert result["image"] == {"width": width, "height": height, "format": fmt}, result.get("error")
    for box in result["boxes"]:
        assert 0 <= box["x"] and 0 <= box["y"] and box["w"] >= 1 and box["h"] >= 1
        assert box["x"] + box["w"] <= width and box["y"] + box["h"] <= height


for _scene, _over_http in EXPLICIT:
    answers_every_decodable_image_without_raising_or_crashing = example(
        scene=_scene, over_http=_over_http)(answers_every_decodable_image_without_raising_or_crashing)


def test_it_answers_every_decodable_image_without_raising_or_crashing(capped_detector):
    """The property, run here so that its own count of outcomes can be asserted on: most generated
    examples must be detections that non-default options shaped, not only edge cases."""
    OUTCOMES.clear()
    answers_every_decodable_image_without_raising_or_crashing(capped_detector)
    generated = sum(OUTCOMES.values())
    print(dict(OUTCOMES))
    assert generated >= SETTINGS.max_examples * 0.9
    assert OUTCOMES[FOUND_WITH_OPTIONS] >= 0.3 * generated, dict(OUTCOMES)


OPTION_NAMES = ["detector", "scale_factor", "min_neighbors", "min_size", "max_size", "max_side"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(["NaN", "-Infinity", "1e999", "30x40", "30,", "x", " 7 ", *DETECTORS]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=4,
)
SMALL_PHOTO = cv2.imencode(".jpg", photo("astronaut.png", 96, 72))[1].tobytes()


@settings(SETTINGS, max_examples=150)
@given(chosen=st.dictionaries(st.sampled_from(OPTION_NAMES), JSON_VALUES, max_size=6))
@example(chosen={"detector": "eye", "min_size": "30x40", "max_side": " 64 "})
@example(chosen={"scale_factor": float("nan"), "min_size": [None, 30]})
def test_it_answers_any_option_value_with_boxes_or_an_option_error(capped_detector, chosen):
    # NaN and infinities reach the handler as floats, as Python's json (and so Lambda's runtime) reads them.
    result = capped_detector({"image_base64": b64(SMALL_PHOTO), **chosen})
    if "error" in result:
        assert result["error"]["code"] in {"invalid_option", "unknown_detector"}, result
        assert result["error"]["message"]
    else:
        assert result["image"] == {"width": 96, "height": 72, "format": "jpeg"}
        assert isinstance(result["boxes"], list)
