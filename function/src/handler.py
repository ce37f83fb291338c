"""The OpenCV object detector Lambda (handler string `handler.process_image`).

Takes an image from S3 (`{"bucket", "key"}`), inline (`{"image_base64"}`) or as
the base64 body of a Function URL / API Gateway request, runs one of OpenCV's
Haar cascades or its HOG people detector on a copy at most MAX_SIDE pixels on
its longer side, and returns the boxes in the original image's pixel
coordinates. JPEG, PNG, WebP and BMP are accepted, sized from their headers
before a byte of pixel data is decoded.

Bad input gets `{"error": {"code", "message"}}` with a stable code (see
`BadInput`); anything else raises, so that Lambda reports a FunctionError and
the pipeline's verify step fails loudly instead of passing on a half-answer.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import struct
import time
from collections.abc import Callable

import boto3
import botocore.exceptions
import cv2
import numpy as np

__version__ = "1.0.0"

# Decoded BGR costs 3 bytes a pixel: 40 MP is ~120 MB before the grayscale
# copy, which still fits the smallest memory size the function is deployed with.
MAX_PIXELS = int(os.environ.get("DETECTOR_MAX_PIXELS", 40_000_000))
# The detectors search a copy whose longer side is at most this, and map the boxes back: the time a
# search takes grows with the pixels searched; at 1600 px the worst content found takes 9 s and
# 430 MB at one CPU (bench/detector_worst_case.py, README there), inside the function's 30 s and
# 1024 MB. Photos up to this size get exactly the boxes OpenCV finds; max_side may only lower it.
MAX_SIDE = int(os.environ.get("DETECTOR_MAX_SIDE", 1600))
# Synchronous invokes cap the payload at 6 MB; S3 objects are capped here so a
# wrong key cannot make the function stream a video into memory.
MAX_BYTES = int(os.environ.get("DETECTOR_MAX_BYTES", 20 * 1024 * 1024))

HAAR_CASCADES = {
    "face": "haarcascade_frontalface_default.xml",
    "eye": "haarcascade_eye.xml",
    "fullbody": "haarcascade_fullbody.xml",
    "upperbody": "haarcascade_upperbody.xml",
    "cat_face": "haarcascade_frontalcatface.xml",
}
DETECTORS = (*HAAR_CASCADES, "people")
LABELS = {**{name: name for name in HAAR_CASCADES}, "people": "person"}

HAAR_DEFAULTS = {"scale_factor": 1.1, "min_neighbors": 5, "min_size": [30, 30]}
# The usual settings for OpenCV's default people detector; NMS merges the
# overlapping windows that groupRectangles leaves behind.
HOG_DEFAULTS = {"scale_factor": 1.05, "win_stride": [8, 8], "padding": [8, 8], "nms_threshold": 0.3}
# What detectMultiScale uses by default for each: groups need more than this many windows; the
# similarity of two windows is cv::SimilarRects(GROUP_EPS).
HOG_GROUP_THRESHOLD = 2
GROUP_EPS = 0.2

HTTP_STATUS = {
    "payload_too_large": 413,
    "image_too_large": 413,
    "s3_object_too_large": 413,
    "s3_access_denied": 403,
    "s3_object_not_found": 404,
}

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# SOF markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
OTHER_IMAGE_MAGIC = {b"GIF87a": "gif", b"GIF89a": "gif", b"II*\x00": "tiff", b"MM\x00*": "tiff"}
SUPPORTED = "JPEG, PNG, WebP or BMP"
# BMP compressions whose pixel array has a size known from the header: BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS.
BMP_UNCOMPRESSED = frozenset({0, 3, 6})


class BadInput(Exception):
    """A problem with the request, answered as a result rather than raised to Lambda."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def result(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


def _load_cascade(filename: str) -> cv2.CascadeClassifier:
    classifier = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, filename))
    if classifier.empty():
        # A broken image, not a bad request: fail the cold start so the deploy's verify step sees it.
        raise RuntimeError(f"cannot load Haar cascade {filename} from {cv2.data.haarcascades}")
    return classifier


