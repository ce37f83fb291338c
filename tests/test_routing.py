"""The step planner and the routing rules Slipway enforces (the local plane enforces none)."""

import pytest

from deploy.errors import UserError
from portal.deployments.routing import Step, duration_s, plan, validate_routing


def test_a_canary_is_its_percent_then_everything_after_its_minutes():
    assert plan("canary", 10, 5) == [Step(0, 0.10), Step(300, 1.0)]


def test_a_linear_rollout_adds_its_percent_every_step_and_ends_at_everything():
    steps = plan("linear", 30, 2, minute_s=10)
    assert steps == [Step(0, 0.3), Step(20, 0.6), Step(40, 0.9), Step(60, 1.0)]


def test_a_linear_percent_that_divides_100_never_writes_100_as_a_weight():
    steps = plan("linear", 25, 1)
    assert [step.weight for step in steps] == [0.25, 0.5, 0.75, 1.0]
    assert duration_s("linear", 10, 10) == 9 * 600  # 10 %, …, 90 %, then 100 % after the ninth step


@pytest.mark.parametrize("args", [("all_at_once", 10, 5), ("canary", 0, 5), ("canary", 51, 5), ("linear", 10, 61)])
def test_the_planner_refuses_what_is_not_a_weighted_plan(args):
    with pytest.raises(ValueError):
        plan(*args)


def test_valid_routing_passes():
    validate_routing("4", {"5": 0.1})


@pytest.mark.parametrize(("primary", "weights", "why"), [
    ("4", {"5": 1.5}, "between 0 and 1"),
    ("4", {"5": 1.0}, "between 0 and 1"),
    ("4", {"5": 0}, "between 0 and 1"),
    ("4", {"5": True}, "between 0 and 1"),
    ("4", {"5": 0.1, "6": 0.1}, "exactly one"),
    ("4", {}, "exactly one"),
    ("4", {"4": 0.1}, "is the primary"),
    ("$LATEST", {"5": 0.1}, "primary must be a published"),
    ("4", {"$LATEST": 0.1}, "extra version must be a published"),
    ("live", {"5": 0.1}, "primary must be a published"),
])
def test_invalid_routing_is_refused_with_the_reason(primary, weights, why):
    with pytest.raises(UserError) as caught:
        validate_routing(primary, weights)
    assert caught.value.code == "routing-invalid"
    assert why in caught.value.message
