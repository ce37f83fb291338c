"""The deploy form (a ref or a commit), the approval decision form, and the environment
form with its rollout settings (RolloutEnvironmentForm: the functions package's
EnvironmentForm plus the rules of portal/deployments/strategies.py).
"""

from __future__ import annotations

import json

from django import forms

from deploy import source
from deploy.errors import UserError
from portal import functions
from portal.deployments import strategies
from portal.functions import Environment, JSONObjectField, user_error


class DeployForm(forms.Form):
    ref = forms.CharField(max_length=200, label="Branch, tag or commit")

    def clean_ref(self):
        try:
            return source.validate_ref(self.cleaned_data["ref"].strip())
        except UserError as exc:
            raise user_error(exc) from None


class DecisionForm(forms.Form):
    """An approver's approval or rejection of a held deployment, with an optional comment."""

    comment = forms.CharField(max_length=500, required=False, label="Comment",
                              widget=forms.TextInput(attrs={"placeholder": "optional"}))

    def clean_comment(self):
        value = self.cleaned_data["comment"].strip()
        if "\x00" in value:
            raise forms.ValidationError("the comment must not contain NUL characters")
        return value


class AlarmNamesField(forms.CharField):
    """CloudWatch alarm names, one a line, or a list of strings. Checked by strategies.py."""

    widget = forms.Textarea(attrs={"rows": 2})

    def to_python(self, value) -> list[str]:
        if isinstance(value, (list, tuple)):
            if not all(isinstance(name, str) for name in value):
                raise forms.ValidationError("give alarm names as strings")
            names = list(value)
        else:
            names = (super().to_python(value) or "").splitlines()
        return [name.strip() for name in names if name.strip()]


class RolloutEnvironmentForm(functions.EnvironmentForm):
    """An environment's settings with how a verified version takes its alias: all at once, or
    a canary or linear rollout watched by an alarm template, extra alarms and probes (the
    rules: strategies.py). A preset, when chosen, sets the strategy, percentage and minutes."""

    rollout_preset = forms.ChoiceField(
        label="Rollout preset", required=False,
        choices=[("", "Custom: the strategy, percentage and minutes below"),
                 *((name, name) for name in strategies.PRESETS)],
        help_text="Named like AWS CodeDeploy's; when chosen it sets the three settings below.")
    rollout_strategy = forms.ChoiceField(label="Rollout strategy", required=False,
                                         choices=Environment.Strategy.choices,
                                         help_text="How a verified version takes the alias.")
    rollout_percent = forms.IntegerField(
        label="Rollout percentage", required=False, min_value=strategies.PERCENT_RANGE[0],
        max_value=strategies.PERCENT_RANGE[1],
        help_text="Canary: the new version's share for the whole step; linear: added every step (1-50 %).")
    rollout_minutes = forms.IntegerField(
        label="Rollout step (minutes)", required=False, min_value=strategies.MINUTES_RANGE[0],
        max_value=strategies.MINUTES_RANGE[1],
        help_text="How long each step lasts (1-60 minutes; the whole rollout at most 24 hours).")
    rollout_alarm_text = JSONObjectField(
        what="The alarm template", label="Rollout alarm template", required=False,
        help_text='A JSON object; {} for none. Keys: namespace ("AWS/Lambda"), metric ("Errors"), statistic '
                  '("Sum"), threshold (1), comparison ("GreaterThanOrEqualToThreshold"), periods (1), period_s (60). '
                  "Slipway creates the alarm per rollout, scoped to the new version, and deletes it after.")
    rollout_extra_alarms_text = AlarmNamesField(
        label="Extra alarms", required=False,
        help_text="CloudWatch alarms you made, one a line, each named slipway-<function>-…: any of them going "
                  "into ALARM during a rollout aborts it (one already in ALARM when it starts is only reported).")
    probe_count = forms.IntegerField(
        label="Probes a step", required=False, min_value=0, max_value=strategies.MAX_PROBES,
        help_text="Invokes of the smoke event and golden cases against the new version during each step (0-20).")
    probe_max_failures = forms.IntegerField(
        label="Probe failures allowed", required=False, min_value=0, max_value=strategies.MAX_PROBES,
        help_text="A step fails (and the rollout aborts) when more probes than this fail.")

    ROLLOUT_FIELDS = ("rollout_preset", "rollout_strategy", "rollout_percent", "rollout_minutes",
                      "rollout_alarm_text", "rollout_extra_alarms_text", "probe_count", "probe_max_failures")
    # The model's field each form field sets (the preset sets the first three).
    STORED = {"rollout_strategy": "rollout_strategy", "rollout_percent": "rollout_percent",
              "rollout_minutes": "rollout_minutes", "rollout_alarm_text": "rollout_alarm",
              "rollout_extra_alarms_text": "rollout_extra_alarms", "probe_count": "probe_count",
              "probe_max_failures": "probe_max_failures"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        env = self.instance
        self.initial.setdefault("rollout_alarm_text", json.dumps(env.rollout_alarm or {}))
        self.initial.setdefault("rollout_extra_alarms_text", "\n".join(env.rollout_extra_alarms or []))
        for field, stored in self.STORED.items():
            self.initial.setdefault(field, getattr(env, stored))
        self.current_preset = strategies.preset_of(env.rollout_strategy, env.rollout_percent, env.rollout_minutes)

    def rollout_fields(self):
        return [self[name] for name in self.ROLLOUT_FIELDS]

    def other_fields(self):
        return [field for field in self if field.name not in self.ROLLOUT_FIELDS]

    def clean(self):
        data = super().clean()
        # Left out or empty: what the environment has (the model's defaults for a new one).
        for field, stored in self.STORED.items():
            if data.get(field) in (None, "") and field not in self.errors:
                data[field] = getattr(self.instance, stored)
        preset = strategies.PRESETS.get(data.get("rollout_preset") or "")
        if preset is not None:
            data["rollout_strategy"] = preset.strategy
            data["rollout_percent"] = preset.percent or data["rollout_percent"]
            data["rollout_minutes"] = preset.minutes or data["rollout_minutes"]
        if any(field in self.errors for field in self.STORED):
            return data  # the field's own message says it; the rules need every value
        if self.instance.preview and data["rollout_strategy"] != Environment.Strategy.ALL_AT_ONCE:
            self.add_error("rollout_strategy", "the preview environment always moves all at once: a merge "
                           "request's alias has no stable version to share traffic with")
            return data
        found = strategies.problems(
            function_name=self.function.name, strategy=data["rollout_strategy"], percent=data["rollout_percent"],
            minutes=data["rollout_minutes"], alarm=data["rollout_alarm_text"],
            extra_alarms=data["rollout_extra_alarms_text"], probe_count=data["probe_count"],
            max_failures=data["probe_max_failures"])
        where = {"strategy": "rollout_strategy", "percent": "rollout_percent", "minutes": "rollout_minutes",
                 "alarm": "rollout_alarm_text", "extra_alarms": "rollout_extra_alarms_text"}
        for key, messages in found.items():
            for message in messages:
                self.add_error(where.get(key, key), message)
        return data

    def apply(self) -> Environment:
        environment = super().apply()
        for field, stored in self.STORED.items():
            setattr(environment, stored, self.cleaned_data[field])
        environment.rollout_alarm = strategies.normal_alarm(environment.rollout_alarm)
        return environment