# Loaded once per cold start, during Lambda's init phase (which runs at full CPU), not per request.
CLASSIFIERS = {name: _load_cascade(filename) for name, filename in HAAR_CASCADES.items()}
CASCADE_WINDOWS = {name: tuple(classifier.getOriginalWindowSize()) for name, classifier in CLASSIFIERS.items()}
HOG = cv2.HOGDescriptor()
HOG.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
S3 = boto3.client("s3")


def process_image(event, context=None):
    if _is_http(event):
        return _http_response(event)
    if not isinstance(event, dict):
        return BadInput("invalid_input", "the event must be a JSON object").result()
    return _result_or_error(event, lambda: _fetch(event))


def _result_or_error(request: dict, fetch: Callable[[], bytes]) -> dict:
    try:
        return _detect(request, fetch)
    except BadInput as exc:
        return exc.result()


def _detect(request: dict, fetch: Callable[[], bytes]) -> dict:
    started = time.perf_counter()
    detector, params = _options(request)  # before fetching: a typo should not cost an S3 download
    data = fetch()
    fetched = time.perf_counter()
    image, fmt = _decode(data)
    height, width = image.shape[:2]
    decoded = time.perf_counter()
    boxes = _run_detector(detector, image, params)
    detected = time.perf_counter()
    return {
        "boxes": boxes,
        "image": {"width": width, "height": height, "format": fmt},
        "detector": detector,
        "params": params,
        "timings_ms": {
            "fetch": _ms(fetched - started),
            "decode": _ms(decoded - fetched),
            "detect": _ms(detected - decoded),
            "total": _ms(detected - started),
        },
        "versions": {"opencv": cv2.__version__, "function": __version__},
    }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


# --- input ---------------------------------------------------------------------------------------

def _fetch(event: dict) -> bytes:
    inline = "image_base64" in event
    from_s3 = "bucket" in event or "key" in event
    if inline and from_s3:
        raise BadInput("conflicting_input", "send either image_base64 or bucket and key, not both")
    if inline:
        return _b64decode(event["image_base64"], "image_base64")
    if from_s3:
        return _fetch_s3(event)
    raise BadInput("missing_input", "send image_base64, or bucket and key of an S3 object")


def _b64decode(text, field: str) -> bytes:
    if not isinstance(text, str):
        raise BadInput("invalid_input", f"{field} must be a base64 string")
    if text.startswith("data:") and "," in text:  # a data: URL as browsers produce it
        text = text.split(",", 1)[1]
    if len(text) > (MAX_BYTES // 3 + 1) * 4 + 1024:  # checked before decoding, whitespace allowed for
        raise BadInput("payload_too_large", f"the image is over the {MAX_BYTES} byte limit")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadInput("invalid_base64", f"{field} is not valid base64 ({exc})") from None
    if len(data) > MAX_BYTES:
        raise BadInput("payload_too_large", f"the image is over the {MAX_BYTES} byte limit")
    return data


def _fetch_s3(event: dict) -> bytes:
    bucket, key = event.get("bucket"), event.get("key")
    if not bucket or not key:
        raise BadInput("missing_input", "an S3 image needs both bucket and key")
    if not isinstance(bucket, str) or not isinstance(key, str):
        raise BadInput("invalid_input", "bucket and key must be strings")
    where = f"s3://{bucket}/{key}"
    try:
        obj = S3.get_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ParamValidationError as exc:
        raise BadInput("invalid_input", f"bad S3 location {where}: {exc}") from None
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "NoSuchBucket", "404", "NotFound"):
            raise BadInput("s3_object_not_found", f"{where} does not exist") from None
        if code in ("AccessDenied", "403", "Forbidden"):
            raise BadInput("s3_access_denied", f"the function may not read {where}") from None
        raise  # throttling, 5xx: the platform's problem, reported as a FunctionError
    body = obj["Body"]
    try:
        if obj.get("ContentLength", 0) > MAX_BYTES:
            raise BadInput("s3_object_too_large",
                           f"{where} is {obj['ContentLength']} bytes, over the {MAX_BYTES} byte limit")
        data = body.read(MAX_BYTES + 1)  # bounded even if ContentLength was missing
    finally:
        body.close()
    if len(data) > MAX_BYTES:
        raise BadInput("s3_object_too_large", f"{where} is over the {MAX_BYTES} byte limit")
    return data


