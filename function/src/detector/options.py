"""The detector a request names and its options, each checked for type and range.

What may be set, its bounds and each family's defaults are in options.json beside this
module, which the portal's console form reads too: a bound changed there changes both.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from detector.errors import BadInput, show

SCHEMA = json.loads((Path(__file__).parent / "options.json").read_text())
DETECTORS = tuple(SCHEMA["detectors"])
FAMILIES = SCHEMA["detectors"]  # detector -> family
_OPTIONS = SCHEMA["options"]
_KINDS = {"number": float, "integer": int}
# Each option's upper bound: the schema's, or the function's environment's where the schema names a variable
# (max_side: DETECTOR_MAX_SIDE, the longer side of the copy searched; see detection.py for why 1600 px).
HIGH = {name: int(os.environ.get(spec["max_env"], spec["max"])) if "max_env" in spec else spec["max"]
        for name, spec in _OPTIONS.items()}
MAX_SIDE = HIGH["max_side"]

HAAR_DEFAULTS = {name: _OPTIONS[name]["default"]["haar"] for name in ("scale_factor", "min_neighbors", "min_size")}
# The usual settings for OpenCV's default people detector; NMS merges the
# overlapping windows that groupRectangles leaves behind. Not options: a request cannot set them.
HOG_DEFAULTS = {"scale_factor": _OPTIONS["scale_factor"]["default"]["hog"],
                "win_stride": [8, 8], "padding": [8, 8], "nms_threshold": 0.3}


def parse(request: dict) -> tuple[str, dict]:
    """The detector and its parameters, each checked for type and range. A null option means its default."""
    detector = request.get("detector")
    if detector is None:
        detector = SCHEMA["default_detector"]
    if not isinstance(detector, str):
        raise BadInput("invalid_option", f"detector must be a string, not {show(detector)}")
    if detector not in DETECTORS:
        raise BadInput("unknown_detector",
                       f"detector must be one of {', '.join(DETECTORS)}, not {show(detector)}")
    family = FAMILIES[detector]
    params = dict(HOG_DEFAULTS if family == "hog" else HAAR_DEFAULTS)
    params["scale_factor"] = _option(request, "scale_factor", family)
    # HOG has no neighbour count: checked like the rest so one form fits all, then ignored.
    min_neighbors = _option(request, "min_neighbors", family)
    if family in _OPTIONS["min_neighbors"]["default"]:
        params["min_neighbors"] = min_neighbors
    params["min_size"] = _option(request, "min_size", family)
    params["max_size"] = _option(request, "max_size", family)
    smallest, largest = params["min_size"], params["max_size"]
    if largest and any(mx < mn for mx, mn in zip(largest, smallest, strict=True)):
        raise BadInput("invalid_option", "max_size must not be smaller than min_size")
    params["max_side"] = _option(request, "max_side", family)
    return detector, params


def _option(request: dict, name: str, family: str):
    """One option by its schema entry: its bounds, and the family's default when absent or null."""
    spec, high = _OPTIONS[name], HIGH[name]
    default = spec["default"].get(family)
    if default == "max":
        default = high
    elif isinstance(default, list):
        default = list(default)  # the answer's own list, not the schema's
    if spec["type"] == "size":
        return _size(request, name, spec["min"], high, default)
    return _number(request, name, _KINDS[spec["type"]], spec["min"], high, default)


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
        raise BadInput("invalid_option", f"{name} must be a number, not {show(value)}")
    if kind is int and isinstance(number, float) and math.isfinite(number) and not number.is_integer():
        raise BadInput("invalid_option", f"{name} must be a whole number, not {show(value)}")
    if not low <= number <= high:  # compares ints of any size exactly, before float() could overflow
        raise BadInput("invalid_option", f"{name} must be between {low} and {high}, not {show(value)}")
    return kind(number)


def _size(request: dict, name: str, low: int, high: int, default):
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
        raise BadInput("invalid_option", f"{name} must be [width, height], not {show(value)}")
    return [_number({name: part}, name, int, low, high, None) for part in parts]
