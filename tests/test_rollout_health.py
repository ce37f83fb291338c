"""A rollout's health signals (portal/deployments/health.py) with deploy.aws.client, the
one seam, patched: the alarm made from the template, owner alarms checked, an alarm
already in ALARM reported but not failing, one batched read for every rollout, probes
counted against the limit, alarms deleted once the rollout ended."""

import io
import json
from datetime import timedelta
from unittest import mock

import pytest
from botocore.exceptions import ClientError
from django.utils import timezone

from deploy.errors import UserError
from portal.deployments import health
from portal.models import ConsoleImage, Deployment, GoldenCase, Rollout, RolloutEvent
from tests.conftest import set_environment

TEMPLATE = {"namespace": "AWS/Lambda", "metric": "Errors", "statistic": "Sum", "threshold": 1.0,
            "comparison": "GreaterThanOrEqualToThreshold", "periods": 1, "period_s": 60}
CREATED = "slipway-hello-production-v3-errors"
OWNERS = "slipway-hello-latency"


@pytest.fixture
def aws():
    with mock.patch("deploy.aws.client", autospec=True) as client, \
            mock.patch("deploy.aws.time.sleep", autospec=True):
        yield client.return_value


def rollout_of(function, new_version: str = "3", **fields) -> Rollout:
    deployment = Deployment.objects.create(function=function, trigger="ui", version=new_version,
                                           status=Deployment.Status.ROLLING_OUT)
    return Rollout.objects.create(deployment=deployment, strategy="canary", percent=10, minutes=1,
                                  stable_version="2", new_version=new_version, **fields)


def states(aws, **by_name) -> None:
    """DescribeAlarms answers with these (state, changed at) for the names it is asked about."""
    aws.describe_alarms.side_effect = lambda **kw: {
        "MetricAlarms": [{"AlarmName": name, "StateValue": by_name[name][0], "StateUpdatedTimestamp": by_name[name][1]}
                         for name in kw["AlarmNames"] if name in by_name], "CompositeAlarms": []}


def test_prepare_creates_the_template_alarm_scoped_to_the_new_version(function, aws):
    set_environment(function, rollout_alarm=TEMPLATE, alias="live")
    rollout = rollout_of(function)
    states(aws, **{CREATED: ("INSUFFICIENT_DATA", timezone.now())})
    health.prepare(rollout)
    sent = aws.put_metric_alarm.call_args.kwargs
    assert sent["AlarmName"] == CREATED
    assert sent["Dimensions"] == [{"Name": "FunctionName", "Value": "team-hello"},
                                  {"Name": "Resource", "Value": "team-hello:live"},
                                  {"Name": "ExecutedVersion", "Value": "3"}]
    rollout.refresh_from_db()
    assert (rollout.alarms, rollout.alarms_created, rollout.alarms_already) == ([CREATED], [CREATED], [])


def test_a_missing_owner_alarm_stops_the_rollout_and_the_created_one_is_deleted_again(function, aws):
    set_environment(function, rollout_alarm=TEMPLATE, rollout_extra_alarms=[OWNERS])
    rollout = rollout_of(function)
    states(aws, **{CREATED: ("OK", timezone.now())})
    with pytest.raises(UserError) as refused:
        health.prepare(rollout)
    assert refused.value.code == "rollout-alarm-missing" and OWNERS in refused.value.message
    assert aws.delete_alarms.call_args.kwargs == {"AlarmNames": [CREATED]}
    rollout.refresh_from_db()
    assert rollout.alarms == []


def test_an_alarm_already_firing_is_reported_and_does_not_fail_the_rollout(function, aws):
    set_environment(function, rollout_extra_alarms=[OWNERS])
    before = timezone.now() - timedelta(minutes=5)
    states(aws, **{OWNERS: ("ALARM", before)})
    rollout = rollout_of(function)
    health.prepare(rollout)
    aws.put_metric_alarm.assert_not_called()  # no template: only the owner's alarm
    (event,) = RolloutEvent.objects.filter(rollout=rollout)
    assert event.action == RolloutEvent.Action.ALARM and "not blocking" in event.note
    rollout.refresh_from_db()
    assert rollout.alarms_already == [OWNERS]
    assert health.alarm_failures([rollout]) == {}
    # It goes into ALARM again after the rollout started: that fails it.
    states(aws, **{OWNERS: ("ALARM", timezone.now() + timedelta(seconds=1))})
    assert health.alarm_failures([rollout]) == {rollout.pk: f"alarm:{OWNERS}"}