# --- options -------------------------------------------------------------------------------------

def _options(request: dict) -> tuple[str, dict]:
    """The detector and its parameters, each checked for type and range. A null option means its default."""
    detector = request.get("detector")
    if detector is None:
        detector = "face"
    if not isinstance(detector, str):
        raise BadInput("invalid_option", f"detector must be a string, not {_show(detector)}")
    if detector not in DETECTORS:
        raise BadInput("unknown_detector",
                       f"detector must be one of {', '.join(DETECTORS)}, not {_show(detector)}")
    defaults = HOG_DEFAULTS if detector == "people" else HAAR_DEFAULTS
    params = dict(defaults)
    params["scale_factor"] = _number(request, "scale_factor", float, 1.01, 2.0, defaults["scale_factor"])
    # HOG has no neighbour count: checked like the rest so one form fits all, then ignored.
    min_neighbors = _number(request, "min_neighbors", int, 0, 100, HAAR_DEFAULTS["min_neighbors"])
    if detector != "people":
        params["min_neighbors"] = min_neighbors
    params["min_size"] = _size(request, "min_size", [30, 30])
    params["max_size"] = _size(request, "max_size", None)
    smallest, largest = params["min_size"], params["max_size"]
    if largest and any(mx < mn for mx, mn in zip(largest, smallest, strict=True)):
        raise BadInput("invalid_option", "max_size must not be smaller than min_size")
    params["max_side"] = _number(request, "max_side", int, 32, MAX_SIDE, MAX_SIDE)
    return detector, params


def _number(request: dict, name: str, kind: type, low, high, default):
    """A finite number in [low, high]; for int options a whole one. Strings are parsed (query strings)."""
    value = request.get(name)
    if value is None:
        return default
    number = value
    if isinstance(value, str) and len(value) <= 32:  # no option needs more digits than that
        try:
            number = float(value)
        except ValueError:
            pass
    # Booleans are ints to Python, not to users; NaN and infinities fail the range check below.
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise BadInput("invalid_option", f"{name} must be a number, not {_show(value)}")
    if kind is int and isinstance(number, float) and math.isfinite(number) and not number.is_integer():
        raise BadInput("invalid_option", f"{name} must be a whole number, not {_show(value)}")
    if not low <= number <= high:  # compares ints of any size exactly, before float() could overflow
        raise BadInput("invalid_option", f"{name} must be between {low} and {high}, not {_show(value)}")
    return kind(number)


def _size(request: dict, name: str, default):
    """A size as [w, h], a single number for a square, or "WxH" / "W,H" from a query string."""
    value = request.get(name)
    if value is None:
        return default
    parts = value
    if isinstance(value, str):
        parts = value.lower().replace("x", ",").split(",")
    elif not isinstance(value, list):
        parts = [value]
    if len(parts) == 1:
        parts = [parts[0], parts[0]]
    if len(parts) != 2 or any(part is None for part in parts):
        raise BadInput("invalid_option", f"{name} must be [width, height], not {_show(value)}")
    return [_number({name: part}, name, int, 1, 20000, None) for part in parts]


