"""The JSON API under /api/v1/: everything the UI does, for scripts and CI.

Requests are validated by the same forms as the UI (the request schemas in
the OpenAPI document are generated from them) and checked by the same access
helper, so the two can never disagree. Authentication: `Authorization:
Bearer <token>` (portal.models.ApiToken) or the browser session with CSRF.
Errors are `{"error": {"code", "message", "fields"}}`.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from django import forms
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.paginator import EmptyPage, Paginator
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db.models.functions import Now
from django.http import Http404, HttpRequest, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import reverse
from ninja import NinjaAPI, Schema, Status
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser
from ninja.security import APIKeyCookie, HttpBearer
from pydantic import BeforeValidator, ConfigDict, Field, StringConstraints, WithJsonSchema, create_model

from deploy.build import BUILD_ARG
from portal import deployments, feedback, functions
from portal.core import errors, ratelimit
from portal.feedback.forms import GITLAB_TOKEN
from portal.functions import access
from portal.functions.fields import ENV_KEY, SLUG
from portal.functions.forms import ROLE_ARN, FunctionForm
from portal.models import ApiToken, Deployment, Function
from portal.views.functions import live_deployment

log = logging.getLogger(__name__)
PAGE_SIZE = 25


class BodyCap:
    """Middleware: an API request body over SLIPWAY_API_MAX_BODY bytes is refused
    with 413 before anything reads it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/api/"):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > settings.SLIPWAY_API_MAX_BODY:
                return JsonResponse({"error": {"code": "too-large", "fields": {}, "message":
                                               f"request bodies are capped at {settings.SLIPWAY_API_MAX_BODY} bytes"}},
                                    status=413 if length > 0 else 400)
        return self.get_response(request)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, fields: dict | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.fields, self.headers = status, code, message, fields or {}, headers


# --- Authentication ------------------------------------------------------------------------


class TokenAuth(HttpBearer):
    """`Authorization: Bearer slp_…`: a token that is unknown, revoked or expired is refused outright."""

    def authenticate(self, request: HttpRequest, token: str):
        # Not the function too: only a token limited to one reads it, and joining its wide row
        # costs every request more than the one query it saves them.
        found = ApiToken.objects.select_related("user").filter(token_hash=ApiToken.digest(token)).first()
        if found is None or not found.user.is_active:
            raise ApiError(401, "invalid-token", "this token is not valid")
        if found.revoked_at:
            raise ApiError(401, "token-revoked", f"token {found.name!r} was revoked")
        if not found.is_active:
            raise ApiError(401, "token-expired", f"token {found.name!r} expired at {found.expires_at:%Y-%m-%d %H:%M}")
        ApiToken.objects.filter(pk=found.pk).update(last_used_at=Now())
        request.user = found.user
        request.api_token = found
        return found.user


class SessionAuth(APIKeyCookie):
    """The browser's session, for the UI's own fetches; unsafe methods need the CSRF token."""

    param_name = settings.SESSION_COOKIE_NAME

    def _get_key(self, request):
        return request.COOKIES.get(self.param_name)

    def authenticate(self, request: HttpRequest, key):
        if not request.user.is_authenticated:
            return None
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            check = CsrfViewMiddleware(lambda r: None)
            check.process_request(request)
            if check.process_view(request, lambda r: None, (), {}) is not None:
                raise ApiError(403, "csrf-failed", "a session request needs the X-CSRFToken header")
        request.api_token = None
        return request.user


class NotAnObject(ValueError):
    pass


class ObjectParser(Parser):
    """Every request body is a JSON object: a list, a number or `null` is refused, where
    pydantic would otherwise read `[null, null]` as an object with no fields and the
    endpoint would act on its defaults."""

    def parse_body(self, request):
        data = super().parse_body(request)
        if not isinstance(data, dict):
            raise NotAnObject("must be a JSON object")
        return data


api = NinjaAPI(title="Slipway API", version="1", urls_namespace="api", auth=[TokenAuth(), SessionAuth()],
               description=__doc__, parser=ObjectParser())


