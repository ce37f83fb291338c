"""The function's and its environments' settings forms (LambdaSettingsForm, their shared
base, holds the Lambda settings' rules), with the same validators the pipeline applies
(deploy/), and the member, role and audit-filter forms. Repository credentials are
checked by portal.sources.
"""

from __future__ import annotations

import json
import re

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Q

from deploy import lambdas, source
from deploy.build import validate_build_args
from deploy.errors import UserError
from portal import sources
from portal.functions import access
from portal.functions.fields import EnvironmentField, JSONObjectField, NamesField
from portal.functions.models import Environment, Function, Membership
from portal.sources import SourceAuth

ENV_LIMIT_BYTES = lambdas.ENVIRONMENT_LIMIT  # Lambda's limit on all environment variables together
ROLE_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")


def user_error(exc: UserError) -> forms.ValidationError:
    return forms.ValidationError(exc.message)


def _allowed(value: str, prefixes: list[str]) -> bool:
    return any(value.startswith(prefix) for prefix in prefixes)


def lambda_name_refused(value: str) -> str:
    """Why Slipway may not manage a Lambda of this name (the allowed prefixes); "" when it may."""
    if _allowed(value, settings.SLIPWAY_ALLOWED_LAMBDA_PREFIXES):
        return ""
    return ("Slipway may only manage Lambda functions whose names start with "
            + " or ".join(settings.SLIPWAY_ALLOWED_LAMBDA_PREFIXES or ["(none allowed)"]))


def role_allowed(arn: str) -> bool:
    for allowed in settings.SLIPWAY_ALLOWED_EXECUTION_ROLES:
        if arn == allowed or (allowed.endswith("*") and arn.startswith(allowed[:-1])):
            return True
    return False


# The Lambda settings of an environment (environment_text and secret_environment_text too).
ENVIRONMENT_FIELDS = ("lambda_name", "alias", "memory_mb", "timeout_s", "execution_role_arn")
SOAK_LIMIT = 7 * 24 * 3600  # a soak longer than a week is a release nobody is waiting for
MAX_ENVIRONMENTS = 10  # per function: a promotion chain longer than this is a mistake, not a pipeline
MAX_REQUIRED_APPROVALS = 20
# What the preview environment's edit form shows but never changes.
PREVIEW_FIXED = ("execution_role_arn", "position", "alias", "promotion", "soak_seconds", "required_approvals",
                 "during_freeze", "gitlab_tier")


def eligible_approvers(function: Function) -> int:
    """How many active members of `function` may approve (owners and approvers; staff who
    are not members are not counted: protection must not depend on them)."""
    return Membership.objects.filter(function=function, role__in=access.APPROVING_ROLES,
                                     user__is_active=True).count()


def approvals_limit(function: Function) -> tuple[int, int]:
    """(eligible approvers, the most approvals an environment may require): the requester
    never counts, so one fewer than the eligible members."""
    eligible = eligible_approvers(function)
    return eligible, max(eligible - 1, 0)


def approvals_problem(function: Function, required: int) -> str:
    """Why `required` approvals cannot be met by `function`'s members; "" when they can."""
    eligible, most = approvals_limit(function)
    if required <= most:
        return ""
    return (f"{function.name} has {eligible} member(s) who may approve (owners and approvers); the requester "
            f"never counts, so at most {most} approval(s) can be required: add approvers first")


def _environment_field(name: str) -> forms.Field:
    """The form field of an Environment field, carrying the model field's validators: a
    ModelForm runs only its own model's, and the function form's model is Function."""
    model_field = Environment._meta.get_field(name)
    field = model_field.formfield()
    field.validators = [*field.validators, *(v for v in model_field.validators if v not in field.validators)]
    return field


