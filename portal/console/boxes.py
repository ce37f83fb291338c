"""Detector boxes side by side: IoU, matching, and the diff a person can read.

Shared by the console's compare mode and the verify step's golden gate, so
that what the console calls "moved" is what fails a deploy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Below this overlap two boxes are different objects, not one that moved.
SAME_OBJECT_IOU = 0.3


def iou(a: dict, b: dict) -> float:
    x1, y1 = max(a["x"], b["x"]), max(a["y"], b["y"])
    x2, y2 = min(a["x"] + a["w"], b["x"] + b["w"]), min(a["y"] + a["h"], b["y"] + b["h"])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    union = a["w"] * a["h"] + b["w"] * b["h"] - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Pair:
    left: dict
    right: dict
    iou: float


@dataclass
class Matching:
    """`same`: pairs at or above the threshold; `moved`: the same object (same label,
    some overlap) below it; `only_left` / `only_right`: no counterpart at all."""

    threshold: float
    same: list[Pair] = field(default_factory=list)
    moved: list[Pair] = field(default_factory=list)
    only_left: list[dict] = field(default_factory=list)
    only_right: list[dict] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not (self.moved or self.only_left or self.only_right)

    def state_of(self, side: str, index: int) -> str:
        """"same", "moved" or "unmatched" for box number `index` of `side` ("left"/"right")."""
        return self._states[side].get(index, "unmatched")

    _states: dict = field(default_factory=lambda: {"left": {}, "right": {}}, repr=False)


def match(left: list[dict], right: list[dict], threshold: float) -> Matching:
    """Greedy one-to-one matching, best overlap first, labels must agree."""
    candidates = sorted(((iou(a, b), i, j) for i, a in enumerate(left) for j, b in enumerate(right)
                         if a.get("label") == b.get("label")), key=lambda c: (-c[0], c[1], c[2]))
    result = Matching(threshold)
    used_left, used_right = set(), set()
    for overlap, i, j in candidates:
        if overlap < SAME_OBJECT_IOU or i in used_left or j in used_right:
            continue
        used_left.add(i)
        used_right.add(j)
        kind = "same" if overlap >= threshold else "moved"
        getattr(result, kind).append(Pair(left[i], right[j], overlap))
        result._states["left"][i] = result._states["right"][j] = kind
    result.only_left = [box for i, box in enumerate(left) if i not in used_left]
    result.only_right = [box for j, box in enumerate(right) if j not in used_right]
    return result


def describe(box: dict) -> str:
    return f"{box.get('label', '?')} at ({box['x']},{box['y']} {box['w']}x{box['h']})"


def diff(expected: list[dict], got: list[dict], threshold: float) -> list[str]:
    """What differs, one line per box, as the verify step's log shows it; [] when they agree."""
    found = match(expected, got, threshold)
    lines = []
    if len(expected) != len(got):
        lines.append(f"expected {len(expected)} box(es), got {len(got)}")
    for pair in found.moved:
        lines.append(f"moved: {describe(pair.left)} is now {describe(pair.right)} "
                     f"(IoU {pair.iou:.2f} < {threshold:.2f})")
    lines += [f"missing: {describe(box)}" for box in found.only_left]
    lines += [f"new: {describe(box)}" for box in found.only_right]
    return lines