def _show(value) -> str:
    """A value for an error message, cut short: the request may hold megabytes."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- decoding ------------------------------------------------------------------------------------

def _decode(data: bytes) -> tuple[np.ndarray, str]:
    if not data:
        raise BadInput("empty_image", "the image is empty (0 bytes)")
    fmt, width, height = _inspect(data)
    if width * height > MAX_PIXELS:  # from the header, before a byte of pixel data is decoded
        raise BadInput("image_too_large", f"{width}x{height} is over the {MAX_PIXELS} pixel limit")
    # IMREAD_COLOR applies the EXIF orientation, as cv2.imread does for the same file.
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise BadInput("corrupt_image", f"OpenCV cannot decode this {fmt.upper()} file")
    return image, fmt


def _inspect(data: bytes) -> tuple[str, int, int]:
    """Format and size from the header, and whether the file is complete."""
    if data.startswith(b"\xff\xd8\xff"):
        return ("jpeg", *_jpeg_size(data))
    if data.startswith(PNG_SIGNATURE):
        return ("png", *_png_size(data))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ("webp", *_webp_size(data))
    if data.startswith(b"BM"):
        return ("bmp", *_bmp_size(data))
    for magic, name in OTHER_IMAGE_MAGIC.items():
        if data.startswith(magic):
            raise BadInput("unsupported_format", f"{name.upper()} images are not supported; send {SUPPORTED}")
    raise BadInput("not_an_image", f"the file is not a {SUPPORTED} image")


def _png_size(data: bytes) -> tuple[int, int]:
    # Walk the chunks to IEND: libpng would otherwise fail late, or return a partly black image.
    pos, size, end = len(PNG_SIGNATURE), None, len(data)
    while True:
        if pos + 8 > end:
            raise BadInput("truncated_image", "the PNG file is truncated")
        length, kind = struct.unpack_from(">I4s", data, pos)
        if pos + 12 + length > end:
            raise BadInput("truncated_image", "the PNG file is truncated")
        if size is None:
            if kind != b"IHDR" or length < 13:
                raise BadInput("corrupt_image", "the PNG file has no IHDR header")
            size = struct.unpack_from(">II", data, pos + 8)
        if kind == b"IEND":
            break
        pos += 12 + length
    if not all(size):
        raise BadInput("corrupt_image", "the PNG header says the image is empty")
    return size


def _jpeg_size(data: bytes) -> tuple[int, int]:
    # Walk the segments to the first scan; the frame header (SOFn) before it holds the size.
    pos, size, end = 2, None, len(data)
    while True:
        if pos + 4 > end:
            raise BadInput("truncated_image", "the JPEG file is truncated")
        if data[pos] != 0xFF:
            raise BadInput("corrupt_image", "the JPEG file has a broken segment structure")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if marker == 0xD9:
            raise BadInput("corrupt_image", "the JPEG file ends before any image data")
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            raise BadInput("corrupt_image", "the JPEG file has a broken segment structure")
        if pos + 2 + length > end:
            raise BadInput("truncated_image", "the JPEG file is truncated")
        if marker in JPEG_SOF and length >= 7:
            height, width = struct.unpack_from(">HH", data, pos + 5)
            size = (width, height)
        if marker == 0xDA:
            break
        pos += 2 + length
    if not size or not all(size):
        raise BadInput("corrupt_image", "the JPEG file has no usable frame header")
    # libjpeg pads a cut-off scan with grey and only warns. Entropy-coded data
    # never contains FF D9, so a complete file has one after the first scan.
    if data.rfind(b"\xff\xd9", pos) == -1:
        raise BadInput("truncated_image", "the JPEG file is truncated (no end-of-image marker)")
    return size


def _webp_size(data: bytes) -> tuple[int, int]:
    """The canvas of an extended WebP (VP8X), else the frame size of its lossy (VP8) or lossless (VP8L) bitstream.

    libwebp refuses a still VP8X whose bitstream differs from its canvas, and keeps animation frames inside it.
    """
    if len(data) < 30 or struct.unpack_from("<I", data, 4)[0] + 8 > len(data):
        raise BadInput("truncated_image", "the WebP file is truncated")
    kind = data[12:16]
    if kind == b"VP8X":
        width, height = (int.from_bytes(data[at:at + 3], "little") + 1 for at in (24, 27))
    elif kind == b"VP8L" and data[20] == 0x2F:
        bits = struct.unpack_from("<I", data, 21)[0]
        width, height = (bits & 0x3FFF) + 1, (bits >> 14 & 0x3FFF) + 1
    elif kind == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = (v & 0x3FFF for v in struct.unpack_from("<HH", data, 26))
    else:
        raise BadInput("corrupt_image", "the WebP file has no VP8, VP8L or VP8X header")
    if not width or not height:
        raise BadInput("corrupt_image", "the WebP header says the image is empty")
    return width, height


def _bmp_size(data: bytes) -> tuple[int, int]:
    if len(data) < 26:
        raise BadInput("truncated_image", "the BMP file is truncated")
    offset, header_size = struct.unpack_from("<II", data, 10)
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sizes
        (width, height, bits), compression = struct.unpack_from("<HHxxH", data, 18), 0
    elif header_size >= 40 and len(data) >= 34:  # BITMAPINFOHEADER and its successors
        width, height, bits, compression = struct.unpack_from("<iixxHI", data, 18)
        height = abs(height)  # negative: rows stored top-down
    else:
        raise BadInput("corrupt_image", "the BMP file has no usable header")
    if width <= 0 or height == 0:
        raise BadInput("corrupt_image", "the BMP header says the image is empty")
    if compression in BMP_UNCOMPRESSED and width * height <= MAX_PIXELS:
        row = (width * bits + 31) // 32 * 4
        if offset + row * height > len(data):
            raise BadInput("truncated_image", "the BMP file is truncated")
    return width, height


# --- detection -----------------------------------------------------------------------------------

def _run_detector(detector: str, image: np.ndarray, params: dict) -> list[dict]:
    height, width = image.shape[:2]
    _check_budget(detector, width, height, params)
    scale = 1.0
    if max(width, height) > params["max_side"]:
        scale = params["max_side"] / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    # Sizes are given in original pixels, like the boxes; the search runs on the downscaled image.
    min_size = _scaled(params["min_size"], scale)
    max_size = _scaled(params["max_size"], scale) if params["max_size"] else (0, 0)
    if detector == "people":
        found = _people(image, params, min_size, max_size)
    else:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        # Every window the cascade accepts, grouped below as OpenCV would group them (see _group).
        rects, _ = CLASSIFIERS[detector].detectMultiScale2(
            gray, scaleFactor=params["scale_factor"], minNeighbors=0, minSize=min_size, maxSize=max_size,
        )
        rects, neighbours = _group(rects, params["min_neighbors"])
        found = [(rect, int(n)) for rect, n in zip(rects, neighbours, strict=True)]
    return [_box(LABELS[detector], rect, score, scale, width, height) for rect, score in found]


def _check_budget(detector: str, width: int, height: int, params: dict) -> None:
    """Refuses a search over the detector's SEARCH_BUDGET, naming the max_side that fits."""

    def pixels(side: int) -> int:
        scale = min(1.0, side / max(width, height))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        max_size = _scaled(params["max_size"], scale) if params["max_size"] else (0, 0)
        return _pyramid_pixels(detector, *size, params["scale_factor"], _scaled(params["min_size"], scale), max_size)

    side = min(params["max_side"], max(width, height))
    needed = pixels(side)
    if needed <= SEARCH_BUDGET[detector]:
        return
    fits = side
    while fits > 32 and pixels(fits) > SEARCH_BUDGET[detector]:
        fits = max(32, int(fits * 0.95))
    budget = SEARCH_BUDGET[detector] / 1e6
    raise BadInput("invalid_option",
                   f"scale_factor {params['scale_factor']} on this image scans {needed / 1e6:.0f} MP of image pyramid, "
                   f"over the {budget:.0f} MP one {detector} search may scan; raise scale_factor, or set max_side "
                   f"to {fits} or less")


