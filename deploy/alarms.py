"""CloudWatch alarms: the health signals a rollout watches (portal/deployments/health.py).

Put one alarm, read many in one call per 100 names, delete them, and (tests only) set
an alarm's state. Every call goes through deploy.aws.call: one error mapper, one
retry layer. The alarm template's schema lives here too (`template_problems`), so the
environment's settings and the alarm Slipway creates read it the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from deploy import aws

PREFIX = "cloudwatch"
BATCH = 100  # DescribeAlarms and DeleteAlarms take at most 100 names per call
NAME_LIMIT = 255
ALARM = "ALARM"

# The template an environment sets (Environment.rollout_alarm); a key left out takes its default.
DEFAULTS = {"namespace": "AWS/Lambda", "metric": "Errors", "statistic": "Sum", "threshold": 1.0,
            "comparison": "GreaterThanOrEqualToThreshold", "periods": 1, "period_s": 60}
STATISTICS = ("Average", "Sum", "Minimum", "Maximum", "SampleCount")
COMPARISONS = ("GreaterThanThreshold", "GreaterThanOrEqualToThreshold", "LessThanThreshold",
               "LessThanOrEqualToThreshold")


@dataclass(frozen=True)
class Spec:
    """One metric alarm as Slipway creates it: missing data is not breaching (a version
    that gets no traffic in a period is not failing), no actions (Slipway reads the state)."""

    name: str
    namespace: str
    metric: str
    statistic: str
    threshold: float
    comparison: str
    periods: int
    period_s: int
    dimensions: dict[str, str]


@dataclass(frozen=True)
class State:
    name: str
    value: str  # OK | ALARM | INSUFFICIENT_DATA
    changed_at: datetime  # when the state value last changed (StateTransitionedTimestamp, else StateUpdatedTimestamp)
    reason: str = ""


def template_problems(template: dict) -> list[str]:
    """What is wrong with an alarm template, one line per field; [] when it is usable."""
    unknown = sorted(set(template) - set(DEFAULTS))
    problems = [f"unknown key {key!r}" for key in unknown]
    merged = {**DEFAULTS, **template}
    for key in ("namespace", "metric"):
        if not isinstance(merged[key], str) or not merged[key].strip() or len(merged[key]) > 255:
            problems.append(f"{key}: a non-empty name of at most 255 characters")
    if merged["statistic"] not in STATISTICS:
        problems.append(f"statistic: one of {', '.join(STATISTICS)}")
    if merged["comparison"] not in COMPARISONS:
        problems.append(f"comparison: one of {', '.join(COMPARISONS)}")
    if isinstance(merged["threshold"], bool) or not isinstance(merged["threshold"], (int, float)):
        problems.append("threshold: a number")
    periods, period_s = merged["periods"], merged["period_s"]
    if isinstance(periods, bool) or not isinstance(periods, int) or not 1 <= periods <= 10:
        problems.append("periods: a whole number from 1 to 10")
    if isinstance(period_s, bool) or not isinstance(period_s, int) or not (
            period_s in (10, 30) or (period_s >= 60 and period_s % 60 == 0)):
        problems.append("period_s: 10, 30 or a multiple of 60 seconds")
    return problems


def spec(template: dict, name: str, dimensions: dict[str, str]) -> Spec:
    """The alarm `template` (defaults filled in) describes, named `name` (cut to CloudWatch's 255)."""
    merged = {**DEFAULTS, **template}
    return Spec(name[:NAME_LIMIT], merged["namespace"], merged["metric"], merged["statistic"],
                float(merged["threshold"]), merged["comparison"], int(merged["periods"]), int(merged["period_s"]),
                dict(dimensions))


def _call(doing: str, operation: str, missing: tuple[str, ...] = (), **kwargs):
    return aws.call(doing, getattr(aws.client("cloudwatch"), operation), prefix=PREFIX, missing=missing, **kwargs)


def _batches(names: Iterable[str]) -> Iterator[list[str]]:
    unique = list(dict.fromkeys(names))
    for start in range(0, len(unique), BATCH):
        yield unique[start:start + BATCH]


def put(alarm: Spec) -> None:
    """Create the alarm, or replace one of the same name (PutMetricAlarm is an upsert)."""
    _call(f"creating alarm {alarm.name}", "put_metric_alarm",
          AlarmName=alarm.name, Namespace=alarm.namespace, MetricName=alarm.metric, Statistic=alarm.statistic,
          Threshold=alarm.threshold, ComparisonOperator=alarm.comparison, EvaluationPeriods=alarm.periods,
          DatapointsToAlarm=alarm.periods, Period=alarm.period_s, TreatMissingData="notBreaching",
          ActionsEnabled=False, Dimensions=[{"Name": k, "Value": v} for k, v in alarm.dimensions.items()])


def describe(names: Iterable[str]) -> dict[str, State]:
    """The state of each named alarm (metric or composite) that exists, by name: one
    DescribeAlarms per 100 names (more only when CloudWatch pages its answer)."""
    found: dict[str, State] = {}
    for batch in _batches(names):
        token = None
        while True:
            page = _call(f"reading {len(batch)} alarm(s)", "describe_alarms", AlarmNames=batch,
                         AlarmTypes=["MetricAlarm", "CompositeAlarm"], MaxRecords=BATCH,
                         **({"NextToken": token} if token else {}))
            for alarm in page.get("MetricAlarms", []) + page.get("CompositeAlarms", []):
                changed = alarm.get("StateTransitionedTimestamp") or alarm["StateUpdatedTimestamp"]
                found[alarm["AlarmName"]] = State(alarm["AlarmName"], alarm["StateValue"], changed,
                                                  alarm.get("StateReason", ""))
            token = page.get("NextToken")
            if not token:
                break
    return found


def delete(names: Iterable[str]) -> int:
    """Delete the named alarms, 100 per call; those already gone are fine. CloudWatch
    deletes none of a call's names when one is missing (ResourceNotFound): that batch is
    then sent again with only the names that still exist. Returns how many calls deleted."""
    calls = 0
    for batch in _batches(names):
        doing = f"deleting {len(batch)} alarm(s)"
        if _call(doing, "delete_alarms", missing=("ResourceNotFound",), AlarmNames=batch) is None:
            batch = [name for name in batch if name in describe(batch)]
            if not batch:
                continue
            _call(doing, "delete_alarms", AlarmNames=batch)
        calls += 1
    return calls


def set_state(name: str, value: str, reason: str) -> None:
    """Tests only (the worker's IAM does not allow it): force an alarm into `value` until
    CloudWatch next evaluates it."""
    _call(f"setting alarm {name} to {value}", "set_alarm_state", AlarmName=name, StateValue=value,
          StateReason=reason)
