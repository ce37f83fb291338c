"""An environment's rollout settings: the presets named like AWS CodeDeploy's, and the
rules the settings follow before any rollout uses them (the engine, rollout.py, trusts them).

Pure: no database, no AWS. `problems(...)` answers per setting, so the environment form
and the API put each message on its own field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from portal.deployments import routing

ALL_AT_ONCE, CANARY, LINEAR = "all_at_once", "canary", "linear"  # Environment.Strategy's values
PERCENT_RANGE = (1, 50)
MINUTES_RANGE = (1, 60)
MAX_TOTAL_MINUTES = 24 * 60  # a rollout longer than a day is a release nobody is watching
MAX_PROBES = 20
MAX_EXTRA_ALARMS = 10
ALARM_NAME = re.compile(r"^[\x20-\x7e]{1,255}$")  # CloudWatch: printable ASCII, at most 255 characters


@dataclass(frozen=True)
class Preset:
    name: str
    strategy: str
    percent: int | None  # None: the environment's own (unused by all at once)
    minutes: int | None


PRESETS = {p.name: p for p in (
    Preset("AllAtOnce", ALL_AT_ONCE, None, None),
    Preset("Canary10Percent5Minutes", CANARY, 10, 5),
    Preset("Canary10Percent10Minutes", CANARY, 10, 10),
    Preset("Canary10Percent15Minutes", CANARY, 10, 15),
    Preset("Canary10Percent30Minutes", CANARY, 10, 30),
    Preset("Linear10PercentEvery1Minute", LINEAR, 10, 1),
    Preset("Linear10PercentEvery2Minutes", LINEAR, 10, 2),
    Preset("Linear10PercentEvery3Minutes", LINEAR, 10, 3),
    Preset("Linear10PercentEvery10Minutes", LINEAR, 10, 10),
)}

# The alarm template (Environment.rollout_alarm): its keys, their defaults and what each may be.
STATISTICS = ("Average", "Sum", "Minimum", "Maximum", "SampleCount")
COMPARISONS = ("GreaterThanThreshold", "GreaterThanOrEqualToThreshold", "LessThanThreshold",
               "LessThanOrEqualToThreshold")
ALARM_DEFAULTS = {"namespace": "AWS/Lambda", "metric": "Errors", "statistic": "Sum", "threshold": 1.0,
                  "comparison": "GreaterThanOrEqualToThreshold", "periods": 1, "period_s": 60}
METRIC_PART = re.compile(r"^[\x20-\x7e]{1,255}$")  # CloudWatch's namespace and metric names: printable ASCII


def preset_of(strategy: str, percent: int, minutes: int) -> str:
    """The preset these settings are, or "" (custom). All at once is AllAtOnce whatever the numbers."""
    if strategy == ALL_AT_ONCE:
        return "AllAtOnce"
    return next((p.name for p in PRESETS.values() if (p.strategy, p.percent, p.minutes) == (strategy, percent,
                                                                                              minutes)), "")


def total_minutes(strategy: str, percent: int, minutes: int) -> int:
    """How long a rollout that is never paused or aborted takes, from its first weight to 100 %
    (the engine's own plan: canary one wait, linear ceil(100 / P) - 1)."""
    if strategy not in (CANARY, LINEAR):
        return 0
    return routing.plan(strategy, percent, minutes, minute_s=1)[-1].at_s


def describe(strategy: str, percent: int, minutes: int) -> str:
    """The settings in words, for pages and notices."""
    if strategy == CANARY:
        return f"canary: {percent} % for {minutes} min, then 100 %"
    if strategy == LINEAR:
        return f"linear: +{percent} % every {minutes} min ({total_minutes(strategy, percent, minutes)} min in all)"
    return "all at once"


def _bounded(value, low: int, high: int, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{what} must be a whole number"
    return "" if low <= value <= high else f"{what} must be {low}-{high}"


def timing_problems(strategy: str, percent, minutes) -> dict[str, list[str]]:
    """P in 1-50 %, M in 1-60 minutes, the whole rollout at most 24 hours."""
    found: dict[str, list[str]] = {}
    if strategy not in (ALL_AT_ONCE, CANARY, LINEAR):
        return {"strategy": [f"{strategy!r} is not a strategy: all_at_once, canary or linear"]}
    for field, value, (low, high), what in (("percent", percent, PERCENT_RANGE, "the percentage"),
                                            ("minutes", minutes, MINUTES_RANGE, "a step's minutes")):
        message = _bounded(value, low, high, what)
        if message:
            found[field] = [message]
    if not found and strategy != ALL_AT_ONCE:
        total = total_minutes(strategy, percent, minutes)
        if total > MAX_TOTAL_MINUTES:
            found["minutes"] = [f"{describe(strategy, percent, minutes)} takes {total} minutes; a rollout may take "
                                f"at most {MAX_TOTAL_MINUTES} (24 h)"]
    return found


def alarm_problems(template) -> list[str]:
    """The alarm template's schema: an object with only the known keys, each in its range."""
    if not isinstance(template, dict):
        return ["the alarm template must be a JSON object"]
    if not template:
        return []  # no alarm
    found = [f"unknown key {key!r} (known: {', '.join(ALARM_DEFAULTS)})" for key in template
             if key not in ALARM_DEFAULTS]
    alarm = {**ALARM_DEFAULTS, **template}
    for key in ("namespace", "metric"):
        if not isinstance(alarm[key], str) or not METRIC_PART.match(alarm[key]):
            found.append(f"{key} must be 1-255 printable ASCII characters")
    if alarm["statistic"] not in STATISTICS:
        found.append(f"statistic must be one of {', '.join(STATISTICS)}")
    if alarm["comparison"] not in COMPARISONS:
        found.append(f"comparison must be one of {', '.join(COMPARISONS)}")
    threshold = alarm["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
        found.append("threshold must be a number")
    found += [m for m in [_bounded(alarm["periods"], 1, 10, "periods")] if m]
    period = alarm["period_s"]
    if isinstance(period, bool) or not isinstance(period, int) or not (
            period in (10, 30) or (period >= 60 and period % 60 == 0)):
        found.append("period_s must be 10, 30 or a multiple of 60 (seconds)")
    elif isinstance(alarm["periods"], int) and period * alarm["periods"] > 86400:
        found.append("periods x period_s must be at most a day (86400 s), as CloudWatch allows")
    return found


def normal_alarm(template: dict) -> dict:
    """A valid template with its defaults filled in (empty stays empty: no alarm)."""
    if not template:
        return {}
    alarm = {**ALARM_DEFAULTS, **template}
    alarm["threshold"] = float(alarm["threshold"])
    return alarm


def extra_alarm_problems(function_name: str, names) -> list[str]:
    """Owner-made alarms: each named slipway-<function>-… (the worker may read and act on
    slipway-* alarms only; the function's prefix keeps one function from watching another's)."""
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return ["the extra alarms must be a list of alarm names"]
    prefix = f"slipway-{function_name}-"
    found = [f"{name!r} must start with {prefix} and be at most 255 printable ASCII characters"
             for name in names if not name.startswith(prefix) or len(name) == len(prefix) or not ALARM_NAME.match(name)]
    if len(set(names)) != len(names):
        found.append("an alarm is named twice")
    if len(names) > MAX_EXTRA_ALARMS:
        found.append(f"at most {MAX_EXTRA_ALARMS} extra alarms")
    return found


def probe_problems(count, max_failures) -> dict[str, list[str]]:
    """K probes a step (0-20), and how many may fail (fewer than K, unless K is 0)."""
    found: dict[str, list[str]] = {}
    for field, value, what in (("probe_count", count, "probes a step"),
                               ("probe_max_failures", max_failures, "failures allowed")):
        message = _bounded(value, 0, MAX_PROBES, what)
        if message:
            found[field] = [message]
    if not found and count and max_failures >= count:
        found["probe_max_failures"] = [f"{max_failures} failure(s) allowed of {count} probe(s) would never fail a "
                                       "step: allow fewer"]
    return found


def problems(*, function_name: str, strategy: str, percent, minutes, alarm, extra_alarms, probe_count,
             max_failures) -> dict[str, list[str]]:
    """Every rule above, per setting (keys: strategy, percent, minutes, alarm, extra_alarms,
    probe_count, probe_max_failures); empty when the settings may be saved."""
    found = {**timing_problems(strategy, percent, minutes), **probe_problems(probe_count, max_failures)}
    for field, messages in (("alarm", alarm_problems(alarm)),
                            ("extra_alarms", extra_alarm_problems(function_name, extra_alarms))):
        if messages:
            found[field] = messages
    return found
