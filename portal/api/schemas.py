"""The API's request and response schemas, one set: what the OpenAPI document states.

Owns the request bodies (FunctionIn and FunctionPatch generated from the UI's
FunctionForm, EnvironmentIn and EnvironmentPatch from its EnvironmentForm, so the
document states the bounds the forms check; DeployIn, RollbackIn, PromoteIn,
FeedbackPatch), the responses (FunctionOut, EnvironmentOut, DeploymentOut, their
pages, ReconcileOut, FeedbackOut, DriftOut), the error body (ErrorOut and
ERRORS, the statuses every endpoint documents), the API names of the form's
object fields (`api_name`) and the one paginator (`page_out`).

May import: Django, ninja, pydantic, deploy.build (a build argument's name
rule), the functions, deployments and feedback packages' forms and fields (the
patterns their fields check), the rollout strategies' rules, and errors
from this package. Not the models, the access rules or the resources.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from django import forms
from django.conf import settings
from django.core.paginator import EmptyPage, Paginator
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from ninja import Schema
from pydantic import BeforeValidator, ConfigDict, Field, StringConstraints, WithJsonSchema, create_model

from deploy.build import BUILD_ARG
from portal.api.errors import ApiError
from portal.deployments.forms import RolloutEnvironmentForm as EnvironmentForm
from portal.deployments.strategies import ALARM_NAME
from portal.feedback.forms import GITLAB_TOKEN
from portal.functions.fields import ENV_KEY, SLUG
from portal.functions.forms import ROLE_ARN, FunctionForm

PAGE_SIZE = 25


class StrictIn(Schema):
    """A request body: a field the server does not know is refused by name, never
    silently ignored (the document says `additionalProperties: false`), and values are
    taken as the types the document states (strict: `0` is not `false`, `"512"` not 512).
    Patterns run on Python's re, as Django's validators they restate do."""

    model_config = ConfigDict(extra="forbid", strict=True, regex_engine="python-re")


def _whole(value):
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _number(kind: type, **bounds) -> type:
    """A bounded number; an integer as JSON Schema counts them (2048.0 is one, "2048" is not).
    The bounds go on the type, inside the validator: elsewhere pydantic leaks them into the
    document as "ge"/"le" instead of minimum/maximum."""
    bounded = Annotated[kind, Field(**bounds)]
    return Annotated[bounded, BeforeValidator(_whole)] if kind is int else bounded


def _text(pattern: str) -> type:
    return Annotated[str, StringConstraints(pattern=pattern)]


def _named(key: str, value: str) -> type:
    """An object of strings whose keys match `key`. Stated with propertyNames: pydantic's own
    patternProperties would let any other key through in the document."""
    return Annotated[dict[_text(key), _text(value)], WithJsonSchema(
        {"type": "object", "propertyNames": {"pattern": key}, "additionalProperties": {"type": "string",
                                                                                       "pattern": value}})]


# What the server enforces on strings, stated in the schemas so clients generated from them
# send what it accepts. Django refuses NUL in every text field and strips required ones.
NO_NUL = r"^[^\x00]*$"
NOT_BLANK = r"^[^\x00]*[^\x00\s][^\x00]*$"
ONE_LINE = r"^[^\x00\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]*$"  # an env value is one line of the form's text
FULL_SHA = r"^[0-9a-f]{40}$"
# Syntax the form checks in its clean_ methods rather than with validators (empty: the default).
CLEANED_PATTERNS = {"execution_role_arn": f"^$|{ROLE_ARN.pattern}"}
# Form fields whose API form is an object (the UI edits them as text).
OBJECT_FIELDS = {"environment_text": ("environment", _named(ENV_KEY.pattern, ONE_LINE)),
                 "secret_environment_text": ("secret_environment", _named(ENV_KEY.pattern, ONE_LINE)),
                 "build_args_text": ("build_args", _named(BUILD_ARG.pattern, ONE_LINE)),
                 "smoke_event_text": ("smoke_event", dict[str, Any]),
                 "shares_images_with_text": ("shares_images_with", list[_text(SLUG.pattern)]),
                 "rollout_alarm_text": ("rollout.alarm", dict[str, Any]),
                 "rollout_extra_alarms_text": ("rollout.extra_alarms", list[_text(ALARM_NAME.pattern)])}


# Form fields the API groups in an object of their own: "group.key".
ROLLOUT_NAMES = {"rollout_preset": "preset", "rollout_strategy": "strategy", "rollout_percent": "percent",
                 "rollout_minutes": "minutes", "rollout_alarm_text": "alarm",
                 "rollout_extra_alarms_text": "extra_alarms",
                 "probe_count": "probe_count", "probe_max_failures": "probe_max_failures"}
NESTED = {"rollout": "how a verified version takes the alias: all at once, or a canary or linear rollout "
                     "watched by an alarm template, extra alarms and probes; `preset` sets strategy, percent and "
                     "minutes (any of them sent with it must agree)"}


def api_name(form_field: str) -> str:
    """The API's name of a form field; "rollout.<key>" for one the API groups under `rollout`."""
    if form_field in ROLLOUT_NAMES:
        return f"rollout.{ROLLOUT_NAMES[form_field]}"
    return OBJECT_FIELDS[form_field][0] if form_field in OBJECT_FIELDS else form_field