def _people(image: np.ndarray, params: dict, min_size, max_size) -> list:
    rects, weights = _hog_detect(image, params)
    if len(rects) == 0:
        return []
    scores = [float(w) for w in weights]
    keep = cv2.dnn.NMSBoxes([list(map(int, r)) for r in rects], scores, 0.0, params["nms_threshold"])
    found = [(rects[i], round(scores[i], 4)) for i in np.ravel(keep)]
    return [
        (r, s) for r, s in found
        if r[2] >= min_size[0] and r[3] >= min_size[1]
        and (not max_size[0] or (r[2] <= max_size[0] and r[3] <= max_size[1]))
    ]


def _hog_detect(image: np.ndarray, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """HOGDescriptor.detectMultiScale(image, winStride, padding, scale) step by step, with the same result.

    The same pyramid (OpenCV keeps the first level even when the image is smaller than the window,
    and then reads outside it: such a level is skipped here), the same resizing, the same windows
    per level; then its grouping (_group, not quadratic) and its clipping to the image.
    """
    height, width = image.shape[:2]
    win_w, win_h = HOG.winSize
    stride, padding = tuple(params["win_stride"]), tuple(params["padding"])
    rects, weights = [], []
    for scale in _hog_levels(width, height, params["scale_factor"]):
        size = (round(width / scale), round(height / scale))  # cvRound: Python rounds halves to even too
        if not _fits_hog_window(*size, padding):
            continue
        level = image if size == (width, height) else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR_EXACT)
        found, found_weights = HOG.detect(level, 0, stride, padding)
        for (x, y), weight in zip(np.reshape(found, (-1, 2)), np.ravel(found_weights), strict=True):
            rects.append((round(x * scale), round(y * scale), round(win_w * scale), round(win_h * scale)))
            weights.append(weight)
    rects, weights = _group(np.array(rects, np.int64).reshape(-1, 4), HOG_GROUP_THRESHOLD, np.array(weights))
    x0, y0 = np.maximum(rects[:, 0], 0), np.maximum(rects[:, 1], 0)
    x1, y1 = np.minimum(rects[:, 0] + rects[:, 2], width), np.minimum(rects[:, 1] + rects[:, 3], height)
    inside = (x1 > x0) & (y1 > y0)
    return np.column_stack([x0, y0, x1 - x0, y1 - y0])[inside], weights[inside]