class LambdaSettingsForm(forms.Form):
    """The Lambda settings of one environment, with their rules: the allowed Lambda name
    prefixes and execution roles, one Lambda per environment, Lambda's size limit on the
    environment. Secret environment values are write-only: the edit form shows their
    names with empty values, and an empty value keeps what is stored.

    The shared base of FunctionForm (the function's first environment) and EnvironmentForm
    (any one); a subclass sets `self.function` (None while registering one) and
    `self.environment` (the row it edits, unsaved for a new one) before `_init_settings`."""

    lambda_name = _environment_field("lambda_name")
    alias = _environment_field("alias")
    memory_mb = _environment_field("memory_mb")
    timeout_s = _environment_field("timeout_s")
    execution_role_arn = _environment_field("execution_role_arn")

    environment_text = EnvironmentField(
        label="Environment", required=False,
        help_text="KEY=value, one a line. Shown to everyone who can see the function.")
    secret_environment_text = EnvironmentField(
        label="Secret environment", required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="KEY=value, one a line. Never shown again after saving; leave a value empty to keep it, "
                  "remove the line to delete it.")

    function: Function | None
    environment: Environment

    def _init_settings(self) -> None:
        env = self.environment
        if env.pk:
            for name in ENVIRONMENT_FIELDS:
                self.initial.setdefault(name, getattr(env, name))
            plain = {k: v for k, v in env.variables.items() if k not in env.secret_keys}
            self.initial.setdefault("environment_text", "\n".join(f"{k}={v}" for k, v in plain.items()))
            self.initial.setdefault("secret_environment_text", "\n".join(f"{k}=" for k in env.secret_keys))
        self.secret_changes: list[str] = []

    def clean_lambda_name(self):
        value = self.cleaned_data["lambda_name"]
        if refused := lambda_name_refused(value):
            raise forms.ValidationError(refused)
        other = Environment.objects.filter(lambda_name=value).exclude(pk=self.environment.pk).first()
        if other is not None:  # two environments never share a Lambda (Environment.lambda_name)
            mine = self.function is not None and other.function_id == self.function.pk
            whose = f"environment ({other.name})" if mine else "function"
            raise forms.ValidationError(f"another {whose} already deploys to this Lambda", code="unique")
        return value

    def clean_execution_role_arn(self):
        value = self.cleaned_data["execution_role_arn"].strip()
        if not value:
            if not settings.SLIPWAY_DEFAULT_EXECUTION_ROLE:
                raise forms.ValidationError("no default execution role is configured: name one")
            return value
        if not ROLE_ARN.match(value):
            raise forms.ValidationError("not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)")
        if not role_allowed(value):
            raise forms.ValidationError("this role is not one the platform team allows Slipway to pass")
        return value

    def clean_secret_environment_text(self):
        given = self.cleaned_data["secret_environment_text"]
        env = self.environment
        stored = env.variables if env.pk else {}
        secrets = {}
        for key, value in given.items():
            if value == "" and key not in env.secret_keys:
                raise forms.ValidationError(f"{key} has no value")
            secrets[key] = stored.get(key, "") if value == "" else value
            if value != "" or key not in env.secret_keys:
                self.secret_changes.append(key)
        self.secret_changes += [k for k in env.secret_keys if k not in given]
        return secrets

    def _clean_settings(self, data: dict) -> None:
        """The checks across the two environment fields: a name is plain or secret, and
        both together fit in Lambda's limit."""
        plain, secret = data.get("environment_text"), data.get("secret_environment_text")
        if plain is not None and secret is not None:
            both = sorted(set(plain) & set(secret))
            if both:
                self.add_error("secret_environment_text", f"{', '.join(both)} also set as plain environment")
            size = lambdas.environment_size({**plain, **secret})
            if size > ENV_LIMIT_BYTES:
                self.add_error("environment_text", f"the environment takes {size} bytes as Lambda measures it "
                                                   f"(as JSON); Lambda allows {ENV_LIMIT_BYTES}")

    def apply_settings(self) -> Environment:
        """The cleaned Lambda settings on self.environment (not saved)."""
        env = self.environment
        for name in ENVIRONMENT_FIELDS:
            setattr(env, name, self.cleaned_data[name])
        plain, secret = self.cleaned_data["environment_text"], self.cleaned_data["secret_environment_text"]
        env.variables = {**plain, **secret}
        env.secret_keys = sorted(secret)
        return env


