"""A rollout's alarms on the local plane's CloudWatch: created from the template and scoped
to the new version, read 100 names a call, an alarm set to ALARM reported by the tick's
one read, one already in ALARM reported and not failing, deleted after.

The alarms live in a namespace nothing writes: the plane re-evaluates every alarm on a
metric name at each PutMetricData, whatever its dimensions, so an AWS/Lambda Errors alarm
forced into ALARM would be reset by the next invoke of any function."""

import contextlib
import time

import pytest

from deploy import alarms, aws
from deploy.errors import UserError
from portal.deployments import health
from portal.models import Deployment, Rollout, RolloutEvent
from tests.conftest import create_function, stack_env

pytestmark = pytest.mark.integration


@pytest.fixture
def plane_function(transactional_db, unique):
    stack_env("AWS_ENDPOINT_URL")
    aws.reset()
    function = create_function(name=f"alarms-{unique}", repository_url="https://gitlab.example.com/team/a.git",
                               ecr_repository=f"slipway-test/alarms-{unique}", lambda_name=f"slipway-test-a-{unique}")
    yield function
    with contextlib.suppress(Exception):  # whatever a failing test left behind
        left = aws.client("cloudwatch").describe_alarms(AlarmNamePrefix=f"slipway-{function.name}-", MaxRecords=100)
        alarms.delete(alarm["AlarmName"] for alarm in left["MetricAlarms"])


@pytest.fixture
def describes():
    """How many DescribeAlarms calls the CloudWatch client sent, and with how many names each."""
    sent: list[int] = []

    def count(params, **_):
        sent.append(len(params.get("AlarmNames", [])))

    client = aws.client("cloudwatch")
    client.meta.events.register("provide-client-params.cloudwatch.DescribeAlarms", count)
    yield sent
    client.meta.events.unregister("provide-client-params.cloudwatch.DescribeAlarms", count)


def template(function) -> dict:
    return {"namespace": f"Slipway/Test/{function.name}", "metric": "Errors", "statistic": "Sum", "threshold": 1,
            "comparison": "GreaterThanOrEqualToThreshold", "periods": 1, "period_s": 60}


def owner_alarm(function, name: str) -> str:
    full = f"slipway-{function.name}-{name}"
    alarms.put(alarms.spec(template(function), full, {"FunctionName": function.first_environment.lambda_name}))
    return full


def rollout_of(function, new_version: str = "3") -> Rollout:
    deployment = Deployment.objects.create(function=function, trigger="ui", version=new_version,
                                           status=Deployment.Status.ROLLING_OUT)
    return Rollout.objects.create(deployment=deployment, strategy="canary", percent=10, minutes=1,
                                  stable_version="2", new_version=new_version)


def test_a_rollouts_alarms_from_creation_through_alarm_to_deletion(plane_function, describes):
    function, environment = plane_function, plane_function.first_environment
    firing = owner_alarm(function, "already-firing")
    alarms.set_state(firing, "ALARM", "firing before the rollout")
    extras = [firing] + [owner_alarm(function, f"owner-{n:03}") for n in range(100)]
    environment.rollout_alarm, environment.rollout_extra_alarms = template(function), extras
    environment.save()
    time.sleep(1.1)  # the plane's timestamps are whole seconds: the rollout starts strictly later
    rollout = rollout_of(function)

    health.prepare(rollout)

    created = f"slipway-{function.name}-production-v3-errors"
    rollout.refresh_from_db()
    assert (rollout.alarms_created, rollout.alarms_already, len(rollout.alarms)) == ([created], [firing], 102)
    assert describes == [100, 2]  # 102 names, one call per 100
    made = aws.client("cloudwatch").describe_alarms(AlarmNames=[created])["MetricAlarms"][0]
    assert {d["Name"]: d["Value"] for d in made["Dimensions"]} == {
        "FunctionName": environment.lambda_name, "Resource": f"{environment.lambda_name}:{environment.alias}",
        "ExecutedVersion": "3"}
    assert made["TreatMissingData"] == "notBreaching" and made["Namespace"] == template(function)["namespace"]
    assert RolloutEvent.objects.get(rollout=rollout, action=RolloutEvent.Action.ALARM).note.startswith(firing)

    describes.clear()
    other = rollout_of(function, new_version="4")
    other.alarms = [firing]
    other.alarms_already = [firing]
    other.save()
    assert health.alarm_failures([rollout, other]) == {}  # already firing: reported, not blocking
    alarms.set_state(created, "ALARM", "test: the new version's errors")
    assert health.alarm_failures([rollout, other]) == {rollout.pk: f"alarm:{created}"}
    assert describes == [100, 2, 100, 2]  # both rollouts in one read per tick, each name once

    alarms.set_state(firing, "OK", "test: recovered")
    time.sleep(1.1)
    alarms.set_state(firing, "ALARM", "test: firing again during the rollout")
    assert health.alarm_failures([other]) == {other.pk: f"alarm:{firing}"}  # a transition since it started

    Deployment.objects.filter(pk=rollout.deployment_id).update(status=Deployment.Status.FAILED)
    assert health.delete_ended() == 1
    left = alarms.describe([created, firing])
    assert created not in left and firing in left  # the owner's alarms stay
    health.delete_alarms(rollout)  # again, once it is gone: fine


def test_a_missing_owner_alarm_stops_the_rollout_before_it_starts(plane_function):
    environment = plane_function.first_environment
    environment.rollout_alarm = template(plane_function)
    environment.rollout_extra_alarms = [f"slipway-{plane_function.name}-never-made"]
    environment.save()
    with pytest.raises(UserError) as refused:
        health.prepare(rollout_of(plane_function))
    assert refused.value.code == "rollout-alarm-missing" and "never-made" in refused.value.message
    assert alarms.describe([f"slipway-{plane_function.name}-production-v3-errors"]) == {}  # made, then removed