def _validators(form_class, field_name: str, field) -> list:
    """The form field's validators and its model field's (a ModelForm runs both)."""
    model_field = next((f for f in form_class._meta.model._meta.get_fields() if f.name == field_name), None)
    return list(field.validators) + list(getattr(model_field, "validators", []))


def _limits(validators: list) -> dict:
    """Bounds of a number field, the tighter of each."""
    lows = [v.limit_value for v in validators if isinstance(v, MinValueValidator)]
    highs = [v.limit_value for v in validators if isinstance(v, MaxValueValidator)]
    return {**({"ge": max(lows)} if lows else {}), **({"le": min(highs)} if highs else {})}


def _string_rules(field_name: str, field, validators: list, required: bool) -> dict:
    rules = {"max_length": field.max_length} if field.max_length else {}
    if field_name in CLEANED_PATTERNS:
        return {**rules, "pattern": CLEANED_PATTERNS[field_name]}
    # Python's \Z (a slug's) is $ in a JSON Schema pattern; several rules must all match.
    regexes = list(dict.fromkeys(v.regex.pattern.replace("\\Z", "$") for v in validators
                                 if isinstance(v, RegexValidator) and not v.inverse_match and not v.flags))
    if regexes:
        rules["pattern"] = regexes[0] if len(regexes) == 1 else "".join(f"(?={regex})" for regex in regexes)
    else:
        rules["pattern"] = NOT_BLANK if required else NO_NUL
    if required:
        rules["min_length"] = 1
    return rules


def _field_schema(form_class, field_name: str, field, partial: bool) -> tuple[str, tuple]:
    """(its API name, (type, pydantic Field)) of one form field."""
    if field_name in OBJECT_FIELDS:
        kind = OBJECT_FIELDS[field_name][1]
    elif isinstance(field, forms.BooleanField):
        kind = bool
    elif isinstance(field, forms.FloatField):  # before IntegerField: Django's FloatField subclasses it
        kind = float
    elif isinstance(field, forms.IntegerField):
        kind = int
    elif isinstance(field, forms.ChoiceField):
        kind = Literal[tuple(value for value, _ in field.choices if value != "")]
    else:
        kind = str
    required = field.required and not partial and field_name != "auto_deploy"
    extra = {}
    if isinstance(field, forms.CharField) and field_name not in OBJECT_FIELDS:
        # A PATCH may leave a required field out, not send it empty.
        extra = _string_rules(field_name, field, _validators(form_class, field_name, field), field.required)
    elif kind in (int, float):
        kind = _number(kind, **_limits(_validators(form_class, field_name, field)))
    description = str(field.help_text or field.label or "")
    name = api_name(field_name).rpartition(".")[2]
    return name, ((kind, Field(..., description=description, **extra)) if required else (
        kind | None, Field(None, description=description, **extra)))


def schema_from_form(form_class, name: str, *, partial: bool, examples: list[dict]) -> type[Schema]:
    """A request schema generated from the UI's form: the same fields, types, choices
    and the bounds its validators check, so that what the schema allows the form's
    remaining rules (settings, ownership, cross-field checks) are all that can refuse.
    The fields NESTED names are an object of their own (every key optional)."""
    fields, groups = {}, {}
    for field_name, field in form_class.base_fields.items():
        group = api_name(field_name).partition(".")[0] if "." in api_name(field_name) else ""
        key, spec = _field_schema(form_class, field_name, field, partial or bool(group))
        (groups.setdefault(group, {}) if group else fields)[key] = spec
    for group, members in groups.items():
        nested = create_model(f"{name}{group.title()}", __base__=StrictIn, **members)
        fields[group] = (nested | None, Field(None, description=NESTED[group]))
    base = type(f"{name}Base", (StrictIn,), {"model_config": ConfigDict(json_schema_extra={"examples": examples})})
    return create_model(name, __base__=base, **fields)