def _error(request, status: int, code: str, message: str, fields: dict | None = None, headers=None):
    response = JsonResponse({"error": {"code": code, "message": message, "fields": fields or {}}}, status=status)
    for key, value in (headers or {}).items():
        response[key] = value
    return response


@api.exception_handler(ApiError)
def _api_error(request, exc: ApiError):
    return _error(request, exc.status, exc.code, exc.message, exc.fields, exc.headers)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request, exc):
    return _error(request, 401, "unauthenticated", "send `Authorization: Bearer <token>` or sign in")


@api.exception_handler(Http404)
def _not_found(request, exc):
    return _error(request, 404, "not-found", str(exc) or "not found")


@api.exception_handler(PermissionDenied)
def _forbidden(request, exc):
    return _error(request, 403, "forbidden", str(exc) or "not allowed")


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):
    if isinstance(exc.__cause__, NotAnObject):  # ninja wraps what the parser raised
        return _error(request, 400, "invalid", "the request is not valid", {"body": [str(exc.__cause__)]})
    return _error(request, exc.status_code, "http-error", str(exc))


@api.exception_handler(ValidationError)
def _invalid(request, exc: ValidationError):
    fields: dict[str, list[str]] = {}
    for error in exc.errors:
        location = [str(part) for part in error.get("loc", ()) if part not in ("body", "payload", "query")]
        fields.setdefault(".".join(location) or "body", []).append(error.get("msg", "invalid"))
    return _error(request, 400, "invalid", "the request is not valid", fields)


@api.exception_handler(Exception)
def _crash(request, exc):
    log.exception("API request %s %s failed", request.method, request.path)
    return _error(request, 500, "internal-error", "Slipway failed to answer; the error is logged")


# --- Schemas ------------------------------------------------------------------------------


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
                 "shares_images_with_text": ("shares_images_with", list[_text(SLUG.pattern)])}


def _api_name(form_field: str) -> str:
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


def schema_from_form(form_class, name: str, *, partial: bool, examples: list[dict]) -> type[Schema]:
    """A request schema generated from the UI's form: the same fields, types, choices
    and the bounds its validators check, so that what the schema allows the form's
    remaining rules (settings, ownership, cross-field checks) are all that can refuse."""
    fields = {}
    for field_name, field in form_class.base_fields.items():
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
        fields[_api_name(field_name)] = (kind, Field(..., description=description, **extra)) if required else (
            kind | None, Field(None, description=description, **extra))
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


class FunctionPage(Schema):
    items: list[FunctionOut]
    page: int
    pages: int
    count: int


class StepOut(Schema):
    name: str
    position: int
    status: str
    started_at: datetime
    finished_at: datetime | None
    output: str


class DeploymentOut(Schema):
    id: int
    function: str
    kind: str
    trigger: str
    status: str
    terminal: bool
    requested_by: str | None
    ref: str
    commit_sha: str
    commit_message: str
    version: str
    previous_version: str
    target_version: str
    error_code: str
    error_message: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    steps: list[StepOut]
    url: str
    notice: str = ""  # e.g. the queue did not answer: the row stays queued, or the web rolled back itself


class DeploymentPage(Schema):
    items: list[DeploymentOut]
    page: int
    pages: int
    count: int


class DeployIn(StrictIn):
    model_config = ConfigDict(json_schema_extra={"examples": [{"ref": "main"}, {"commit": "3f9c2a1b" * 5}]})

    ref: str | None = Field(None, max_length=200, pattern=NO_NUL,
                            description="branch or tag (default: the function's branch)")
    commit: str | None = Field(None, pattern=FULL_SHA, description="a full 40-character commit SHA")


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


class ErrorBody(Schema):
    code: str
    message: str
    fields: dict[str, list[str]]


class ErrorOut(Schema):
    error: ErrorBody


ERRORS = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 413: ErrorOut,
          429: ErrorOut}


# --- Serialisers ---------------------------------------------------------------------------


def _release(deployment: Deployment | None) -> dict | None:
    if deployment is None:
        return None
    return {"deployment": deployment.pk, "version": deployment.version, "commit_sha": deployment.commit_sha,
            "commit_message": deployment.commit_message,
            "digest": deployment.build.digest if deployment.build else "", "finished_at": deployment.finished_at}