def test_one_read_covers_every_rollout_and_reports_only_those_in_alarm(function, aws):
    now = timezone.now() + timedelta(seconds=1)
    rollouts = [rollout_of(function, new_version=str(n), alarms=[f"slipway-hello-a{n}", OWNERS]) for n in range(3, 6)]
    states(aws, **{"slipway-hello-a3": ("OK", now), "slipway-hello-a4": ("ALARM", now),
                   "slipway-hello-a5": ("INSUFFICIENT_DATA", now), OWNERS: ("OK", now)})
    failures = health.alarm_failures(rollouts)
    assert failures == {rollouts[1].pk: "alarm:slipway-hello-a4"}
    assert aws.describe_alarms.call_count == 1
    assert sorted(aws.describe_alarms.call_args.kwargs["AlarmNames"]) == sorted(
        ["slipway-hello-a3", "slipway-hello-a4", "slipway-hello-a5", OWNERS])  # the shared alarm asked once


def test_rollouts_without_alarms_cost_no_call(function, aws):
    assert health.alarm_failures([rollout_of(function)]) == {}
    aws.describe_alarms.assert_not_called()


def test_an_alarm_deleted_meanwhile_is_not_a_failure(function, aws):
    rollout = rollout_of(function, alarms=[OWNERS])
    states(aws)
    assert health.alarm_failures([rollout]) == {}
    assert aws.describe_alarms.call_count == 1


def test_a_bad_template_is_refused_before_anything_is_created(function, aws):
    set_environment(function, rollout_alarm={**TEMPLATE, "period_s": 45})
    with pytest.raises(UserError) as refused:
        health.prepare(rollout_of(function))
    assert refused.value.code == "rollout-alarm-invalid" and "period_s" in refused.value.message
    aws.put_metric_alarm.assert_not_called()


def answers(aws, *results) -> None:
    found = iter(results)
    aws.invoke.side_effect = lambda **kw: {"Payload": io.BytesIO(json.dumps(next(found)).encode()),
                                           "ExecutedVersion": kw["Qualifier"]}


def test_probes_invoke_the_new_version_and_pass_within_the_limit(function, aws):
    set_environment(function, probe_count=3, probe_max_failures=1)
    rollout = rollout_of(function, weight=0.1)
    answers(aws, {"boxes": []}, {"error": "boom"}, {"boxes": []})
    assert health.probe(rollout) == ""
    assert [c.kwargs["Qualifier"] for c in aws.invoke.call_args_list] == ["3", "3", "3"]
    (event,) = RolloutEvent.objects.filter(rollout=rollout, action=RolloutEvent.Action.PROBE)
    assert event.weight == 0.1 and event.note.startswith("1 of 3 probe(s) of version 3 failed")


def test_probes_fail_the_step_past_the_limit_counting_what_did_not_answer(function, aws):
    set_environment(function, probe_count=2, probe_max_failures=0)
    rollout = rollout_of(function)
    aws.invoke.side_effect = [ClientError({"Error": {"Code": "ResourceNotFoundException", "Message": "no"}},
                                          "Invoke"), {"Payload": io.BytesIO(b'{"boxes": []}')}]
    reason = health.probe(rollout)
    assert reason.startswith("1 of 2 probe(s) of version 3 failed") and "not answered" in reason


def test_probes_run_the_golden_cases_against_the_new_version(function, aws):
    from tests.test_golden import FACE, SHIFTED

    image = ConsoleImage.objects.create(function=function, sha256="a" * 64, data=b"png", format="png", width=1,
                                        height=1, size_bytes=3)
    GoldenCase.objects.create(function=function, name="astronaut", image=image, options={}, boxes=[FACE], version="1")
    set_environment(function, probe_count=1, probe_max_failures=0)
    rollout = rollout_of(function)
    answers(aws, {"boxes": []}, {"boxes": [SHIFTED]})
    reason = health.probe(rollout)
    assert "golden cases 1 of 1" in reason and "astronaut: moved" in reason
    assert aws.invoke.call_args.kwargs["Qualifier"] == "3"


def test_delete_alarms_removes_only_what_slipway_created(function, aws):
    rollout = rollout_of(function, alarms=[CREATED, OWNERS], alarms_created=[CREATED])
    health.delete_alarms(rollout)
    assert aws.delete_alarms.call_args.kwargs == {"AlarmNames": [CREATED]}
    rollout.refresh_from_db()
    assert rollout.alarms_deleted_at is not None


def test_the_sweeper_deletes_the_alarms_of_ended_rollouts_in_one_call(function, aws):
    ended = [rollout_of(function, new_version=str(n), alarms_created=[f"slipway-hello-v{n}"]) for n in (3, 4)]
    running = rollout_of(function, new_version="5", alarms_created=["slipway-hello-v5"])
    Deployment.objects.filter(pk__in=[r.deployment_id for r in ended]).update(status=Deployment.Status.FAILED)
    assert health.delete_ended() == 2
    assert aws.delete_alarms.call_args_list == [mock.call(AlarmNames=["slipway-hello-v3", "slipway-hello-v4"])]
    assert health.delete_ended() == 0  # done: not again
    running.refresh_from_db()
    assert running.alarms_deleted_at is None