def _example_function() -> dict:
    """A registration this server accepts, for the document's example: the prefixes and
    roles it allows come from its settings."""
    lambda_prefix = (settings.SLIPWAY_ALLOWED_LAMBDA_PREFIXES or ["slipway-"])[0]
    ecr_prefix = (settings.SLIPWAY_ALLOWED_ECR_PREFIXES or ["slipway/"])[0]
    role = next(iter(settings.SLIPWAY_ALLOWED_EXECUTION_ROLES), "").replace("*", "lambda-example")
    return {"name": "example", "repository_url": "https://gitlab.example.com/team/example.git", "branch": "main",
            "context_path": ".", "dockerfile_path": "Dockerfile", "architecture": "arm64",
            "ecr_repository": f"{ecr_prefix}example", "lambda_name": f"{lambda_prefix}example", "alias": "live",
            "memory_mb": 512, "timeout_s": 30, "execution_role_arn": role, "environment": {"MODE": "fast"}}


FunctionIn = schema_from_form(FunctionForm, "FunctionIn", partial=False, examples=[_example_function()])
FunctionPatch = schema_from_form(FunctionForm, "FunctionPatch", partial=True,
                                 examples=[{"memory_mb": 2048, "environment": {"MODE": "slow"}}])


def _example_environment() -> dict:
    """An environment this server accepts, for the document's example."""
    lambda_prefix = (settings.SLIPWAY_ALLOWED_LAMBDA_PREFIXES or ["slipway-"])[0]
    role = next(iter(settings.SLIPWAY_ALLOWED_EXECUTION_ROLES), "").replace("*", "lambda-example")
    return {"name": "qa", "lambda_name": f"{lambda_prefix}example-qa", "execution_role_arn": role,
            "memory_mb": 512, "environment": {"MODE": "fast"}, "promotion": "manual"}


EnvironmentIn = schema_from_form(EnvironmentForm, "EnvironmentIn", partial=False, examples=[_example_environment()])
EnvironmentPatch = schema_from_form(EnvironmentForm, "EnvironmentPatch", partial=True,
                                    examples=[{"promotion": "automatic", "soak_seconds": 600}])
ENVIRONMENT_NAME = r"^[-a-zA-Z0-9_]{1,32}$"
RELEASE = r"^([0-9]{1,10}|[0-9a-f]{7,40}|sha256:[0-9a-f]{64})$"


class ReleaseOut(Schema):
    deployment: int
    version: str
    commit_sha: str
    commit_message: str
    digest: str
    finished_at: datetime | None


class FunctionOut(Schema):
    name: str
    description: str
    repository_url: str
    branch: str
    context_path: str
    dockerfile_path: str
    architecture: str
    ecr_repository: str
    lambda_name: str
    alias: str
    memory_mb: int
    timeout_s: int
    execution_role_arn: str
    auto_deploy: bool
    paused_reason: str
    archived: bool
    environment: dict[str, str] = Field(description="secret values are masked")
    secret_keys: list[str]
    build_args: dict[str, str]
    smoke_event: dict[str, Any]
    shares_images_with: list[str] = Field(description="functions that may use its ECR repository too")
    # Private repositories: the kind and whether a secret is set, never the secret.
    source_auth: str
    source_username: str
    source_known_hosts: str
    source_secret_set: bool
    live: ReleaseOut | None
    url: str


class RolloutSettingsOut(Schema):
    strategy: Literal["all_at_once", "canary", "linear"]
    preset: str | None = Field(description="the CodeDeploy-like preset these settings are; null: custom")
    percent: int = Field(description="canary: the new version's share; linear: added every step")
    minutes: int = Field(description="each step's length")
    total_minutes: int = Field(description="how long a rollout takes if never paused or aborted")
    alarm: dict[str, Any] = Field(description="the alarm template (empty: none)")
    extra_alarms: list[str]
    probe_count: int
    probe_max_failures: int


class EnvironmentOut(Schema):
    name: str
    position: int = Field(description="promotion order: 0 is where pushes deploy")
    region: str = Field(description="the installation's region: Lambda pulls images only from the ECR "
                                    "repository's region")
    lambda_name: str
    alias: str
    memory_mb: int
    timeout_s: int
    execution_role_arn: str
    environment: dict[str, str] = Field(description="secret values are masked")
    secret_keys: list[str]
    paused_reason: str
    promotion: Literal["manual", "automatic"]
    soak_seconds: int
    required_approvals: int = Field(description="approvals a deploy or promotion into it needs (0: none)")
    during_freeze: Literal["wait", "refuse"] = Field(description="what a request made during a freeze does")
    gitlab_tier: Literal["production", "staging", "testing", "development", "other"] = Field(
        description="the GitLab environment's tier (GitLab deployments)")
    rollout: RolloutSettingsOut
    live: ReleaseOut | None
    url: str
    preview: bool = Field(description="the preview environment: outside the promotion order (position 2000), "
                                      "merge requests' previews deploy to it")


