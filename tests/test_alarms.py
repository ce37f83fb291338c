"""CloudWatch alarms at the boto3 seam (deploy.aws.client is the only thing patched):
names go 100 to a call, a missing alarm never fails a delete, the template's schema."""

from datetime import UTC, datetime
from unittest import mock

import pytest
from botocore.exceptions import ClientError

from deploy import alarms
from deploy.errors import UserError

AT = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
LATER = datetime(2026, 12, 3, 10, 5, tzinfo=UTC)


@pytest.fixture
def cw():
    with mock.patch("deploy.aws.client", autospec=True) as client, \
            mock.patch("deploy.aws.time.sleep", autospec=True):
        yield client.return_value


def found(*names, value="OK", **extra) -> dict:
    return {"MetricAlarms": [{"AlarmName": name, "StateValue": value, "StateUpdatedTimestamp": AT, **extra}
                             for name in names], "CompositeAlarms": []}


def test_describe_sends_at_most_100_names_a_call_and_each_name_once(cw):
    names = [f"slipway-fx-{i}" for i in range(250)]
    cw.describe_alarms.side_effect = lambda **kw: found(*kw["AlarmNames"])
    states = alarms.describe(names + names[:10])
    assert [len(c.kwargs["AlarmNames"]) for c in cw.describe_alarms.call_args_list] == [100, 100, 50]
    assert set(states) == set(names)
    assert cw.describe_alarms.call_args.kwargs["AlarmTypes"] == ["MetricAlarm", "CompositeAlarm"]


def test_describe_follows_a_paged_answer(cw):
    cw.describe_alarms.side_effect = [{**found("a"), "NextToken": "t1"}, found("b")]
    assert sorted(alarms.describe(["a", "b"])) == ["a", "b"]
    assert cw.describe_alarms.call_args.kwargs["NextToken"] == "t1"


def test_the_state_change_time_is_the_transition_when_cloudwatch_gives_it(cw):
    cw.describe_alarms.return_value = {
        "MetricAlarms": [{"AlarmName": "a", "StateValue": "ALARM", "StateUpdatedTimestamp": LATER,
                          "StateTransitionedTimestamp": AT}],
        "CompositeAlarms": [{"AlarmName": "c", "StateValue": "OK", "StateUpdatedTimestamp": LATER}]}
    states = alarms.describe(["a", "c"])
    assert (states["a"].value, states["a"].changed_at) == ("ALARM", AT)
    assert (states["c"].value, states["c"].changed_at) == ("OK", LATER)


def test_a_delete_that_meets_a_missing_alarm_deletes_the_rest(cw):
    # CloudWatch deletes none of a call's names when one of them is missing.
    cw.delete_alarms.side_effect = [ClientError({"Error": {"Code": "ResourceNotFound", "Message": "x"}},
                                                "DeleteAlarms"), {}]
    cw.describe_alarms.return_value = found("kept")
    assert alarms.delete(["gone", "kept"]) == 1
    assert cw.delete_alarms.call_args.kwargs == {"AlarmNames": ["kept"]}


def test_deleting_nothing_calls_nothing(cw):
    assert alarms.delete([]) == 0
    cw.delete_alarms.assert_not_called()


def test_put_creates_a_silent_alarm_where_missing_data_is_not_breaching(cw):
    made = alarms.spec({"metric": "Throttles", "periods": 2}, "slipway-fx-prod-v3-throttles",
                       {"FunctionName": "fx", "ExecutedVersion": "3"})
    alarms.put(made)
    sent = cw.put_metric_alarm.call_args.kwargs
    assert (sent["MetricName"], sent["Namespace"], sent["Statistic"]) == ("Throttles", "AWS/Lambda", "Sum")
    assert (sent["EvaluationPeriods"], sent["DatapointsToAlarm"], sent["Period"]) == (2, 2, 60)
    assert (sent["TreatMissingData"], sent["ActionsEnabled"]) == ("notBreaching", False)
    assert sent["Dimensions"] == [{"Name": "FunctionName", "Value": "fx"}, {"Name": "ExecutedVersion", "Value": "3"}]


def test_cloudwatch_refusing_the_template_is_the_users_error_and_not_retried(cw):
    cw.put_metric_alarm.side_effect = ClientError({"Error": {"Code": "InvalidParameterValue", "Message": "bad"}},
                                                  "PutMetricAlarm")
    with pytest.raises(UserError) as refused:
        alarms.put(alarms.spec({}, "slipway-fx", {}))
    assert refused.value.code == "cloudwatch-InvalidParameterValue" and cw.put_metric_alarm.call_count == 1


def test_a_long_name_is_cut_to_cloudwatchs_limit():
    assert len(alarms.spec({}, "slipway-" + "x" * 400, {}).name) == 255


@pytest.mark.parametrize("template, problem", [
    ({"statistic": "Median"}, "statistic"),
    ({"comparison": "Above"}, "comparison"),
    ({"periods": 0}, "periods"),
    ({"periods": 11}, "periods"),
    ({"period_s": 45}, "period_s"),
    ({"period_s": 90}, "period_s"),
    ({"threshold": "1"}, "threshold"),
    ({"metric": ""}, "metric"),
    ({"colour": "red"}, "unknown key 'colour'"),
])
def test_the_template_schema_names_what_is_wrong(template, problem):
    problems = alarms.template_problems(template)
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_a_complete_template_and_an_empty_one_are_usable():
    assert alarms.template_problems({}) == []
    assert alarms.template_problems({**alarms.DEFAULTS, "period_s": 10, "threshold": 5}) == []
    assert alarms.template_problems({"period_s": 300, "statistic": "Average"}) == []