def function_out(request, function: Function, live: Deployment | None | bool = True) -> dict:
    if live is True:
        live = live_deployment(function)
    return {
        **{name: getattr(function, name) for name in (
            "name", "description", "repository_url", "branch", "context_path", "dockerfile_path", "architecture",
            "ecr_repository", "lambda_name", "alias", "memory_mb", "timeout_s", "execution_role_arn",
            "auto_deploy", "paused_reason", "secret_keys", "build_args", "smoke_event", "shares_images_with")},
        "archived": function.is_archived, "environment": function.masked_environment(),
        "source_auth": function.source_access.source_auth, "source_username": function.source_access.source_username,
        "source_known_hosts": function.source_access.source_known_hosts,
        "source_secret_set": bool(function.source_access.source_secret),
        "live": _release(live or None),
        "url": request.build_absolute_uri(reverse("portal-function", args=[function.name])),
    }


def deployment_out(request, deployment: Deployment) -> dict:
    return {
        "id": deployment.pk, "function": deployment.function.name, "kind": deployment.kind,
        "trigger": deployment.trigger, "status": deployment.status, "terminal": deployment.is_terminal,
        "requested_by": deployment.requested_by.get_username() if deployment.requested_by else None,
        **{name: getattr(deployment, name) for name in (
            "ref", "commit_sha", "commit_message", "version", "previous_version", "target_version", "error_code",
            "error_message", "created_at", "started_at", "finished_at")},
        "steps": [{"name": s.name, "position": s.position, "status": s.status, "started_at": s.started_at,
                   "finished_at": s.finished_at, "output": s.output} for s in deployment.steps.all()],
        "url": request.build_absolute_uri(reverse("portal-deployment", args=[deployment.pk])),
    }


# --- Access ---------------------------------------------------------------------------------

DEPLOY_SCOPE = "deploy"  # what a deploy-only token may do


def _function(request, name: str, action: str, *, scope: str = "") -> Function:
    """The function if the caller may do `action`; a token limited to another function sees 404."""
    token: ApiToken | None = getattr(request, "api_token", None)
    if token and token.function_id and token.function.name != name:
        raise Http404("no such function")
    function = access.function_for(request.user, name, action)
    if token and token.deploy_only and scope != DEPLOY_SCOPE:
        raise ApiError(403, "token-scope", "this token may only trigger, read and follow deployments")
    return function


def _deployment(request, pk: int, action: str, *, scope: str = "") -> Deployment:
    deployment = (Deployment.objects.select_related("function", "build", "requested_by")
                  .prefetch_related("steps").filter(pk=pk).first())
    if deployment is None:
        raise Http404("no such deployment")
    try:
        _function(request, deployment.function.name, action, scope=scope)
    except Http404:
        raise Http404("no such deployment") from None  # the same answer as for one that does not exist
    return deployment


def _full_only(request) -> None:
    token = getattr(request, "api_token", None)
    if token and token.deploy_only:
        raise ApiError(403, "token-scope", "this token may only trigger, read and follow deployments")


def _page(request, queryset, page: int):
    paginator = Paginator(queryset, PAGE_SIZE)
    try:
        return paginator.page(page), paginator
    except EmptyPage:  # below 1, past the last page, and any page but the first of an empty list
        raise ApiError(404, "no-such-page", f"there are {paginator.num_pages} page(s)") from None


# --- Form input -------------------------------------------------------------------------------


def _form_data(values: dict, function: Function | None) -> dict:
    """API values -> the form's own data (objects become the text the UI edits)."""
    base = {}
    if function is not None:
        initial = FunctionForm(instance=function)
        for name, field in initial.fields.items():
            value = initial.initial.get(name, field.initial)
            base[name] = value
    for form_name in FunctionForm.base_fields:
        api_name = _api_name(form_name)
        if values.get(api_name) is None:
            continue
        value = values[api_name]
        if form_name in ("environment_text", "secret_environment_text"):
            value = "\n".join(f"{k}={v}" for k, v in value.items())
        elif form_name in ("build_args_text", "smoke_event_text"):
            value = json.dumps(value)
        elif form_name == "shares_images_with_text":
            value = "\n".join(value)
        base[form_name] = value
    if base.get("auto_deploy") in (False, None):
        base.pop("auto_deploy", None)
    if function is None and values.get("auto_deploy") is None:
        base["auto_deploy"] = True
    return base