def _page_of(name: str, item: type[Schema]) -> type[Schema]:
    """A page of a list endpoint: its items, its number, how many pages and items there are."""
    return create_model(name, __base__=Schema, items=(list[item], ...), page=(int, ...), pages=(int, ...),
                        count=(int, ...))


FunctionPage = _page_of("FunctionPage", FunctionOut)
EnvironmentPage = _page_of("EnvironmentPage", EnvironmentOut)


class StepOut(Schema):
    name: str
    position: int
    status: str
    started_at: datetime
    finished_at: datetime | None
    output: str


class RolloutEventOut(Schema):
    action: Literal["start", "shift", "adopt", "probe", "alarm", "pause", "resume", "promote", "abort", "done",
                    "fallback"]
    weight: float = Field(description="the new version's share after it (0-1)")
    note: str
    at: datetime


class RolloutOut(Schema):
    state: str = Field(description="rolling_out, paused, promoting (promote now asked), aborting, aborted (failed "
                                   "canary-aborted), else its deployment's status")
    strategy: Literal["canary", "linear"]
    percent: int
    minutes: int
    stable_version: str = Field(description="the alias's primary while it runs; where an abort puts it back")
    new_version: str
    weight: float = Field(description="the new version's share of the alias now (0-1)")
    step: int
    steps: int = Field(description="how many weights its plan writes (the last is 1.0, routing cleared)")
    started_at: datetime
    ended_at: datetime | None
    next_tick_at: datetime | None
    paused_at: datetime | None
    promote_now: bool
    abort_signal: str = Field(description='why it was aborted: "alarm:<name>", "probe", "manual", "worker-lost", '
                                          '"rollback", "drift"; empty otherwise')
    abort_reason: str
    alarms: list[str]
    alarms_already: list[str] = Field(description="in ALARM when it started: reported, never blocking")
    events: list[RolloutEventOut]


class DeploymentOut(Schema):
    id: int
    function: str
    environment: str
    kind: str
    trigger: str
    status: str
    terminal: bool
    requested_by: str | None
    ref: str
    commit_sha: str
    commit_message: str
    digest: str = Field(description="the image digest it ships: pinned on a promotion, else its build's once pushed")
    version: str
    previous_version: str
    target_version: str
    error_code: str
    error_message: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    steps: list[StepOut]
    rollout: RolloutOut | None = Field(description="its canary or linear rollout, if it had one")
    url: str
    notice: str = ""  # e.g. the queue did not answer: the row stays queued, or the web rolled back itself


DeploymentPage = _page_of("DeploymentPage", DeploymentOut)


class ApprovalOut(Schema):
    user: str
    decision: Literal["approved", "rejected"]
    comment: str
    digest: str
    created_at: datetime
    expires_at: datetime
    counts: bool = Field(description="counts toward the requirement now (same digest and settings, not expired, "
                                     "its user still may approve, not the requester)")


class DeploymentApprovalsOut(Schema):
    deployment: int
    function: str
    environment: str
    status: str
    required: int = Field(description="approvals it needs: the larger of what was asked at request and now")
    counted: int
    approvers: list[str] = Field(description="members who may approve it (never its requester); staff may too")
    decisions: list[ApprovalOut]
    url: str


PendingApprovalPage = _page_of("PendingApprovalPage", DeploymentApprovalsOut)


class DeployIn(StrictIn):
    model_config = ConfigDict(json_schema_extra={"examples": [{"ref": "main"}, {"commit": "3f9c2a1b" * 5}]})

    ref: str | None = Field(None, max_length=200, pattern=NO_NUL,
                            description="branch or tag (default: the function's branch)")
    commit: str | None = Field(None, pattern=FULL_SHA, description="a full 40-character commit SHA")
    environment: str | None = Field(None, pattern=ENVIRONMENT_NAME,
                                    description="only the first environment (the default): the others are promoted to")


class ReconcileOut(Schema):
    outcome: Literal["deployed", "up-to-date", "in-progress", "already-tried", "paused", "off", "archived", "error"]
    message: str
    head: str = Field(description="the commit the branch holds on the remote (empty when not read)")
    error_code: str
    deployment: DeploymentOut | None = Field(description="the deployment queued, or the one of the head found")


