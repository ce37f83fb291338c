"""A rollout's steps, and the rules every weighted alias Slipway writes must keep. Pure.

Lambda's weighted alias serves `primary` and at most one extra version, the extra's share
(0 < w < 1) given in RoutingConfig.AdditionalVersionWeights. The local plane checks none of
this (it stores weight 1.5, two extra versions, $LATEST…), so Slipway checks what it writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from deploy.errors import UserError

CANARY, LINEAR = "canary", "linear"


@dataclass(frozen=True)
class Step:
    """At `at_s` seconds after the rollout started, the new version's share becomes `weight`
    (a "minute" is SLIPWAY_ROLLOUT_MINUTE seconds: the caller passes `minute_s`)."""

    at_s: int
    weight: float


def plan(strategy: str, percent: int, minutes: int, *, minute_s: int = 60) -> list[Step]:
    """canary: P %, then 100 % after M minutes. linear: P, 2P, … (below 100), then 100 %,
    each M minutes after the one before. The last step is always 1.0 (routing cleared)."""
    if strategy not in (CANARY, LINEAR):
        raise ValueError(f"{strategy!r} is not a weighted strategy")
    if not 1 <= percent <= 50 or not 1 <= minutes <= 60:
        raise ValueError(f"percent {percent} (1-50) or minutes {minutes} (1-60) out of range")
    every = minutes * minute_s
    if strategy == CANARY:
        shares = [percent]
    else:
        shares = [percent * n for n in range(1, math.ceil(100 / percent)) if percent * n < 100]
    steps = [Step(index * every, share / 100) for index, share in enumerate(shares)]
    return [*steps, Step(len(shares) * every, 1.0)]


def duration_s(strategy: str, percent: int, minutes: int, *, minute_s: int = 60) -> int:
    return plan(strategy, percent, minutes, minute_s=minute_s)[-1].at_s


def validate_routing(primary: str, weights: dict) -> None:
    """Refuse (`routing-invalid`) a weighted alias Lambda would not serve as meant: exactly one
    extra version, both published versions (digits: never $LATEST), the extra not the primary,
    its weight strictly between 0 and 1."""
    def refuse(why: str):
        raise UserError("routing-invalid", f"refusing to write alias routing primary={primary!r} "
                        f"weights={weights!r}: {why}")

    if not isinstance(primary, str) or not primary.isdigit():
        refuse("the primary must be a published version (digits), never $LATEST or an alias")
    if not isinstance(weights, dict) or len(weights) != 1:
        refuse("exactly one extra version is allowed")
    (extra, weight), = weights.items()
    if not isinstance(extra, str) or not extra.isdigit():
        refuse("the extra version must be a published version (digits)")
    if extra == primary:
        refuse("the extra version is the primary")
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight < 1:
        refuse("the weight must be strictly between 0 and 1")
