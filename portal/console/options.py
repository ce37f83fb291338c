"""The detector's options as the console offers them, read from the schema the detector itself
validates with (function/src/detector/options.json): its detectors, each option's bounds and each
detector family's defaults. The web side never imports the detector (it loads OpenCV); it reads the file.

The portal's image holds the file at the same path relative to the application as the repository
does (see the Dockerfile), so SCHEMA_PATH is right in both.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "function" / "src" / "detector" / "options.json"


@functools.cache
def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def schema() -> dict:
    return _load(SCHEMA_PATH)


def detectors() -> list[str]:
    return list(schema()["detectors"])


def family(detector: str) -> str:
    return schema()["detectors"][detector]


def families() -> list[str]:
    return list(schema()["families"])


def names() -> list[str]:
    """The options a request may set besides the detector, in the schema's order."""
    return list(schema()["options"])


def spec(name: str) -> dict:
    return schema()["options"][name]


def bounds(name: str) -> tuple:
    """(low, high) as the form applies them: the detector's own. Where the function's environment may
    raise the max (max_env), the form cannot see it and stops only what no image needs: a side over
    the largest a size may have."""
    option = spec(name)
    if "max_env" in option:
        return option["min"], max(spec(other)["max"] for other in names() if spec(other)["type"] == "size")
    return option["min"], option["max"]


def placeholder(name: str, family_name: str) -> str:
    """What an empty field means for a detector of that family."""
    defaults = spec(name)["default"]
    if family_name not in defaults:
        return "not used"
    default = defaults[family_name]
    if default is None:
        return "default: none"
    if default == "max":
        return "default: the max"
    if isinstance(default, list):
        return "default: " + "x".join(str(side) for side in default)
    return f"default: {default}"