class FunctionForm(LambdaSettingsForm, forms.ModelForm):
    """Register or edit a function and its first environment's Lambda settings (where
    pushes deploy; the others are edited with EnvironmentForm)."""

    build_args_text = JSONObjectField(what="Build args", label="Build args", required=False,
                                      widget=forms.Textarea(attrs={"rows": 2}), help_text="A JSON object.")
    golden_iou = forms.FloatField(
        label="Golden IoU threshold", required=False, min_value=0.1, max_value=1.0,
        help_text="A deploy's boxes on each golden case must overlap the saved ones at least this much "
                  "(intersection over union); empty keeps the current value (0.9 for a new function).")
    smoke_event_text = JSONObjectField(what="The smoke event", label="Smoke event", required=False,
                                       help_text="A JSON object invoked on each new version before the alias moves.")
    shares_images_with_text = NamesField(
        label="Shares images with", required=False,
        help_text="Functions (by name, one a line) that may use this function's ECR repository too, when it is "
                  "the first registered with it. They may adopt its images, and retention keeps an image "
                  "there while any of them needs it.")

    # --- Private repositories (see _clean_source) ------------------------------------------------
    source_auth = forms.ChoiceField(
        label="Repository access", required=False, choices=SourceAuth.choices,
        help_text="How git reads a private repository: a GitLab deploy token (https:// URLs) or a deploy key "
                  "(ssh:// or git@ URLs), with read_repository access only.")
    source_username = forms.CharField(label="Deploy token username", required=False, max_length=255,
                                      help_text="GitLab shows it beside the token (gitlab+deploy-token-…).")
    source_token = forms.CharField(
        label="Deploy token", required=False, max_length=1024, widget=forms.PasswordInput(render_value=False),
        help_text="Write-only: never shown again after saving.")
    source_private_key = forms.CharField(
        label="Deploy key (private key)", required=False, max_length=16384, strip=False,
        widget=forms.Textarea(attrs={"rows": 3, "autocomplete": "off", "spellcheck": "false"}),
        help_text="The whole private key file, without a passphrase. Write-only: never shown again after saving.")
    source_known_hosts = forms.CharField(
        label="Git host key(s)", required=False, max_length=8192, widget=forms.Textarea(attrs={"rows": 2}),
        help_text="known_hosts line(s) for the git host (ssh-keyscan -p PORT HOST, checked out of band): "
                  "ssh refuses any other host key.")

    class Meta:
        model = Function
        fields = ["name", "description", "repository_url", "branch", "context_path", "dockerfile_path",
                  "architecture", "ecr_repository", "lambda_name", "alias", "memory_mb", "timeout_s",
                  "execution_role_arn", "auto_deploy", "tag_pattern"]

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user  # who is registering or editing: the owner of a repository is named only if they see it
        function = self.instance
        self.function = function if function.pk else None
        # The environment it edits: the first, or the one a new function gets.
        self.environment = function.first_environment if function.pk else Environment(name="production", position=0)
        self._init_settings()
        if function.pk:
            self.fields["name"].disabled = True
            self.initial.setdefault("shares_images_with_text", "\n".join(function.shares_images_with or []))
            self.initial.setdefault("build_args_text", json.dumps(function.build_args or {}, indent=1))
            self.initial.setdefault("smoke_event_text", json.dumps(function.smoke_event or {}))
        self.initial.setdefault("golden_iou", function.golden_iou)
        self._init_source(function)

    def _init_source(self, function: Function) -> None:
        """The stored secret is never put back in the form: it says "set", and how to replace or remove it."""
        stored = function.source_access if function.pk else None
        self.initial.setdefault("source_auth", stored.source_auth if stored else SourceAuth.NONE)
        self.initial.setdefault("source_username", stored.source_username if stored else "")
        self.initial.setdefault("source_known_hosts", stored.source_known_hosts if stored else "")
        self.source_plan = None
        if stored and stored.source_secret:
            field = "source_token" if stored.source_auth == SourceAuth.TOKEN else "source_private_key"
            what = "A token" if field == "source_token" else "A key"
            self.fields[field].help_text = (f"{what} is set (never shown again). Leave empty to keep it, enter a new "
                                            "one to replace it; choose None above to remove it.")

    def clean_golden_iou(self):
        value = self.cleaned_data.get("golden_iou")
        return self.instance.golden_iou if value is None else value  # the model's default for a new one

    def clean_repository_url(self):
        try:
            return source.validate_repository_url(self.cleaned_data["repository_url"],
                                                  allow_local=settings.SLIPWAY_ALLOW_LOCAL_REPOSITORIES)
        except UserError as exc:
            raise user_error(exc) from None

    def clean_branch(self):
        try:
            return source.validate_ref(self.cleaned_data["branch"])
        except UserError as exc:
            raise user_error(exc) from None

    def _subpath(self, field: str, what: str) -> str:
        try:
            return source.validate_subpath(self.cleaned_data[field], what)
        except UserError as exc:
            raise user_error(exc) from None

    def clean_context_path(self):
        return self._subpath("context_path", "build context")

    def clean_dockerfile_path(self):
        return self._subpath("dockerfile_path", "Dockerfile")

    def clean_ecr_repository(self):
        value = self.cleaned_data["ecr_repository"]
        if not _allowed(value, settings.SLIPWAY_ALLOWED_ECR_PREFIXES):
            raise forms.ValidationError("Slipway may only push to ECR repositories starting with "
                                        + " or ".join(settings.SLIPWAY_ALLOWED_ECR_PREFIXES or ["(none allowed)"]))
        if self.instance.pk and value == self.instance.ecr_repository:
            return value  # already its repository: granted (or first) when it came here
        # A repository belongs to the first function registered with it: its images (and what its
        # retention deletes) are that function's business unless its owners share them.
        owner = Function.objects.filter(ecr_repository=value).exclude(pk=self.instance.pk).order_by("pk").first()
        name = self.instance.name if self.instance.pk else self.cleaned_data.get("name", "")
        if owner is not None and name not in owner.shares_images_with:
            if self.user is not None and access.can(self.user, owner, access.VIEW):
                raise forms.ValidationError(
                    f"{value} belongs to {owner.name}: its owners can let this function use it by adding "
                    f"{name or 'its name'} to Shares images with in {owner.name}'s settings")
            raise forms.ValidationError(f"{value} is owned by another function: its owners can let this function "
                                        "use it (Shares images with, in their settings)")
        return value

    def clean_shares_images_with_text(self):
        names = self.cleaned_data["shares_images_with_text"]
        return [name for name in names if name != (self.instance.name or self.cleaned_data.get("name"))]

    def clean_build_args_text(self):
        try:
            return validate_build_args(self.cleaned_data["build_args_text"])
        except UserError as exc:
            raise user_error(exc) from None

    def clean(self):
        data = super().clean()
        self._clean_source(data)
        self._clean_settings(data)
        return data

    def apply(self) -> Function:
        """The cleaned values on the instance and on its first environment (self.environment;
        neither saved): the registry saves both, and the repository access (source_plan),
        in one transaction."""
        function = self.instance
        self.apply_settings()
        function.build_args = self.cleaned_data["build_args_text"]
        function.smoke_event = self.cleaned_data["smoke_event_text"]
        function.shares_images_with = self.cleaned_data["shares_images_with_text"]
        function.golden_iou = self.cleaned_data["golden_iou"]
        return function

    def _clean_source(self, data: dict) -> None:
        """The repository's credentials, checked by the sources package's rules. The new
        secret is encrypted when the function is saved; a missing key is said here."""
        from portal.core import crypto

        stored = self.instance.source_access if self.instance.pk else None
        planned = sources.plan_access(sources.asked_access(data, stored.source_auth if stored else ""),
                                      data.get("repository_url"), stored,
                                      self.instance.repository_url if self.instance.pk else "")
        for name, messages in planned.errors.items():
            for message in messages:
                self.add_error(name, message)
        secret_field = "source_token" if planned.values.get("source_auth") == SourceAuth.TOKEN else "source_private_key"
        if planned.secret and secret_field not in self.errors:
            try:
                crypto.check_ready()
            except crypto.Unavailable as exc:
                self.add_error(secret_field, str(exc))
        self.source_plan = planned


