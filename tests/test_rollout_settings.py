"""An environment's rollout settings on its form, its page and the API: presets, the rules of
portal/deployments/strategies.py on each field, what is saved and audited, and what is left
unchanged by a refusal. alice owns `hello`."""

import pytest
from django.urls import reverse

from portal import functions
from portal.deployments.forms import RolloutEnvironmentForm
from portal.models import ApiToken, AuditEvent, Environment
from tests.api_client import Api, openapi

ROLE = "arn:aws:iam::123456789012:role/slipway-lambda"
ENV = "/functions/{name}/environments/{env}"


@pytest.fixture(autouse=True)
def _setup(sent, settings):
    settings.SLIPWAY_ALLOWED_LAMBDA_PREFIXES = ["team-"]
    settings.SLIPWAY_ALLOWED_EXECUTION_ROLES = ["arn:aws:iam::123456789012:role/slipway-*"]
    settings.SLIPWAY_DEFAULT_EXECUTION_ROLE = ""


@pytest.fixture
def production(function):
    Environment.objects.filter(function=function).update(execution_role_arn=ROLE)
    return function.first_environment


def _form(function, environment, **data):
    initial = RolloutEnvironmentForm(function=function, instance=environment).initial
    base = {name: value for name, value in initial.items() if value is not None}
    return RolloutEnvironmentForm({**base, **data}, function=function, instance=environment)


def test_a_preset_sets_the_strategy_percent_and_minutes(function, production, cast):
    form = _form(function, production, rollout_preset="Linear10PercentEvery2Minutes", rollout_percent=30)
    assert form.is_valid(), form.errors
    functions.update_environment(form, user=cast["alice"])
    production.refresh_from_db()
    assert (production.rollout_strategy, production.rollout_percent, production.rollout_minutes) == ("linear", 10, 2)
    event = AuditEvent.objects.get(action="environment.edited")
    assert event.detail["rollout_strategy"] == "linear" and event.detail["rollout_minutes"] == 2


def test_custom_settings_alarm_and_probes_are_saved(function, production, cast):
    form = _form(function, production, rollout_strategy="canary", rollout_percent=20, rollout_minutes=7,
                 rollout_alarm_text='{"metric": "Throttles", "threshold": 2}',
                 rollout_extra_alarms_text="slipway-hello-p99\n\nslipway-hello-dlq\n", probe_count=4,
                 probe_max_failures=1)
    assert form.is_valid(), form.errors
    functions.update_environment(form, user=cast["alice"])
    production.refresh_from_db()
    assert (production.rollout_strategy, production.rollout_percent, production.rollout_minutes) == ("canary", 20, 7)
    assert production.rollout_alarm["metric"] == "Throttles" and production.rollout_alarm["threshold"] == 2.0
    assert production.rollout_alarm["period_s"] == 60  # the template's defaults filled in
    assert production.rollout_extra_alarms == ["slipway-hello-p99", "slipway-hello-dlq"]
    assert (production.probe_count, production.probe_max_failures) == (4, 1)


@pytest.mark.parametrize("data, field, message", [
    ({"rollout_strategy": "linear", "rollout_percent": 2, "rollout_minutes": 60}, "rollout_minutes", "24 h"),
    ({"rollout_percent": 51}, "rollout_percent", "less than or equal to 50"),
    ({"rollout_alarm_text": '{"statistic": "p99"}'}, "rollout_alarm_text", "statistic must be one of"),
    ({"rollout_alarm_text": "[1]"}, "rollout_alarm_text", "must be a JSON object"),
    ({"rollout_extra_alarms_text": "slipway-other-x"}, "rollout_extra_alarms_text", "must start with slipway-hello-"),
    ({"probe_count": 2, "probe_max_failures": 2}, "probe_max_failures", "would never fail a step"),
])
def test_each_rule_refuses_on_its_own_field(function, production, data, field, message):
    form = _form(function, production, **{"rollout_strategy": "canary", **data})
    assert not form.is_valid()
    assert message in " ".join(form.errors[field]), form.errors