def _hog_levels(width: int, height: int, scale_factor: float) -> list[float]:
    """The scales of OpenCV's HOG pyramid: up to nlevels, while the image still holds a window."""
    win_w, win_h = HOG.winSize
    scales, scale = [], 1.0
    for level in range(HOG.nlevels):
        scales.append(scale)
        if round(width / scale) < win_w or round(height / scale) < win_h:
            return scales[:max(level, 1)]
        scale *= scale_factor
    return scales


def _fits_hog_window(width: int, height: int, padding) -> bool:
    """Whether the padded image holds at least one HOG window.

    OpenCV counts the windows of an image lower or narrower than the window as a negative
    number that it then walks as unsigned (SIGSEGV).
    """
    win_w, win_h = HOG.winSize
    return width + 2 * padding[0] >= win_w and height + 2 * padding[1] >= win_h


def _pyramid_pixels(detector: str, width: int, height: int, scale_factor: float, min_size, max_size) -> int:
    """Pixels in the levels a search of a width x height image scans: its time grows with them, and
    for a cascade its memory too (OpenCV holds the integral images of every level at once)."""
    if detector == "people":
        return sum(round(width / s) * round(height / s) for s in _hog_levels(width, height, scale_factor))
    (win_w, win_h), total, factor = CASCADE_WINDOWS[detector], 0, 1.0
    while True:  # the levels CascadeClassifier::detectMultiScale keeps
        window, level = (round(win_w * factor), round(win_h * factor)), (round(width / factor), round(height / factor))
        if level[0] <= win_w or level[1] <= win_h or (max_size[0] and window[0] > max_size[0]):
            return total
        if window[0] >= min_size[0] and window[1] >= min_size[1]:
            total += level[0] * level[1]
        factor *= scale_factor


# What one search may scan: a detector's whole pyramid (from its own window up) at its default
# scale_factor on a MAX_SIDE square. That is what default options scan on an image over MAX_SIDE
# (the default min_size, 30 original pixels, falls below the window in the copy), so it is the case
# bench/detector_worst_case.py measures, and no min_size or max_size goes beyond it. A smaller
# scale_factor does on large images (1.01 at 1600 px: 59 s and 930 MB), and is refused there.
SEARCH_BUDGET = {
    detector: _pyramid_pixels(detector, MAX_SIDE, MAX_SIDE,
                              (HOG_DEFAULTS if detector == "people" else HAAR_DEFAULTS)["scale_factor"], (1, 1), (0, 0))
    for detector in DETECTORS
}


# --- grouping ------------------------------------------------------------------------------------
# OpenCV groups the windows a detector accepts with cv::partition, which compares every pair: on
# crafted content (a tiled eye, 100k accepted windows in 1600x1600) that alone took 27 s. _group
# gives the same boxes, scores and order, comparing only windows of near sizes in nearby cells.