def _form_errors(form) -> ApiError:
    """400 for a request to fix; 409 when all that is wrong is a name another function holds."""
    fields = {_api_name(name): [str(e) for e in errors] for name, errors in form.errors.items()}
    if all(error.code == "unique" for errors in form.errors.as_data().values() for error in errors):
        return ApiError(409, "taken", "another function already has this name or Lambda", fields)
    return ApiError(400, "invalid", "the function's settings are not valid", fields)


# --- Endpoints ----------------------------------------------------------------------------------


@api.get("/functions", response={200: FunctionPage, **ERRORS}, summary="List the functions you may see")
def list_functions(request, name: str = "", page: int = 1):
    _full_only(request)
    visible = (access.visible_functions(request.user).filter(archived_at__isnull=True)
               .select_related("source_access").order_by("name"))
    token = request.api_token
    if token and token.function_id:
        visible = visible.filter(pk=token.function_id)
    if name:
        visible = visible.filter(name__icontains=name[:64])
    shown, paginator = _page(request, visible, page)
    return {"items": [function_out(request, f) for f in shown], "page": shown.number,
            "pages": paginator.num_pages, "count": paginator.count}


@api.post("/functions", response={201: FunctionOut, **ERRORS}, summary="Register a function (you become its owner)")
def create_function(request, payload: FunctionIn):
    _full_only(request)
    if getattr(request, "api_token", None) and request.api_token.function_id:
        raise ApiError(403, "token-scope", "a token limited to one function cannot register another")
    if not access.can_register(request.user):
        raise ApiError(403, "forbidden", "only staff may register functions here")
    form = FunctionForm(_form_data(payload.dict(), None), user=request.user)
    if not form.is_valid():
        raise _form_errors(form)
    return Status(201, function_out(request, functions.register_function(form, user=request.user), live=None))


@api.get("/functions/{name}", response={200: FunctionOut, **ERRORS}, summary="One function, with what is live")
def get_function(request, name: str):
    return function_out(request, _function(request, name, access.VIEW))


@api.patch("/functions/{name}", response={200: FunctionOut, **ERRORS}, summary="Edit a function (owner)")
def edit_function(request, name: str, payload: FunctionPatch):
    function = _function(request, name, access.ADMIN)
    values = payload.dict(exclude_unset=True)
    if values.get("name") not in (None, function.name):
        raise ApiError(400, "invalid", "a function cannot be renamed", {"name": ["cannot be changed"]})
    form = FunctionForm(_form_data(values, function), instance=function, user=request.user)
    if not form.is_valid():
        raise _form_errors(form)
    return function_out(request, functions.update_function(form, user=request.user))


@api.post("/functions/{name}/deployments", response={202: DeploymentOut, **ERRORS},
          summary="Deploy a ref or a commit")
def deploy(request, name: str, payload: DeployIn):
    function = _function(request, name, access.DEPLOY, scope=DEPLOY_SCOPE)
    try:
        ratelimit.check_deploy(request.api_token or request.user)
    except ratelimit.Limited as exc:
        raise ApiError(429, "rate-limited", f"at most {settings.SLIPWAY_API_DEPLOY_RATE} deploys per "
                       f"{settings.SLIPWAY_API_DEPLOY_WINDOW} s; retry after {exc.retry_after} s",
                       headers={"Retry-After": str(exc.retry_after)}) from None
    try:
        deployment = deployments.request_deploy(function, trigger=Deployment.Trigger.API, user=request.user,
                                             ref=payload.ref or "", commit=payload.commit or "")
    except errors.RequestRefused as exc:
        raise ApiError(409 if function.is_archived else 400, "refused", str(exc)) from None
    out = deployment_out(request, _deployment(request, deployment.pk, access.VIEW, scope=DEPLOY_SCOPE))
    return Status(202, {**out, "notice": deployments.queue_notice(deployment)})


