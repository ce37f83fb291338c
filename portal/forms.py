"""All input, with the same validators the pipeline applies (deploy/)."""

from __future__ import annotations

import json
import re

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Q

from deploy import source
from deploy.build import validate_build_args
from deploy.errors import UserError
from portal.models import Function, Membership

ENV_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Lambda sets these itself and refuses them in a function's configuration.
RESERVED_ENV = re.compile(r"^(AWS_.*|_HANDLER|_X_AMZN_TRACE_ID|LAMBDA_TASK_ROOT|LAMBDA_RUNTIME_DIR|TZ)$")
ENV_LIMIT_BYTES = 4096  # Lambda's limit on all environment variables together
ROLE_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")


def _user_error(exc: UserError) -> forms.ValidationError:
    return forms.ValidationError(exc.message)


def parse_env(text: str, field: str) -> dict[str, str]:
    """`KEY=value` lines; blank lines and `#` comments ignored."""
    env: dict[str, str] = {}
    for number, line in enumerate((text or "").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep:
            raise forms.ValidationError(f"line {number}: write KEY=value")
        if not ENV_KEY.match(key):
            raise forms.ValidationError(f"line {number}: {key!r} is not a valid variable name "
                                        "(a letter, then letters, digits or _)")
        if RESERVED_ENV.match(key):
            raise forms.ValidationError(f"line {number}: {key} is reserved by Lambda")
        if key in env:
            raise forms.ValidationError(f"line {number}: {key} is set twice")
        env[key] = value
    return env


def _json_object(text: str, what: str) -> dict:
    try:
        value = json.loads(text or "{}")
    except ValueError as exc:
        raise forms.ValidationError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise forms.ValidationError(f"{what} must be a JSON object")
    return value


def _allowed(value: str, prefixes: list[str]) -> bool:
    return any(value.startswith(prefix) for prefix in prefixes)


def role_allowed(arn: str) -> bool:
    for allowed in settings.SLIPWAY_ALLOWED_EXECUTION_ROLES:
        if arn == allowed or (allowed.endswith("*") and arn.startswith(allowed[:-1])):
            return True
    return False


class FunctionForm(forms.ModelForm):
    """Register or edit a function. Secret environment values are write-only:
    the edit form shows their names with empty values, and an empty value keeps
    what is stored."""

    environment_text = forms.CharField(
        label="Environment", required=False, widget=forms.Textarea(attrs={"rows": 4}),
        help_text="KEY=value, one a line. Shown to everyone who can see the function.")
    secret_environment_text = forms.CharField(
        label="Secret environment", required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="KEY=value, one a line. Never shown again after saving; leave a value empty to keep it, "
                  "remove the line to delete it.")
    build_args_text = forms.CharField(label="Build args", required=False,
                                      widget=forms.Textarea(attrs={"rows": 2}), help_text="A JSON object.")
    golden_iou = forms.FloatField(
        label="Golden IoU threshold", required=False, min_value=0.1, max_value=1.0,
        help_text="A deploy's boxes on each golden case must overlap the saved ones at least this much "
                  "(intersection over union); empty keeps the current value (0.9 for a new function).")
    smoke_event_text = forms.CharField(label="Smoke event", required=False,
                                       widget=forms.Textarea(attrs={"rows": 3}),
                                       help_text="A JSON object invoked on each new version before the alias moves.")

    class Meta:
        model = Function
        fields = ["name", "description", "repository_url", "branch", "context_path", "dockerfile_path",
                  "architecture", "ecr_repository", "lambda_name", "alias", "memory_mb", "timeout_s",
                  "execution_role_arn", "auto_deploy", "tag_pattern"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        function = self.instance
        if function.pk:
            self.fields["name"].disabled = True
            plain = {k: v for k, v in function.environment.items() if k not in function.secret_keys}
            self.initial.setdefault("environment_text", "\n".join(f"{k}={v}" for k, v in plain.items()))
            self.initial.setdefault("secret_environment_text", "\n".join(f"{k}=" for k in function.secret_keys))
            self.initial.setdefault("build_args_text", json.dumps(function.build_args or {}, indent=1))
            self.initial.setdefault("smoke_event_text", json.dumps(function.smoke_event or {}))
        self.initial.setdefault("golden_iou", function.golden_iou)
        self.secret_changes: list[str] = []

    def clean_golden_iou(self):
        value = self.cleaned_data.get("golden_iou")
        return self.instance.golden_iou if value is None else value  # the model's default for a new one

    def clean_repository_url(self):
        try:
            return source.validate_repository_url(self.cleaned_data["repository_url"],
                                                  allow_local=settings.SLIPWAY_ALLOW_LOCAL_REPOSITORIES)
        except UserError as exc:
            raise _user_error(exc) from None

    def clean_branch(self):
        try:
            return source.validate_ref(self.cleaned_data["branch"])
        except UserError as exc:
            raise _user_error(exc) from None

    def _subpath(self, field: str, what: str) -> str:
        try:
            return source.validate_subpath(self.cleaned_data[field], what)
        except UserError as exc:
            raise _user_error(exc) from None

    def clean_context_path(self):
        return self._subpath("context_path", "build context")

    def clean_dockerfile_path(self):
        return self._subpath("dockerfile_path", "Dockerfile")

    def clean_ecr_repository(self):
        value = self.cleaned_data["ecr_repository"]
        if not _allowed(value, settings.SLIPWAY_ALLOWED_ECR_PREFIXES):
            raise forms.ValidationError("Slipway may only push to ECR repositories starting with "
                                        + " or ".join(settings.SLIPWAY_ALLOWED_ECR_PREFIXES or ["(none allowed)"]))
        return value

    def clean_lambda_name(self):
        value = self.cleaned_data["lambda_name"]
        if not _allowed(value, settings.SLIPWAY_ALLOWED_LAMBDA_PREFIXES):
            raise forms.ValidationError("Slipway may only manage Lambda functions whose names start with "
                                        + " or ".join(settings.SLIPWAY_ALLOWED_LAMBDA_PREFIXES or ["(none allowed)"]))
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

    def clean_build_args_text(self):
        try:
            return validate_build_args(_json_object(self.cleaned_data["build_args_text"], "Build args"))
        except UserError as exc:
            raise _user_error(exc) from None

    def clean_smoke_event_text(self):
        return _json_object(self.cleaned_data["smoke_event_text"], "The smoke event")

    def clean_environment_text(self):
        return parse_env(self.cleaned_data["environment_text"], "environment")

    def clean_secret_environment_text(self):
        given = parse_env(self.cleaned_data["secret_environment_text"], "secret environment")
        stored = self.instance.environment if self.instance.pk else {}
        secrets = {}
        for key, value in given.items():
            if value == "" and key not in self.instance.secret_keys:
                raise forms.ValidationError(f"{key} has no value")
            secrets[key] = stored.get(key, "") if value == "" else value
            if value != "" or key not in self.instance.secret_keys:
                self.secret_changes.append(key)
        self.secret_changes += [k for k in self.instance.secret_keys if k not in given]
        return secrets

    def clean(self):
        data = super().clean()
        plain, secret = data.get("environment_text"), data.get("secret_environment_text")
        if plain is not None and secret is not None:
            both = sorted(set(plain) & set(secret))
            if both:
                self.add_error("secret_environment_text", f"{', '.join(both)} also set as plain environment")
            size = sum(len(k) + len(v) for k, v in {**plain, **secret}.items())
            if size > ENV_LIMIT_BYTES:
                self.add_error("environment_text", f"the environment takes {size} bytes; Lambda allows "
                                                   f"{ENV_LIMIT_BYTES}")
        return data

    def apply(self) -> Function:
        """The cleaned values on the instance (not saved): services save it in one transaction."""
        function = self.instance
        plain, secret = self.cleaned_data["environment_text"], self.cleaned_data["secret_environment_text"]
        function.environment = {**plain, **secret}
        function.secret_keys = sorted(secret)
        function.build_args = self.cleaned_data["build_args_text"]
        function.smoke_event = self.cleaned_data["smoke_event_text"]
        function.golden_iou = self.cleaned_data["golden_iou"]
        return function


class DeployForm(forms.Form):
    ref = forms.CharField(max_length=200, label="Branch, tag or commit")

    def clean_ref(self):
        try:
            return source.validate_ref(self.cleaned_data["ref"].strip())
        except UserError as exc:
            raise _user_error(exc) from None


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


class WebhookTokenForm(forms.Form):
    """Generate (or rotate) a webhook token, or remove it."""

    action = forms.ChoiceField(choices=[("generate", "Generate"), ("remove", "Remove")])


class AuditFilterForm(forms.Form):
    function = forms.CharField(required=False, max_length=64)
    user = forms.CharField(required=False, max_length=150)


# --- The test console ----------------------------------------------------------------------

SIZE = re.compile(r"^\s*(\d{1,5})\s*(?:[x,]\s*(\d{1,5}))?\s*$", re.IGNORECASE)


def _size(value: str, field: str) -> list[int] | None:
    if not value.strip():
        return None
    found = SIZE.match(value)
    if not found:
        raise forms.ValidationError(f"{field}: write WIDTHxHEIGHT (e.g. 30x30) or one number for a square")
    width, height = int(found.group(1)), int(found.group(2) or found.group(1))
    if not (1 <= width <= 20000 and 1 <= height <= 20000):
        raise forms.ValidationError(f"{field}: each side must be between 1 and 20000")
    return [width, height]


class ConsoleForm(forms.Form):
    """One console invoke: an image (upload, sample, or one already stored), the target
    (and a second one to compare), the detector and its options. Empty options are not
    sent: the function applies its own defaults, which the form shows as placeholders.
    Ranges are the detector's (function/src/handler.py), so a typo costs no invoke."""

    image = forms.FileField(required=False, allow_empty_file=True)
    sample = forms.ChoiceField(required=False, choices=[("", "—")])
    image_id = forms.IntegerField(required=False, widget=forms.HiddenInput)
    target = forms.ChoiceField(choices=[])
    compare_with = forms.ChoiceField(required=False, choices=[], label="Compare with")
    detector = forms.ChoiceField(choices=[])
    scale_factor = forms.FloatField(required=False, min_value=1.01, max_value=2.0)
    min_neighbors = forms.IntegerField(required=False, min_value=0, max_value=100)
    min_size = forms.CharField(required=False, max_length=20)
    max_size = forms.CharField(required=False, max_length=20)
    max_side = forms.IntegerField(required=False, min_value=32, max_value=20000)

    def __init__(self, *args, targets: list[tuple[str, str]], **kwargs):
        from portal import console

        super().__init__(*args, **kwargs)
        self.fields["target"].choices = targets
        self.fields["compare_with"].choices = [("", "— no comparison —"), *targets]
        self.fields["detector"].choices = [(d, d) for d in console.DETECTORS]
        self.fields["sample"].choices = [("", "—")] + [(k, f"{k} ({v['what']})") for k, v in console.SAMPLES.items()]
        for name in ("scale_factor", "min_neighbors", "min_size", "max_size", "max_side"):
            unset = "not used" if name == "min_neighbors" else "default: none"
            shown = {kind: f"default: {values[name]}" if values[name] != "" else unset
                     for kind, values in console.DEFAULTS.items()}
            # The page swaps the placeholder when the detector changes (HOG has its own defaults).
            self.fields[name].widget.attrs.update({"placeholder": shown["haar"], "data-haar": shown["haar"],
                                                   "data-people": shown["people"], "style": "min-width:8rem"})
        self.fields["scale_factor"].widget.attrs["step"] = "0.01"

    def clean_min_size(self):
        return _size(self.cleaned_data["min_size"], "min size")

    def clean_max_size(self):
        return _size(self.cleaned_data["max_size"], "max size")

    def clean(self):
        data = super().clean()
        given = [bool(data.get("image")), bool(data.get("sample")), data.get("image_id") is not None]
        if sum(given) == 0 and not self.errors:
            raise forms.ValidationError("choose an image: upload one, drop or paste it, or pick a sample")
        if sum(given) > 1:
            raise forms.ValidationError("send one image: an upload, a sample or the previous image, not several")
        smallest, largest = data.get("min_size"), data.get("max_size")
        if smallest and largest and (largest[0] < smallest[0] or largest[1] < smallest[1]):
            self.add_error("max_size", "max size must not be smaller than min size")
        if data.get("compare_with") and data.get("compare_with") == data.get("target"):
            self.add_error("compare_with", "compare with another target than the first")
        return data

    def options(self) -> dict:
        """The event's options: the detector, and each option that was given."""
        data = self.cleaned_data
        options = {"detector": data["detector"]}
        for name in ("scale_factor", "min_neighbors", "min_size", "max_size", "max_side"):
            if data.get(name) not in (None, ""):
                options[name] = data[name]
        return options


class GoldenCaseForm(forms.Form):
    name = forms.CharField(max_length=100)
