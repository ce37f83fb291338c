"""Turning a function's merge-request previews on, and what its owner allows them.

Enabling makes the preview environment (Environment.preview): its own Lambda
(`<first environment's Lambda>-preview` unless named), the platform's preview role
(SLIPWAY_PREVIEW_EXECUTION_ROLE, which must be an allowed role), the first
environment's memory, timeout and plain variables — never its secret values: an owner
opts a key in by setting it on the preview environment. A merge request's unreviewed
code never runs with production's role, secrets or Lambda.
"""

from __future__ import annotations

import re

from django import forms
from django.conf import settings
from django.db import IntegrityError, transaction

from portal.core.errors import RequestRefused
from portal.functions.forms import lambda_name_refused, role_allowed
from portal.functions.models import PREVIEW_POSITION, AuditEvent, Environment, Function, PreviewPolicy

PREVIEW_NAME = "preview"
SUFFIX = "-preview"
LAMBDA_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
MAX_BRANCHES = 20
POLICY_FIELDS = ("allow_forks", "url_auth", "commit_status", "target_branches", "allow_drafts")


def preview_environment(function: Function) -> Environment | None:
    """The function's preview environment; None while previews are off."""
    return Environment.objects.filter(function=function, preview=True).select_related("preview_policy").first()


def role_problem() -> str:
    """Why previews cannot be enabled on this installation ("" when they can)."""
    role = settings.SLIPWAY_PREVIEW_EXECUTION_ROLE
    if not role:
        return "no preview execution role is configured (SLIPWAY_PREVIEW_EXECUTION_ROLE): previews cannot be enabled"
    if not role_allowed(role):
        return (f"the preview execution role {role} is not one of SLIPWAY_ALLOWED_EXECUTION_ROLES: previews "
                "cannot be enabled")
    return ""


class PreviewsForm(forms.Form):
    """Enable previews (the Lambda name, only then) and set what they are allowed."""

    lambda_name = forms.CharField(
        required=False, max_length=200, label="Preview Lambda",
        help_text="The Lambda previews deploy to; empty: the first environment's with -preview appended.")
    allow_forks = forms.BooleanField(
        required=False, help_text="Merge requests from forks may preview once a deployer approves each new "
                                  "commit. Approving runs the fork's Dockerfile on the builder.")
    url_auth = forms.ChoiceField(choices=PreviewPolicy.UrlAuth.choices, required=False, label="Function URL",
                                 help_text="Public (no auth) lets anyone who has the URL call the preview; "
                                           "never for forks.")
    commit_status = forms.BooleanField(
        required=False, help_text="Post a GitLab commit status per preview: a failed preview can then block "
                                  "merges under \"Pipelines must succeed\".")
    target_branches = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), label="Target branches",
        help_text="Merge requests into these branches (one a line) preview; empty: the function's branch.")
    allow_drafts = forms.BooleanField(required=False, help_text="Draft merge requests preview too.")

    def __init__(self, *args, function: Function, **kwargs):
        super().__init__(*args, **kwargs)
        self.function = function
        self.environment = preview_environment(function)
        if self.environment is not None:
            policy = self.environment.preview_policy
            self.fields["lambda_name"].disabled = True
            self.initial.update({name: getattr(policy, name) for name in POLICY_FIELDS},
                                lambda_name=self.environment.lambda_name,
                                target_branches="\n".join(policy.target_branches))

    def clean_lambda_name(self):
        if self.environment is not None:
            return self.environment.lambda_name
        value = self.cleaned_data["lambda_name"].strip() or self.function.first_environment.lambda_name + SUFFIX
        if len(value) > 64:
            raise forms.ValidationError(f"{value} is {len(value)} characters; a Lambda name has at most 64: "
                                        "name a shorter one")
        if not LAMBDA_NAME.match(value):
            raise forms.ValidationError("letters, digits, '-' and '_' only")
        if refused := lambda_name_refused(value):
            raise forms.ValidationError(refused)
        if Environment.objects.filter(lambda_name=value).exists():
            raise forms.ValidationError("another environment already deploys to this Lambda", code="unique")
        return value

    def clean_target_branches(self):
        branches = [line.strip() for line in self.cleaned_data["target_branches"].splitlines() if line.strip()]
        if len(branches) > MAX_BRANCHES:
            raise forms.ValidationError(f"at most {MAX_BRANCHES} branches")
        for branch in branches:
            if len(branch) > 200 or not branch.isprintable() or " " in branch:
                raise forms.ValidationError(f"{branch[:40]!r} is not a branch name")
        return list(dict.fromkeys(branches))

    def clean_url_auth(self):
        return self.cleaned_data["url_auth"] or ""

    def clean(self):
        data = super().clean()
        if self.environment is None and (problem := role_problem()):
            raise forms.ValidationError(problem, code="preview-role")
        return data


def save_previews(form: PreviewsForm, *, user) -> Environment:
    """Enable previews with the form's Lambda and policy, or save the policy of enabled ones. Audited."""
    function, data = form.function, form.cleaned_data
    policy_values = {name: data[name] for name in POLICY_FIELDS}
    try:
        with transaction.atomic():
            Function.objects.select_for_update().get(pk=function.pk)
            environment = preview_environment(function)
            if environment is None:
                environment = _create(function, data["lambda_name"], policy_values, user)
                AuditEvent.record("previews.enabled", function=function, actor=user,
                                  lambda_name=environment.lambda_name,
                                  execution_role_arn=environment.execution_role_arn, **policy_values)
                return environment
            policy = environment.preview_policy
            changed = {name: value for name, value in policy_values.items() if getattr(policy, name) != value}
            for name, value in changed.items():
                setattr(policy, name, value)
            policy.save()
            if changed:
                AuditEvent.record("previews.policy_changed", function=function, actor=user, **changed)
                if changed.get("allow_forks"):
                    AuditEvent.record("previews.forks_allowed", function=function, actor=user)
            return environment
    except IntegrityError:
        raise RequestRefused("another environment took this Lambda, or previews were enabled meanwhile: check and "
                             "try again", code="taken") from None


def _create(function: Function, lambda_name: str, policy_values: dict, user) -> Environment:
    first = function.first_environment
    if Environment.objects.filter(function=function, name=PREVIEW_NAME).exists():
        raise RequestRefused(f"{function.name} already has an environment named {PREVIEW_NAME}: rename it first",
                             code="taken")
    plain = {key: value for key, value in first.variables.items() if key not in first.secret_keys}
    environment = Environment.objects.create(
        function=function, name=PREVIEW_NAME, position=PREVIEW_POSITION, preview=True, lambda_name=lambda_name,
        memory_mb=first.memory_mb, timeout_s=first.timeout_s, variables=plain, secret_keys=[],
        execution_role_arn=settings.SLIPWAY_PREVIEW_EXECUTION_ROLE)
    PreviewPolicy.objects.create(environment=environment, **policy_values)
    if policy_values["allow_forks"]:
        AuditEvent.record("previews.forks_allowed", function=function, actor=user)
    return environment
