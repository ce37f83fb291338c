"""The rollout settings' presets and rules (portal/deployments/strategies.py): pure, no database."""

from __future__ import annotations

import pytest

from portal.deployments import strategies

GOOD = {"function_name": "hello", "strategy": "canary", "percent": 10, "minutes": 5, "alarm": {},
        "extra_alarms": [], "probe_count": 3, "max_failures": 0}


def problems(**changes):
    return strategies.problems(**{**GOOD, **changes})


def test_every_preset_is_valid_and_names_itself():
    assert len(strategies.PRESETS) == 9
    for preset in strategies.PRESETS.values():
        percent, minutes = preset.percent or 10, preset.minutes or 5
        assert problems(strategy=preset.strategy, percent=percent, minutes=minutes) == {}
        assert strategies.preset_of(preset.strategy, percent, minutes) == preset.name


def test_settings_no_preset_has_are_custom():
    assert strategies.preset_of("canary", 20, 5) == ""
    assert strategies.preset_of("linear", 10, 4) == ""
    assert strategies.preset_of("all_at_once", 33, 7) == "AllAtOnce"


@pytest.mark.parametrize("strategy, percent, minutes, total", [
    ("canary", 10, 5, 5), ("linear", 10, 1, 9), ("linear", 30, 2, 6), ("linear", 50, 60, 60),
    ("all_at_once", 10, 5, 0)])
def test_the_total_counts_the_waits_before_100_percent(strategy, percent, minutes, total):
    assert strategies.total_minutes(strategy, percent, minutes) == total


@pytest.mark.parametrize("changes, field", [
    ({"percent": 0}, "percent"), ({"percent": 51}, "percent"), ({"percent": "10"}, "percent"),
    ({"minutes": 0}, "minutes"), ({"minutes": 61}, "minutes"), ({"minutes": True}, "minutes"),
    ({"strategy": "blue_green"}, "strategy")])
def test_percent_and_minutes_stay_in_their_ranges(changes, field):
    assert list(problems(**changes)) == [field]


def test_a_linear_rollout_longer_than_a_day_is_refused():
    assert problems(strategy="linear", percent=4, minutes=60) == {}  # 24 waits of an hour: exactly a day
    found = problems(strategy="linear", percent=3, minutes=60)  # 33 waits
    assert "1980 minutes" in found["minutes"][0] and "24 h" in found["minutes"][0]


def test_an_alarm_template_is_checked_key_by_key():
    assert problems(alarm={"metric": "Throttles", "threshold": 2, "period_s": 120}) == {}
    found = problems(alarm={"metric": "", "statistic": "p99", "comparison": ">", "periods": 11, "period_s": 45,
                            "threshold": "1", "colour": "red"})["alarm"]
    assert len(found) == 7
    assert any("unknown key 'colour'" in m for m in found)
    assert any("period_s must be 10, 30 or a multiple of 60" in m for m in found)
    assert problems(alarm=["Errors"])["alarm"] == ["the alarm template must be a JSON object"]
    assert problems(alarm={"periods": 10, "period_s": 86400})["alarm"][0].startswith("periods x period_s")


def test_a_normal_alarm_has_every_key():
    assert strategies.normal_alarm({}) == {}
    alarm = strategies.normal_alarm({"threshold": 3})
    assert alarm == {**strategies.ALARM_DEFAULTS, "threshold": 3.0}


def test_extra_alarms_must_carry_the_functions_prefix():
    assert problems(extra_alarms=["slipway-hello-p99"]) == {}
    found = problems(extra_alarms=["slipway-other-p99", "slipway-hello-", "slipway-hello-a", "slipway-hello-a"])
    assert len(found["extra_alarms"]) == 3  # another function's, the bare prefix, a name twice
    assert problems(extra_alarms="slipway-hello-p99")["extra_alarms"] == [
        "the extra alarms must be a list of alarm names"]


def test_probes_that_may_all_fail_would_never_fail_a_step():
    assert problems(probe_count=0, max_failures=0) == {}
    assert problems(probe_count=2, max_failures=1) == {}
    assert "would never fail a step" in problems(probe_count=2, max_failures=2)["probe_max_failures"][0]
    assert list(problems(probe_count=21)) == ["probe_count"]


def test_describe_says_the_settings_in_words():
    assert strategies.describe("canary", 10, 5) == "canary: 10 % for 5 min, then 100 %"
    assert strategies.describe("linear", 10, 1) == "linear: +10 % every 1 min (9 min in all)"