def _optional(field: forms.Field) -> forms.Field:
    """`field`, not required: a new environment takes the model's default for what is left out."""
    field.required = False
    return field


class EnvironmentForm(LambdaSettingsForm, forms.ModelForm):
    """Add or edit one environment of a function: its name and place in the promotion order,
    its Lambda settings (the function form's rules, LambdaSettingsForm) and its promotion
    rule. A name is the environment's for good (URLs, commit statuses and the audit trail
    use it): the edit form shows it disabled. The place is checked against the function's
    other environments when the registry saves it (portal/functions/registry.py), under the
    function's lock."""

    alias = _optional(_environment_field("alias"))
    memory_mb = _optional(_environment_field("memory_mb"))
    timeout_s = _optional(_environment_field("timeout_s"))
    promotion = _optional(Environment._meta.get_field("promotion").formfield())
    soak_seconds = forms.IntegerField(
        label="Soak time (s)", required=False, min_value=0, max_value=SOAK_LIMIT,
        help_text="Automatic promotion waits this long after the previous environment's deployment succeeded "
                  f"(0: at once; at most {SOAK_LIMIT} s, a week).")
    required_approvals = forms.IntegerField(
        label="Required approvals", required=False, min_value=0, max_value=MAX_REQUIRED_APPROVALS,
        help_text="Approvals a deploy or promotion into it needs, from owners or approvers other than its "
                  "requester, before it touches the Lambda (0: none). At most the function's approvers minus one.")
    during_freeze = _optional(Environment._meta.get_field("during_freeze").formfield())
    gitlab_tier = _optional(Environment._meta.get_field("gitlab_tier").formfield())
    position = forms.IntegerField(
        label="Position", required=False, min_value=0, max_value=MAX_ENVIRONMENTS - 1,
        help_text="Its place in the promotion order: 0 is where pushes deploy. Empty: after the others. "
                  "The environments at and after it move one place down.")

    # Left out or empty: what the environment has (the model's default for a new one).
    KEPT_WHEN_EMPTY = ("alias", "memory_mb", "timeout_s", "promotion", "soak_seconds", "required_approvals",
                       "during_freeze", "gitlab_tier")

    class Meta:
        model = Environment
        fields = ["name", "lambda_name", "alias", "memory_mb", "timeout_s", "execution_role_arn", "promotion",
                  "soak_seconds", "required_approvals", "during_freeze", "gitlab_tier"]

    field_order = ["name", "position", "lambda_name", "alias", "memory_mb", "timeout_s", "environment_text",
                   "secret_environment_text", "execution_role_arn", "promotion", "soak_seconds",
                   "required_approvals", "during_freeze", "gitlab_tier"]

    def __init__(self, *args, function: Function, instance: Environment | None = None, user=None, **kwargs):
        super().__init__(*args, instance=instance or Environment(function=function), **kwargs)
        self.user = user
        self.function = function
        self.environment = self.instance
        self._init_settings()
        if self.instance.pk:
            self.fields["name"].disabled = True
            self.initial.setdefault("position", self.instance.position)
        if self.instance.preview:  # its role is the platform's preview role; it has no place in the order
            self.initial["position"] = None
            for name in PREVIEW_FIXED:
                self.fields[name].disabled = True

    def clean_name(self):
        value = self.cleaned_data["name"]
        taken = Environment.objects.filter(function=self.function, name=value).exclude(pk=self.instance.pk)
        if taken.exists():
            raise forms.ValidationError(f"{self.function.name} already has an environment named {value}",
                                        code="unique")
        return value

    def clean_position(self):
        value = self.cleaned_data["position"]
        others = Environment.objects.in_order().filter(function=self.function).exclude(pk=self.instance.pk).count()
        if value is not None and value > others:
            last = "after the others" if self.instance.pk is None else "the last place"
            raise forms.ValidationError(f"{self.function.name} has {others} other environment(s): the position is "
                                        f"0 to {others} ({others} is {last})")
        return value

    def clean(self):
        data = super().clean()
        for name in self.KEPT_WHEN_EMPTY:
            if name in data and data[name] in (None, ""):
                data[name] = getattr(self.instance, name)  # not yet the form's values: _post_clean sets them
        self._clean_settings(data)
        required = data.get("required_approvals")
        # Checked only when it is raised: lowering (or keeping) a requirement is never refused.
        if required and required > self.instance.required_approvals:
            problem = approvals_problem(self.function, required)
            if problem:
                self.add_error("required_approvals", problem)
        return data

    def apply(self) -> Environment:
        """The cleaned values on the environment (not saved); the registry places and saves it."""
        return self.apply_settings()


class MemberForm(forms.Form):
    user = forms.CharField(max_length=254, label="Username or email")
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.DEPLOYER)

    def clean_user(self):
        value = self.cleaned_data["user"].strip()
        found = list(get_user_model().objects.filter(Q(username=value) | Q(email__iexact=value), is_active=True)[:2])
        if not found:
            raise forms.ValidationError(f"no active user {value!r}: staff create users in the admin")
        if len(found) > 1:
            raise forms.ValidationError(f"{value!r} matches several users: use the username")
        return found[0]


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices)


class AuditFilterForm(forms.Form):
    function = forms.CharField(required=False, max_length=64)
    user = forms.CharField(required=False, max_length=150)