def test_the_edit_page_shows_the_rollout_fieldset_and_saves_a_preset(client, function, production, cast):
    client.force_login(cast["alice"])
    url = reverse("portal-environment-edit", args=[function.name, production.name])
    page = client.get(url).content.decode()
    assert '<fieldset id="rollout-settings">' in page and 'value="Canary10Percent30Minutes"' in page
    assert 'id="current-preset"' not in page or "AllAtOnce" in page
    data = {k: v for k, v in _form(function, production).data.items() if k != "name"}
    answer = client.post(url, {**data, "rollout_preset": "Canary10Percent15Minutes"})
    assert answer.status_code == 302, answer.content.decode()[:2000]
    production.refresh_from_db()
    assert (production.rollout_strategy, production.rollout_minutes) == ("canary", 15)
    assert "Now: <code>Canary10Percent15Minutes</code>" in client.get(url).content.decode()


def test_the_edit_page_says_what_is_wrong_and_keeps_what_is_stored(client, function, production, cast):
    client.force_login(cast["alice"])
    url = reverse("portal-environment-edit", args=[function.name, production.name])
    data = {k: v for k, v in _form(function, production).data.items() if k != "name"}
    answer = client.post(url, {**data, "rollout_strategy": "linear", "rollout_percent": 1, "rollout_minutes": 30})
    assert answer.status_code == 400 and "takes 2970 minutes" in answer.content.decode()
    assert Environment.objects.get(pk=production.pk).rollout_strategy == "all_at_once"


# --- API ----------------------------------------------------------------------------------------


@pytest.fixture
def api(client, cast):
    return Api(client, openapi(client), ApiToken.issue(cast["alice"], "alice's")[1])


def test_the_api_shows_the_rollout_settings(api, production):
    rollout = api.call("get", ENV, name="hello", env="production").json()["rollout"]
    assert rollout == {"strategy": "all_at_once", "preset": "AllAtOnce", "percent": 10, "minutes": 5,
                       "total_minutes": 0, "alarm": {}, "extra_alarms": [], "probe_count": 3, "probe_max_failures": 0}


def test_the_api_sets_a_preset_and_keeps_what_it_was_not_sent(api, production):
    Environment.objects.filter(pk=production.pk).update(rollout_extra_alarms=["slipway-hello-p99"])
    answer = api.call("patch", ENV, {"rollout": {"preset": "Linear10PercentEvery1Minute"}}, name="hello",
                      env="production")
    assert answer.status_code == 200, answer.content
    rollout = answer.json()["rollout"]
    assert (rollout["strategy"], rollout["preset"], rollout["total_minutes"]) == (
        "linear", "Linear10PercentEvery1Minute", 9)
    assert rollout["extra_alarms"] == ["slipway-hello-p99"]
    answer = api.call("patch", ENV, {"rollout": {"percent": 25, "alarm": {"threshold": 5}}}, name="hello",
                      env="production")
    rollout = answer.json()["rollout"]
    assert (rollout["preset"], rollout["percent"], rollout["alarm"]["threshold"]) == (None, 25, 5.0)


def test_the_api_refuses_a_preset_that_disagrees_and_bad_settings_by_field(api, production):
    answer = api.call("patch", ENV, {"rollout": {"preset": "Canary10Percent5Minutes", "minutes": 9}}, name="hello",
                      env="production")
    assert answer.status_code == 400
    assert answer.json()["error"]["fields"] == {
        "rollout.minutes": ["the preset Canary10Percent5Minutes sets minutes to 5"]}
    answer = api.call("patch", ENV, {"rollout": {"strategy": "canary", "extra_alarms": ["other-alarm"]}},
                      name="hello", env="production")
    assert answer.status_code == 400 and list(answer.json()["error"]["fields"]) == ["rollout.extra_alarms"]
    assert Environment.objects.get(pk=production.pk).rollout_strategy == "all_at_once"


def test_the_api_refuses_an_unknown_rollout_key(api, production):
    answer = api.call("patch", ENV, {"rollout": {"weight": 0.5}}, name="hello", env="production")
    assert answer.status_code == 400


def test_the_preview_environment_always_moves_all_at_once(function, production, settings):
    from tests.previews import previews_on

    settings.SLIPWAY_PREVIEW_EXECUTION_ROLE = "arn:aws:iam::123456789012:role/slipway-preview"
    preview = previews_on(function)
    form = _form(function, preview, rollout_preset="Canary10Percent5Minutes")
    assert not form.is_valid()
    assert "always moves all at once" in form.errors["rollout_strategy"][0]
    preview.refresh_from_db()
    assert preview.rollout_strategy == Environment.Strategy.ALL_AT_ONCE