@api.get("/functions/{name}/deployments", response={200: DeploymentPage, **ERRORS},
         summary="A function's deployments, newest first")
def list_deployments(request, name: str, page: int = 1):
    function = _function(request, name, access.VIEW, scope=DEPLOY_SCOPE)
    history = (Deployment.objects.filter(function=function).select_related("function", "build", "requested_by")
               .prefetch_related("steps").order_by("-created_at", "-pk"))
    shown, paginator = _page(request, history, page)
    return {"items": [deployment_out(request, d) for d in shown], "page": shown.number,
            "pages": paginator.num_pages, "count": paginator.count}


@api.get("/deployments/{deployment_id}", response={200: DeploymentOut, **ERRORS},
         summary="A deployment with its steps (poll until `terminal`)")
def get_deployment(request, deployment_id: int):
    return deployment_out(request, _deployment(request, deployment_id, access.VIEW, scope=DEPLOY_SCOPE))


@api.post("/functions/{name}/rollback", response={202: DeploymentOut, **ERRORS},
          summary="Roll back to the previous release, a version or a commit")
def rollback(request, name: str, payload: RollbackIn):
    function = _function(request, name, access.DEPLOY)
    try:
        deployment = deployments.request_rollback(function, trigger=Deployment.Trigger.API, user=request.user,
                                               to=payload.to or "")
    except errors.RequestRefused as exc:
        raise ApiError(409, "refused", str(exc)) from None
    out = deployment_out(request, _deployment(request, deployment.pk, access.VIEW))
    return Status(202, {**out, "notice": deployments.queue_notice(deployment)})


@api.post("/deployments/{deployment_id}/cancel", response={200: DeploymentOut, **ERRORS},
          summary="Cancel a queued deployment, or a running one before its update step")
def cancel(request, deployment_id: int):
    deployment = _deployment(request, deployment_id, access.DEPLOY)
    if not deployments.cancel(deployment, user=request.user, trigger=Deployment.Trigger.API):
        raise ApiError(409, "too-late", f"deployment #{deployment.pk} is {deployment.status}: too late to cancel")
    return deployment_out(request, _deployment(request, deployment_id, access.VIEW))


@api.post("/functions/{name}/resume", response={200: FunctionOut, **ERRORS},
          summary="Resume auto-deploy after a rollback")
def resume(request, name: str):
    function = _function(request, name, access.DEPLOY)
    deployments.resume_auto_deploy(function, user=request.user, trigger=Deployment.Trigger.API)
    function.refresh_from_db()
    return function_out(request, function)


@api.post("/functions/{name}/reconcile", response={200: ReconcileOut, **ERRORS},
          summary="Check for missed pushes: deploy the branch head if auto-deploy never did")
def reconcile(request, name: str):
    """Reads the branch head on the git host (`git ls-remote`, bounded by
    SLIPWAY_RECONCILE_TIMEOUT, outside any transaction) and queues a deploy of it
    (trigger `reconcile`) when auto-deploy is on, not paused, and no deployment of
    that commit exists. A git host that refuses or does not answer is outcome `error`."""
    function = _function(request, name, access.DEPLOY, scope=DEPLOY_SCOPE)
    try:
        ratelimit.check_deploy(request.api_token or request.user)
    except ratelimit.Limited as exc:
        raise ApiError(429, "rate-limited", f"at most {settings.SLIPWAY_API_DEPLOY_RATE} deploys per "
                       f"{settings.SLIPWAY_API_DEPLOY_WINDOW} s; retry after {exc.retry_after} s",
                       headers={"Retry-After": str(exc.retry_after)}) from None
    found = deployments.reconcile(function, user=request.user, trigger=Deployment.Trigger.API)
    deployment = (deployment_out(request, _deployment(request, found.deployment.pk, access.VIEW, scope=DEPLOY_SCOPE))
                  if found.deployment else None)
    return {"outcome": found.outcome, "message": found.message, "head": found.head, "error_code": found.code,
            "deployment": deployment}