def _group(rects, threshold: int, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """cv::groupRectangles(rects, threshold, 0.2) as cascades use it (score: windows in the group),
    or with `weights` HOGDescriptor::groupRectangles (score: the best weight in the group)."""
    rects = np.asarray(rects, np.int64).reshape(-1, 4)
    if threshold <= 0 or len(rects) == 0:
        return rects, (np.ones(len(rects), np.int64) if weights is None else np.asarray(weights, np.float64))
    labels = _partition(rects)
    classes = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=classes)
    sums = np.stack([np.bincount(labels, weights=rects[:, k], minlength=classes) for k in range(4)], axis=1)
    if weights is None:  # averaged in single precision, as cv::groupRectangles does
        mean = sums.astype(np.float32) * (np.float32(1) / counts.astype(np.float32))[:, None]
        scores = counts
    else:
        mean = sums * (1.0 / counts)[:, None]
        scores = np.full(classes, -np.inf)
        np.maximum.at(scores, labels, np.asarray(weights, np.float64))
    mean = np.rint(mean).astype(np.int64)  # cvRound: halves to even
    kept = np.flatnonzero(counts > threshold)
    kept = kept[~_nested(mean[kept], counts[kept])]
    return mean[kept], scores[kept]


def _nested(rects: np.ndarray, counts: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Groups inside another group (grown by 20%) that has more windows: OpenCV drops them."""
    grow_x, grow_y = np.rint(rects[:, 2] * GROUP_EPS), np.rint(rects[:, 3] * GROUP_EPS)
    nested = np.zeros(len(rects), bool)
    for start in range(0, len(rects), chunk):
        r, n = rects[start:start + chunk, None], counts[start:start + chunk, None]
        inside = ((r[..., 0] >= rects[:, 0] - grow_x) & (r[..., 1] >= rects[:, 1] - grow_y)
                  & (r[..., 0] + r[..., 2] <= rects[:, 0] + rects[:, 2] + grow_x)
                  & (r[..., 1] + r[..., 3] <= rects[:, 1] + rects[:, 3] + grow_y)
                  & ((counts > np.maximum(3, n)) | (n < 3)))
        np.fill_diagonal(inside[:, start:], False)
        nested[start:start + chunk] = inside.any(axis=1)
    return nested


def _partition(rects: np.ndarray) -> np.ndarray:
    """cv::partition with cv::SimilarRects(0.2): the connected groups of similar rectangles,
    numbered in the order of their first member."""
    parent = np.arange(len(rects))
    sizes, level = np.unique(rects[:, 2:], axis=0, return_inverse=True)
    order = np.argsort(level.ravel(), kind="stable")
    bounds = np.searchsorted(level.ravel()[order], np.arange(len(sizes) + 1))
    for a, (wa, ha) in enumerate(sizes.tolist()):
        for b in range(a, len(sizes)):
            wb, hb = sizes[b].tolist()
            if wb - wa > GROUP_EPS * (wa + ha) + 1:  # sizes ascend in width: no later one is similar either
                break
            delta = GROUP_EPS * (min(wa, wb) + min(ha, hb)) * 0.5  # as SimilarRects computes it
            if wb - wa <= 2 * delta and abs(hb - ha) <= 2 * delta:
                pairs = _similar_pairs(rects, order[bounds[a]:bounds[a + 1]], order[bounds[b]:bounds[b + 1]], delta)
                parent = _union(parent, *pairs)
    return np.unique(_roots(parent), return_inverse=True)[1].ravel()


def _similar_pairs(rects: np.ndarray, a: np.ndarray, b: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i in a, j in b) whose four edges are each within delta: only windows in neighbouring
    cells of side floor(delta) + 1 can be, so only those are compared."""
    cell = math.floor(delta) + 1
    cells_a, cells_b = rects[a, :2] // cell, rects[b, :2] // cell
    low = np.minimum(cells_a.min(axis=0), cells_b.min(axis=0)) - 1
    span = int(max(cells_a[:, 1].max(), cells_b[:, 1].max()) - low[1]) + 3
    keys_b = (cells_b[:, 0] - low[0]) * span + cells_b[:, 1] - low[1]
    order = np.argsort(keys_b, kind="stable")
    keys_b, b = keys_b[order], b[order]
    found_i, found_j = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            keys = (cells_a[:, 0] + dx - low[0]) * span + cells_a[:, 1] + dy - low[1]
            first = np.searchsorted(keys_b, keys, "left")
            count = np.searchsorted(keys_b, keys, "right") - first
            if not count.any():
                continue
            i = np.repeat(a, count)
            j = b[np.repeat(first - (np.cumsum(count) - count), count) + np.arange(count.sum())]
            r1, r2 = rects[i], rects[j]
            near = ((np.abs(r1[:, 0] - r2[:, 0]) <= delta) & (np.abs(r1[:, 1] - r2[:, 1]) <= delta)
                    & (np.abs(r1[:, 0] + r1[:, 2] - r2[:, 0] - r2[:, 2]) <= delta)
                    & (np.abs(r1[:, 1] + r1[:, 3] - r2[:, 1] - r2[:, 3]) <= delta))
            found_i.append(i[near])
            found_j.append(j[near])
    return np.concatenate(found_i), np.concatenate(found_j)


def _union(parent: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Joins the trees of i and j pairwise; a root always hangs below a smaller index, so
    each tree's root is its first member."""
    while len(i):
        parent = _roots(parent)
        root_i, root_j = parent[i], parent[j]
        apart = root_i != root_j
        i, j, root_i, root_j = i[apart], j[apart], root_i[apart], root_j[apart]
        np.minimum.at(parent, np.maximum(root_i, root_j), np.minimum(root_i, root_j))
    return parent


def _roots(parent: np.ndarray) -> np.ndarray:
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return parent
        parent = grand


def _scaled(size, scale: float) -> tuple[int, int]:
    return tuple(max(1, round(v * scale)) for v in size)


def _box(label: str, rect, score, scale: float, width: int, height: int) -> dict:
    x, y, w, h = (int(v) for v in rect)
    if scale != 1.0:
        x, y, w, h = (round(v / scale) for v in (x, y, w, h))
        w, h = min(w, width - x), min(h, height - y)
    return {"label": label, "x": x, "y": y, "w": w, "h": h, "score": score}


# --- Function URL / API Gateway ------------------------------------------------------------------

def _is_http(event) -> bool:
    return isinstance(event, dict) and "requestContext" in event and (
        "body" in event or "httpMethod" in event or "rawPath" in event
    )


def _http_response(event: dict) -> dict:
    """Binary body = the image, options in the query string; a JSON body = the same event as direct."""
    try:
        headers = {str(k).lower(): v for k, v in _http_map(event, "headers").items()}
        content_type = str(headers.get("content-type", "")).split(";")[0].strip().lower()
        options = _http_map(event, "queryStringParameters")
        raw = _http_body(event.get("body"), bool(event.get("isBase64Encoded")))
        if content_type == "application/json":
            request = _json_object(raw)
            result = _result_or_error(request, lambda: _fetch(request))
        elif raw is None:
            raise BadInput("missing_input", "send the image as the request body")
        else:
            result = _result_or_error(options, lambda: raw)
    except BadInput as exc:
        result = exc.result()
    status = HTTP_STATUS.get(result["error"]["code"], 400) if "error" in result else 200
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(result),
        "isBase64Encoded": False,
    }


def _http_map(event: dict, field: str) -> dict:
    value = event.get(field) or {}
    if not isinstance(value, dict):
        raise BadInput("invalid_input", f"{field} must be an object, not {_show(value)}")
    return value


def _http_body(body, is_base64: bool) -> bytes | None:
    if body is None:
        return None
    if is_base64:
        return _b64decode(body, "body")
    return body.encode("utf-8") if isinstance(body, str) else b""


def _json_object(raw: bytes | None) -> dict:
    """Strict JSON (RFC 8259): no NaN or Infinity literals, and no key twice, since parsers
    disagree on which duplicate wins and the request would mean different things to each."""
    try:
        request = json.loads(raw or b"", parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except BadInput:
        raise
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise BadInput("invalid_input", "the request body is not valid JSON") from None
    if not isinstance(request, dict):
        raise BadInput("invalid_input", "the request body must be a JSON object")
    return request


def _refuse_constant(name: str):
    raise BadInput("invalid_input", f"the request body is not strict JSON ({name} is not a JSON number)")


def _unique_keys(pairs: list) -> dict:
    request = {}
    for key, value in pairs:
        if key in request:
            raise BadInput("invalid_input", f"the request body has the key {_show(key)} more than once")
        request[key] = value
    return request
