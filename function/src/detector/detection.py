"""Detection: a Haar cascade or the HOG people detector on a copy at most max_side pixels on its longer
side, the boxes mapped back to the original's pixels, within a time budget.

The time a search takes grows with the pixels of the image pyramid it scans; a search over its
detector's SEARCH_BUDGET is refused before it starts, naming the max_side that fits.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from detector.errors import BadInput
from detector.grouping import group
from detector.options import DETECTORS, FAMILIES, HAAR_DEFAULTS, HOG_DEFAULTS, MAX_SIDE

# MAX_SIDE (options.json, max_side): the detectors search a copy whose longer side is at most this,
# and map the boxes back: the time a search takes grows with the pixels searched; at 1600 px the
# worst content found takes 9 s and 430 MB at one CPU (bench/detector_worst_case.py, README there),
# inside the function's 30 s and 1024 MB. Photos up to this size get exactly the boxes OpenCV finds;
# max_side may only lower it.

# One per detector of the haar family in options.json (and in step with function/prune_deps.py).
HAAR_CASCADES = {
    "face": "haarcascade_frontalface_default.xml",
    "eye": "haarcascade_eye.xml",
    "fullbody": "haarcascade_fullbody.xml",
    "upperbody": "haarcascade_upperbody.xml",
    "cat_face": "haarcascade_frontalcatface.xml",
}
if set(HAAR_CASCADES) != {name for name, family in FAMILIES.items() if family == "haar"}:
    raise RuntimeError("options.json and HAAR_CASCADES name different Haar detectors")  # fails the cold start
LABELS = {**{name: name for name in HAAR_CASCADES}, "people": "person"}
# What HOGDescriptor.detectMultiScale uses by default: groups need more than this many windows.
HOG_GROUP_THRESHOLD = 2


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


def run(detector: str, image: np.ndarray, params: dict) -> list[dict]:
    height, width = image.shape[:2]
    check_budget(detector, width, height, params)
    scale = 1.0
    if max(width, height) > params["max_side"]:
        scale = params["max_side"] / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    # Sizes are given in original pixels, like the boxes; the search runs on the downscaled image.
    min_size = _scaled(params["min_size"], scale)
    max_size = _scaled(params["max_size"], scale) if params["max_size"] else (0, 0)
    if FAMILIES[detector] == "hog":
        found = _people(image, params, min_size, max_size)
    else:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        # Every window the cascade accepts, grouped below as OpenCV would group them (see grouping.py).
        rects, _ = CLASSIFIERS[detector].detectMultiScale2(
            gray, scaleFactor=params["scale_factor"], minNeighbors=0, minSize=min_size, maxSize=max_size,
        )
        rects, neighbours = group(rects, params["min_neighbors"])
        found = [(rect, int(n)) for rect, n in zip(rects, neighbours, strict=True)]
    return [_box(LABELS[detector], rect, score, scale, width, height) for rect, score in found]


def check_budget(detector: str, width: int, height: int, params: dict) -> None:
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
    rects, weights = hog_detect(image, params)
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


def hog_detect(image: np.ndarray, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """HOGDescriptor.detectMultiScale(image, winStride, padding, scale) step by step, with the same result.

    The same pyramid (OpenCV keeps the first level even when the image is smaller than the window,
    and then reads outside it: such a level is skipped here), the same resizing, the same windows
    per level; then its grouping (grouping.group, not quadratic) and its clipping to the image.
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
    rects, weights = group(np.array(rects, np.int64).reshape(-1, 4), HOG_GROUP_THRESHOLD, np.array(weights))
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
    if FAMILIES[detector] == "hog":
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
                              (HOG_DEFAULTS if FAMILIES[detector] == "hog" else HAAR_DEFAULTS)["scale_factor"],
                              (1, 1), (0, 0))
    for detector in DETECTORS
}


def _scaled(size, scale: float) -> tuple[int, int]:
    return tuple(max(1, round(v * scale)) for v in size)


def _box(label: str, rect, score, scale: float, width: int, height: int) -> dict:
    x, y, w, h = (int(v) for v in rect)
    if scale != 1.0:
        x, y, w, h = (round(v / scale) for v in (x, y, w, h))
        w, h = min(w, width - x), min(h, height - y)
    return {"label": label, "x": x, "y": y, "w": w, "h": h, "score": score}
