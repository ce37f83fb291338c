"""All input, with the same validators the pipeline applies (deploy/)."""

from __future__ import annotations

import json
import re

from cryptography.exceptions import UnsupportedAlgorithm
from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Q

from deploy import lambdas, source
from deploy.build import validate_build_args
from deploy.errors import UserError
from portal import access
from portal.models import Function, Membership

ENV_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Lambda sets these itself and refuses them in a function's configuration.
RESERVED_ENV = re.compile(r"^(AWS_.*|_HANDLER|_X_AMZN_TRACE_ID|LAMBDA_TASK_ROOT|LAMBDA_RUNTIME_DIR|TZ)$")
ENV_LIMIT_BYTES = lambdas.ENVIRONMENT_LIMIT  # Lambda's limit on all environment variables together
SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,64}$")  # a function's name (a SlugField)
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
    shares_images_with_text = forms.CharField(
        label="Shares images with", required=False, max_length=4000, widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Functions (by name, one a line) that may use this function's ECR repository too, when it is "
                  "the first registered with it. They may adopt its images, and retention keeps an image "
                  "there while any of them needs it.")

    # --- Private repositories (see _clean_source) ------------------------------------------------
    source_auth = forms.ChoiceField(
        label="Repository access", required=False, choices=Function.SourceAuth.choices,
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
        if function.pk:
            self.fields["name"].disabled = True
            self.initial.setdefault("shares_images_with_text", "\n".join(function.shares_images_with or []))
            plain = {k: v for k, v in function.environment.items() if k not in function.secret_keys}
            self.initial.setdefault("environment_text", "\n".join(f"{k}={v}" for k, v in plain.items()))
            self.initial.setdefault("secret_environment_text", "\n".join(f"{k}=" for k in function.secret_keys))
            self.initial.setdefault("build_args_text", json.dumps(function.build_args or {}, indent=1))
            self.initial.setdefault("smoke_event_text", json.dumps(function.smoke_event or {}))
        self.initial.setdefault("golden_iou", function.golden_iou)
        self.secret_changes: list[str] = []
        self._init_source(function)

    def _init_source(self, function: Function) -> None:
        """The stored secret is never put back in the form: it says "set", and how to replace or remove it."""
        self.initial.setdefault("source_auth", function.source_auth)
        self.initial.setdefault("source_username", function.source_username)
        self.initial.setdefault("source_known_hosts", function.source_known_hosts)
        self.source_values: dict = {}
        if function.pk and function.source_secret:
            field = "source_token" if function.source_auth == Function.SourceAuth.TOKEN else "source_private_key"
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
        names = list(dict.fromkeys(re.split(r"[\s,]+", self.cleaned_data["shares_images_with_text"].strip())))
        names = [name for name in names if name]
        wrong = [name for name in names if not SLUG.match(name)]
        if wrong:
            raise forms.ValidationError(f"not a function name: {', '.join(wrong[:5])}")
        return [name for name in names if name != (self.instance.name or self.cleaned_data.get("name"))]

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
        self._clean_source(data)
        plain, secret = data.get("environment_text"), data.get("secret_environment_text")
        if plain is not None and secret is not None:
            both = sorted(set(plain) & set(secret))
            if both:
                self.add_error("secret_environment_text", f"{', '.join(both)} also set as plain environment")
            size = lambdas.environment_size({**plain, **secret})
            if size > ENV_LIMIT_BYTES:
                self.add_error("environment_text", f"the environment takes {size} bytes as Lambda measures it "
                                                   f"(as JSON); Lambda allows {ENV_LIMIT_BYTES}")
        return data

    def apply(self) -> Function:
        """The cleaned values on the instance (not saved): services save it in one transaction."""
        function = self.instance
        plain, secret = self.cleaned_data["environment_text"], self.cleaned_data["secret_environment_text"]
        function.environment = {**plain, **secret}
        function.secret_keys = sorted(secret)
        function.build_args = self.cleaned_data["build_args_text"]
        function.smoke_event = self.cleaned_data["smoke_event_text"]
        function.shares_images_with = self.cleaned_data["shares_images_with_text"]
        function.golden_iou = self.cleaned_data["golden_iou"]
        for name, value in self.source_values.items():
            setattr(function, name, value)
        return function

    def _clean_source(self, data: dict) -> None:
        """The repository's credentials: kind, username, secret, pinned host keys.
        An empty secret keeps the stored one, unless the kind changed or the repository
        moved to another host (a stored secret is never sent anywhere but where it was
        set for). The new secret is encrypted here, so a missing key is a form error."""
        from portal import crypto

        stored = self.instance
        kind = data.get("source_auth") or stored.source_auth or Function.SourceAuth.NONE
        token = (data.get("source_token") or "").strip()
        key = (data.get("source_private_key") or "").replace("\r\n", "\n").strip()
        username = (data.get("source_username") or "").strip()
        known_hosts = (data.get("source_known_hosts") or "").replace("\r\n", "\n").strip()
        url = data.get("repository_url")
        if kind == Function.SourceAuth.NONE:
            for field, value in (("source_token", token), ("source_private_key", key)):
                if value:
                    self.add_error(field, "choose HTTPS deploy token or SSH deploy key under Repository access "
                                          "to use it")
            self.source_values = {"source_auth": kind, "source_username": "", "source_secret": "",
                                  "source_known_hosts": ""}
            return
        if url is None:
            return  # the URL's own error says why
        keep = bool(stored.pk and stored.source_auth == kind and stored.source_secret)
        moved = keep and _url_host(url) != _url_host(stored.repository_url)
        if kind == Function.SourceAuth.TOKEN:
            secret, field = token, "source_token"
            if not url.startswith("https://"):
                self.add_error("source_auth", "a deploy token is used over HTTPS: the repository URL must start "
                                              "with https://")
            if not username:
                self.add_error("source_username", "a deploy token needs its username (GitLab shows it beside "
                                                  "the token)")
            elif not USERNAME.match(username):
                self.add_error("source_username", "no spaces, colons or control characters")
            if token and not TOKEN.match(token):
                self.add_error("source_token", "a token is 8 to 1024 printable characters without spaces")
            if key:
                self.add_error("source_private_key", "a deploy token needs no private key: leave it empty")
            known_hosts = ""
        else:
            secret, field = key, "source_private_key"
            if not url.startswith(("ssh://", "git@")):
                self.add_error("source_auth", "a deploy key is used over SSH: the repository URL must start with "
                                              "ssh:// or git@")
            if key:
                problem = private_key_problem(key)
                if problem:
                    self.add_error("source_private_key", problem)
                secret = key + "\n"
            if token:
                self.add_error("source_token", "a deploy key needs no token: leave it empty")
            if not known_hosts:
                self.add_error("source_known_hosts", "pin the git host's key: paste its known_hosts line(s) "
                                                     "(ssh-keyscan, checked out of band)")
            elif url.startswith(("ssh://", "git@")):
                problem = known_hosts_problem(known_hosts, url)
                if problem:
                    self.add_error("source_known_hosts", problem)
            username = ""
        if not secret and not keep:
            self.add_error(field, "enter the " + ("deploy token" if field == "source_token" else
                                                  "deploy key's private key"))
        elif not secret and moved:
            self.add_error(field, f"the repository moved to another host ({_url_host(url)}): enter the "
                                  f"{'token' if field == 'source_token' else 'key'} again (a stored one is only "
                                  "sent where it was set for)")
        sealed = stored.source_secret if keep else ""
        if secret and field not in self.errors:
            try:
                sealed = crypto.encrypt(secret)
            except crypto.Unavailable as exc:
                self.add_error(field, str(exc))
        self.source_values = {"source_auth": kind, "source_username": username, "source_secret": sealed,
                              "source_known_hosts": known_hosts + "\n" if known_hosts else ""}


# --- Private repositories: validators ------------------------------------------------------

USERNAME = re.compile(r"^[\x21-\x39\x3b-\x7e]{1,255}$")  # printable, no space, no ":" (basic auth)
TOKEN = re.compile(r"^[\x21-\x7e]{8,1024}$")
SSH_KEY_TYPES = {"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                 "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com"}


def _url_host(url: str) -> str:
    """host, or [host]:port for a port that is not the protocol's default, as known_hosts names it."""
    from urllib.parse import urlsplit

    if url.startswith("git@"):
        return url[len("git@"):].split(":", 1)[0].lower()
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    default = 22 if parts.scheme == "ssh" else 443
    return f"[{host}]:{port}" if port and port != default else host


def private_key_problem(key: str) -> str:
    """Why `key` cannot be an unattended deploy key, or ""."""
    from cryptography.hazmat.primitives import serialization

    first = key.splitlines()[0] if key else ""
    if first.split(" ")[0] in SSH_KEY_TYPES:
        return "this is a public key (the .pub file): paste the private key"
    begin = re.fullmatch(r"-----BEGIN (OPENSSH |RSA |EC |DSA |ENCRYPTED )?PRIVATE KEY-----", first)
    if not begin:
        return "not a private key: paste the whole file, from its -----BEGIN … PRIVATE KEY----- line to its END line"
    if begin.group(1) == "ENCRYPTED " or "Proc-Type: 4,ENCRYPTED" in key:
        return "the key is protected by a passphrase, which nobody can type for a deploy: use a key without one"
    try:
        if begin.group(1) == "OPENSSH ":
            serialization.load_ssh_private_key(key.encode(), password=None)
        else:
            serialization.load_pem_private_key(key.encode(), password=None)
    except TypeError:
        return "the key is protected by a passphrase, which nobody can type for a deploy: use a key without one"
    except (ValueError, UnsupportedAlgorithm) as exc:
        return f"not a valid private key ({str(exc).splitlines()[0][:120] if str(exc) else 'unreadable'})"
    return ""


def known_hosts_problem(text: str, url: str) -> str:
    """Why `text` is not known_hosts lines pinning the host of `url`, or ""."""
    import base64
    import struct

    host, named, hashed = _url_host(url), False, False
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if not lines:
        return "no known_hosts line given"
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if fields[0].startswith("@"):
            if fields[0] not in ("@cert-authority", "@revoked"):
                return f"line {number}: unknown marker {fields[0]}"
            fields = fields[1:]
        if len(fields) < 3:
            return f"line {number}: write HOST KEY-TYPE BASE64-KEY (as ssh-keyscan prints it)"
        patterns, kind, blob = fields[0], fields[1], fields[2]
        if kind not in SSH_KEY_TYPES:
            return f"line {number}: {kind[:40]!r} is not an SSH host key type"
        try:
            raw = base64.b64decode(blob, validate=True)
            size = struct.unpack(">I", raw[:4])[0]
            if raw[4:4 + size].decode() != kind:
                raise ValueError
        except (ValueError, struct.error, UnicodeDecodeError):
            return f"line {number}: the key is not a valid {kind} key"
        if patterns.startswith("|1|"):
            hashed = True
            continue
        # known_hosts wildcards are * and ? only: "[host]:port" is literal.
        if any(re.fullmatch(re.escape(pattern.lower()).replace(r"\*", ".*").replace(r"\?", "."), host)
               for pattern in patterns.split(",") if not pattern.startswith("!")):
            named = True
    if not named and not hashed:
        return f"no line names {host}, the repository's host (write [host]:port for a port other than 22)"
    return ""


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


# --- Feedback: GitLab commit status and notifications (issue 12, second half) ---------------

GITLAB_PROJECT = re.compile(r"^(?:\d{1,12}|[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+)$")
GITLAB_TOKEN = re.compile(r"^[A-Za-z0-9_.:-]{8,255}$")


class FeedbackForm(forms.ModelForm):
    """Where a function reports: its GitLab project (commit statuses, with a project
    access token that is write-only: empty keeps the stored one) and its notifications
    (a webhook URL, members to email)."""

    gitlab_token = forms.CharField(
        label="GitLab project access token", required=False, strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="A project access token with the api scope (Developer role or above). Never shown again; "
                  "leave empty to keep the one stored.")
    remove_gitlab_token = forms.BooleanField(label="Remove the stored token", required=False)

    class Meta:
        model = Function
        fields = ["gitlab_api_url", "gitlab_project", "notify_webhook_url", "notify_members"]
        widgets = {"notify_members": forms.CheckboxSelectMultiple}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        members = get_user_model().objects.filter(memberships__function=self.instance, is_active=True)
        self.fields["notify_members"].queryset = members.order_by("username")
        self.fields["notify_members"].label_from_instance = (
            lambda user: f"{user.get_username()} ({user.email or 'no email address'})")

    def _url(self, field: str, what: str, base: bool = False) -> str:
        from portal import feedback

        try:
            return feedback.validate_outgoing_url(self.cleaned_data.get(field, ""), what, base=base)
        except feedback.BadURL as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_gitlab_api_url(self):
        return self._url("gitlab_api_url", "The GitLab URL", base=True)

    def clean_notify_webhook_url(self):
        return self._url("notify_webhook_url", "The webhook URL")

    def clean_gitlab_project(self):
        value = self.cleaned_data.get("gitlab_project", "").strip().strip("/")
        if value and (not GITLAB_PROJECT.match(value) or any(part in (".", "..") for part in value.split("/"))):
            raise forms.ValidationError("a numeric project id, or the project's path such as group/project")
        return value

    def clean_gitlab_token(self):
        value = self.cleaned_data.get("gitlab_token", "")
        if value and not GITLAB_TOKEN.match(value):
            raise forms.ValidationError("not a GitLab token: 8 to 255 letters, digits and - _ . :")
        return value

    def clean(self):
        data = super().clean()
        self._clean_token_host(data)
        token_after = bool(data.get("gitlab_token")) or (bool(self.instance.gitlab_status_token)
                                                         and not data.get("remove_gitlab_token"))
        parts = {"gitlab_api_url": bool(data.get("gitlab_api_url")), "gitlab_project": bool(data.get("gitlab_project")),
                 "gitlab_token": token_after}
        if any(parts.values()) and not all(parts.values()) and not self.errors:
            missing = {"gitlab_api_url": "the GitLab URL", "gitlab_project": "the project",
                       "gitlab_token": "a project access token"}
            self.add_error(None, "commit statuses need the GitLab URL, the project and a token: "
                           + ", ".join(missing[k] for k, v in parts.items() if not v) + " missing")
        return data

    def _clean_token_host(self, data: dict) -> None:
        """The rule repository credentials follow: a stored token is only sent to the host it
        was set for. A URL on another host needs the token again (or its removal)."""
        stored, url = self.instance, data.get("gitlab_api_url")
        if not stored.gitlab_status_token or not url or data.get("gitlab_token") or data.get("remove_gitlab_token"):
            return  # nothing stored, a URL error or none (said elsewhere), or a new token or none at all
        if _url_host(url) != _url_host(stored.gitlab_api_url):
            self.add_error("gitlab_token", f"the GitLab URL moved to another host ({_url_host(url)}): "
                                           "enter the token again, or remove it (a stored one is only sent where "
                                           "it was set for)")