class RollbackIn(StrictIn):
    model_config = ConfigDict(json_schema_extra={"examples": [{"to": "1"}, {}]})

    to: str | None = Field(None, max_length=40, pattern=NO_NUL,
                           description="a version number or a commit SHA; default: the release before the live one")
    environment: str | None = Field(None, pattern=ENVIRONMENT_NAME,
                                    description="which environment; required when the function has several")


class PromoteIn(StrictIn):
    model_config = ConfigDict(json_schema_extra={"examples": [{}, {"release": "3"}]})

    release: str | None = Field(
        None, pattern=RELEASE,
        description="what you expect live in the previous environment (a version, a commit SHA prefix or "
                    "sha256:…); refused if something else is. Default: whatever is live there")


class FeedbackOut(Schema):
    gitlab_api_url: str
    gitlab_project: str
    gitlab_token_set: bool = Field(description="the token itself is write-only")
    notify_webhook_url: str
    notify_webhook_secret_set: bool = Field(description="generate the signing secret on the function's page")
    notify_members: list[str]


class FeedbackPatch(StrictIn):
    model_config = ConfigDict(json_schema_extra={"examples": [{"notify_webhook_url": "https://hooks.example.com/slipway"}]})

    gitlab_api_url: str | None = Field(None, max_length=300, pattern=NO_NUL)
    gitlab_project: str | None = Field(None, max_length=255, pattern=NO_NUL)
    gitlab_token: str | None = Field(None, max_length=255, pattern=f"^$|{GITLAB_TOKEN.pattern}",
                                     description="write-only; never returned")
    remove_gitlab_token: bool | None = None
    notify_webhook_url: str | None = Field(None, max_length=500, pattern=NO_NUL)
    notify_members: list[str] | None = Field(None, description="usernames of the function's members")


class DriftOut(Schema):
    changed_outside_slipway: bool
    differences: list[dict[str, str]] = Field(description="field, label, expected, actual; secret values masked")
    checked_at: datetime | None
    detected_at: datetime | None
    outcome: str = ""


class PreviewOut(Schema):
    mr_iid: int = Field(description="the merge request's iid in its project")
    state: Literal["open", "closed", "removed"]
    title: str
    author: str = Field(description="the GitLab user whose event last moved it")
    source_branch: str
    target_branch: str
    fork: bool
    head_sha: str
    awaiting_approval: bool = Field(description="a fork's head no deployer approved yet: nothing builds until one does")
    approved_sha: str
    version: str
    alias: str
    url: str = Field(description="its function URL, when the policy asks for one")
    latest_deployment: int | None
    removed_reason: str
    created_at: datetime
    last_commit_at: datetime | None
    closed_at: datetime | None
    page: str


PreviewPage = _page_of("PreviewPage", PreviewOut)


class PreviewSettingsIn(StrictIn):
    model_config = ConfigDict(json_schema_extra={"examples": [{}, {"url_auth": "AWS_IAM", "allow_forks": True}]})

    lambda_name: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                                    description="only when enabling: the preview Lambda (default: the first "
                                                "environment's with -preview appended)")
    allow_forks: bool = Field(False, description="forks' merge requests preview once a deployer approves each head")
    url_auth: Literal["", "AWS_IAM", "NONE"] = Field("", description="no function URL, IAM auth, or public")
    commit_status: bool = False
    target_branches: list[Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]] = Field(
        [], max_length=20, description="merge requests into these preview; empty: the function's branch")
    allow_drafts: bool = False


class PreviewSettingsOut(Schema):
    environment: str
    lambda_name: str
    execution_role_arn: str
    allow_forks: bool
    url_auth: str
    commit_status: bool
    target_branches: list[str]
    allow_drafts: bool


class ApprovePreviewIn(StrictIn):
    model_config = ConfigDict(json_schema_extra={"examples": [{"commit": "7a1c3e5b" * 5}]})

    commit: str = Field(pattern=FULL_SHA, description="the head you reviewed: refused if the MR moved since")


class ErrorBody(Schema):
    code: str
    message: str
    fields: dict[str, list[str]]


class ErrorOut(Schema):
    error: ErrorBody


ERRORS = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 413: ErrorOut,
          429: ErrorOut}


def page_out(queryset, page: int, item) -> dict:
    """Page `page` (from 1) of `queryset`, each row shown by `item`; 404 `no-such-page` past the end."""
    paginator = Paginator(queryset, PAGE_SIZE)
    try:
        shown = paginator.page(page)
    except EmptyPage:  # below 1, past the last page, and any page but the first of an empty list
        raise ApiError(404, "no-such-page", f"there are {paginator.num_pages} page(s)") from None
    return {"items": [item(row) for row in shown], "page": shown.number, "pages": paginator.num_pages,
            "count": paginator.count}