# --- Feedback: GitLab commit status, notifications, drift (issue 12, second half) -------------


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


def feedback_out(function: Function) -> dict:
    reports = function.feedback_settings
    return {"gitlab_api_url": reports.gitlab_api_url, "gitlab_project": reports.gitlab_project,
            "gitlab_token_set": bool(reports.gitlab_status_token), "notify_webhook_url": reports.notify_webhook_url,
            "notify_webhook_secret_set": bool(reports.notify_webhook_secret),
            "notify_members": sorted(reports.notify_members.values_list("username", flat=True))}


def drift_out(function: Function, outcome: str = "") -> dict:
    from portal.feedback import drift

    function.drift_state.refresh_from_db()
    shown = drift.current(function)
    return {"changed_outside_slipway": bool(shown), "differences": shown,
            "checked_at": function.drift_state.drift_checked_at, "detected_at": function.drift_state.drift_detected_at,
            "outcome": outcome}


@api.get("/functions/{name}/feedback", response={200: FeedbackOut, **ERRORS},
         summary="Where a function reports: GitLab commit status and notifications (owner)")
def get_feedback(request, name: str):
    return feedback_out(_function(request, name, access.ADMIN))


@api.patch("/functions/{name}/feedback", response={200: FeedbackOut, **ERRORS},
           summary="Set the GitLab project and token, the notification webhook and who is emailed (owner)")
def edit_feedback(request, name: str, payload: FeedbackPatch):
    from django.contrib.auth import get_user_model

    from portal.feedback.forms import FeedbackForm

    function = _function(request, name, access.ADMIN)
    values = payload.dict(exclude_unset=True)
    reports = function.feedback_settings
    data = {"gitlab_api_url": reports.gitlab_api_url, "gitlab_project": reports.gitlab_project,
            "notify_webhook_url": reports.notify_webhook_url,
            "notify_members": list(reports.notify_members.values_list("pk", flat=True))}
    data.update({k: v for k, v in values.items() if k != "notify_members" and v is not None})
    if values.get("notify_members") is not None:
        names = values["notify_members"]
        users = dict(get_user_model().objects.filter(username__in=names).values_list("username", "pk"))
        unknown = sorted(set(names) - set(users))
        if unknown:
            raise ApiError(400, "invalid", "not valid", {"notify_members": [f"no such user: {', '.join(unknown)}"]})
        data["notify_members"] = list(users.values())
    form = FeedbackForm(data, instance=reports)
    if not form.is_valid():
        fields = {name: [str(e) for e in errors] for name, errors in form.errors.items()}
        raise ApiError(400, "invalid", "the feedback settings are not valid", fields)
    try:
        return feedback_out(feedback.update_feedback(form, user=request.user))
    except errors.RequestRefused as exc:
        raise ApiError(409, "refused", str(exc)) from None


@api.get("/functions/{name}/drift", response={200: DriftOut, **ERRORS},
         summary="What AWS reported that differs from what Slipway left there")
def get_drift(request, name: str):
    return drift_out(_function(request, name, access.VIEW))


@api.post("/functions/{name}/drift/check", response={200: DriftOut, **ERRORS},
          summary="Compare the function in AWS with what Slipway left there now (deployer)")
def check_drift(request, name: str):
    from deploy.errors import DeployError
    from portal.feedback import drift

    function = _function(request, name, access.DEPLOY)
    try:
        result = drift.check(function, user=request.user)
    except DeployError as exc:
        raise ApiError(409, "aws-unavailable", f"the check could not read the function from AWS: {exc.message}"
                       ) from None
    return drift_out(function, result.outcome)


@api.post("/functions/{name}/drift/accept", response={200: DriftOut, **ERRORS},
          summary="Accept what AWS reports as the new expected state (owner)")
def accept_drift(request, name: str):
    from portal.feedback import drift

    function = _function(request, name, access.ADMIN)
    try:
        drift.accept(function, user=request.user)
    except drift.Refused as exc:
        raise ApiError(409, "refused", str(exc)) from None
    return drift_out(function, "accepted")
