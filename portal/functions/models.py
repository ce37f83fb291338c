"""A function — what to build and where it runs — with its members, its audit
trail and the API tokens that act on it.

State changes go through conditional UPDATEs: a row count other than 1 means
someone else got there first, and the caller backs off.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from deploy import arch


class Architecture(models.TextChoices):
    """Lambda's names; every other name of an architecture comes from deploy.arch."""

    ARM64 = arch.ARM64.name, arch.ARM64.label
    X86_64 = arch.X86_64.name, arch.X86_64.label


class Function(models.Model):
    """A Lambda function shipped as a container image: what to build and where it runs."""

    name = models.SlugField(max_length=64, unique=True, help_text="Slipway's name for it, used in URLs and CLI.")
    description = models.CharField(max_length=200, blank=True)
    repository_url = models.CharField(max_length=500, help_text="Git URL (https or ssh); a local path in local mode.")
    branch = models.CharField(max_length=200, default="main", help_text="Pushes to this branch auto-deploy.")
    context_path = models.CharField(max_length=300, default=".", help_text="Build context inside the repository.")
    dockerfile_path = models.CharField(max_length=300, default="Dockerfile",
                                       help_text="Dockerfile, relative to the build context.")
    build_args = models.JSONField(default=dict, blank=True)
    architecture = models.CharField(max_length=10, choices=Architecture.choices, default=Architecture.ARM64)
    ecr_repository = models.CharField(
        max_length=256,
        validators=[RegexValidator(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$",
                                   "lowercase letters, digits, '.', '_', '-' and '/' only")],
    )
    smoke_event = models.JSONField(default=dict, blank=True,
                                   help_text="Invoked on each new version before the alias moves.")
    golden_iou = models.FloatField(
        default=0.9, validators=[MinValueValidator(0.1), MaxValueValidator(1.0)], verbose_name="Golden IoU threshold",
        help_text="A deploy's boxes on each golden case must overlap the saved ones at least this much (IoU).")
    tag_pattern = models.CharField(
        max_length=100, blank=True,
        validators=[RegexValidator(r"^[A-Za-z0-9._/*?\[\]!+-]+$",
                                   "letters, digits, . _ / + - and the wildcards * ? [ ]")],
        help_text="Tags matching this pattern deploy on a GitLab tag push (e.g. v*); empty: tags never deploy.")
    auto_deploy = models.BooleanField(default=True)
    # An ECR repository belongs to the first function registered with it (portal/functions/forms.py): the names
    # of the functions its owners let push to and deploy from it too. Retention then deletes an image
    # there only when no function on the repository needs it (portal/deployments/retention.py).
    shares_images_with = models.JSONField(default=list, blank=True)

    archived_at = models.DateTimeField(null=True, blank=True,
                                       help_text="Archived: hidden, no deploys or webhooks accepted.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def docker_platform(self) -> str:
        return arch.get(self.architecture).platform

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None

    def commit_url(self, sha: str) -> str:
        """The commit on the repository's web page (GitLab's path form); "" for local or unknown hosts."""
        url = self.repository_url.strip()
        if url.startswith("git@") and ":" in url:
            host, path = url[len("git@"):].split(":", 1)
            url = f"https://{host}/{path}"
        elif url.startswith("ssh://"):
            rest = url[len("ssh://"):].split("@", 1)[-1]
            host, _, path = rest.partition("/")
            url = f"https://{host.split(':')[0]}/{path}"
        if not url.startswith("https://") or not sha:
            return ""
        return f"{url.removesuffix('.git').rstrip('/')}/-/commit/{sha}"

    @property
    def first_environment(self) -> Environment:
        """Where pushes deploy (and, until requests name one, every request goes): the
        environment at the lowest position. Every function has one, made with it. Uses
        prefetched environments when a page prefetched them."""
        return self.environments.all()[0]


class GitLabTier(models.TextChoices):
    PRODUCTION = "production"
    STAGING = "staging"
    TESTING = "testing"
    DEVELOPMENT = "development"
    OTHER = "other"


def tier_for(name: str) -> str:
    """An environment's GitLab tier when none is chosen: production and staging by name, else other."""
    return {"production": GitLabTier.PRODUCTION, "staging": GitLabTier.STAGING}.get(name, GitLabTier.OTHER)


class EnvironmentQuerySet(models.QuerySet):
    def in_order(self) -> EnvironmentQuerySet:
        """The promotion order: every environment but the preview one (which no push,
        promotion, rollback or drift check ever reaches)."""
        return self.filter(preview=False)


class Environment(models.Model):
    """One Lambda a function deploys to (staging, production, …), in promotion order.

    Two environments never share a Lambda: they would share its $LATEST, and a version
    published with one's settings (secrets included) would run in the other.
    Lock order where both are locked: the function row, then its environment rows,
    then deployment rows (portal/deployments/queue.py)."""

    class Promotion(models.TextChoices):
        MANUAL = "manual", "Manual"
        AUTOMATIC = "automatic", "Automatic, once the previous environment succeeded"

    function = models.ForeignKey(Function, on_delete=models.CASCADE, related_name="environments")
    name = models.SlugField(max_length=32, default="production")
    position = models.PositiveSmallIntegerField(default=0, help_text="Promotion order: 0 is where pushes deploy.")
    lambda_name = models.CharField(
        max_length=64, unique=True, error_messages={"unique": "another environment already deploys to this Lambda"},
        validators=[RegexValidator(r"^[A-Za-z0-9_-]+$", "letters, digits, '-' and '_' only")]
    )
    alias = models.CharField(max_length=128, default="live",
                             validators=[RegexValidator(r"^(?!^[0-9]+$)[A-Za-z0-9_-]+$", "not a valid alias")])
    memory_mb = models.PositiveIntegerField(default=1024, validators=[MinValueValidator(128), MaxValueValidator(10240)])
    timeout_s = models.PositiveIntegerField(default=30, validators=[MinValueValidator(1), MaxValueValidator(900)])
    # The Lambda's environment variables (the API and the forms call them "environment").
    variables = models.JSONField(default=dict, blank=True, help_text="Lambda environment variables.")
    secret_keys = models.JSONField(default=list, blank=True,
                                   help_text="Environment variables whose values are write-only and masked.")
    execution_role_arn = models.CharField(max_length=2048, blank=True,
                                          help_text="Used by CreateFunction on the first deploy.")
    paused_reason = models.CharField(max_length=300, blank=True,
                                     help_text="Set when auto-deploy is paused, e.g. after a rollback.")
    promotion = models.CharField(max_length=10, choices=Promotion.choices, default=Promotion.MANUAL)
    # A function's preview environment (portal/deployments/previews.py): merge requests' previews
    # deploy to its Lambda. Outside the promotion order (position PREVIEW_POSITION, every
    # promotion query leaves it out), always all at once, exempt from freezes and approvals.
    preview = models.BooleanField(default=False, editable=False)
    soak_seconds = models.PositiveIntegerField(default=0, help_text="Automatic promotion waits this long first.")

    class DuringFreeze(models.TextChoices):
        WAIT = "wait", "Wait until the freeze ends"
        REFUSE = "refuse", "Refuse the request"

    # Gates (portal/deployments/gates.py): never on a rollback.
    required_approvals = models.PositiveSmallIntegerField(
        default=0, help_text="Approvals a deploy or promotion into it needs before it touches the Lambda (0: none).")
    during_freeze = models.CharField(max_length=10, choices=DuringFreeze.choices, default=DuringFreeze.WAIT,
                                     help_text="What a deploy or promotion requested during a freeze does.")
    # GitLab deployments (portal/feedback/gitlab_deployments.py): the GitLab environment's tier
    # (empty: from the name, GitLab's own rule for production and staging), and what Slipway
    # last made sure exists in GitLab ("<url> <project> <name> <tier> <external_url>"): a
    # different key, or a 404, looks it up (and creates it) again.
    gitlab_tier = models.CharField(max_length=12, choices=GitLabTier.choices, blank=True, verbose_name="GitLab tier",
                                   help_text="GitLab's deployment tier; merge requests show \"first deployed to "
                                   "production\" only for the production tier. Empty: from the name.")
    gitlab_environment_key = models.CharField(max_length=500, blank=True, editable=False)

    class Strategy(models.TextChoices):
        ALL_AT_ONCE = "all_at_once", "All at once"
        CANARY = "canary", "Canary: P % for M minutes, then 100 %"
        LINEAR = "linear", "Linear: +P % every M minutes"

    # Progressive delivery (portal/deployments/rollout.py): how a verified version takes the
    # alias. A canary or linear shift goes through Lambda's weighted alias, watched by the
    # health signals below (portal/deployments/health.py); validated in portal/deployments/routing.py.
    rollout_strategy = models.CharField(max_length=12, choices=Strategy.choices, default=Strategy.ALL_AT_ONCE)
    rollout_percent = models.PositiveSmallIntegerField(
        default=10, validators=[MinValueValidator(1), MaxValueValidator(50)],
        help_text="Canary: the new version's share for the whole step; linear: added every step (1-50 %).")
    rollout_minutes = models.PositiveSmallIntegerField(
        default=5, validators=[MinValueValidator(1), MaxValueValidator(60)],
        help_text="How long each step lasts (1-60 minutes; the whole rollout at most 24 hours).")
    # The alarm Slipway creates per rollout, scoped to the new version: {"namespace", "metric",
    # "statistic", "threshold", "comparison", "periods", "period_s"}; empty: none.
    rollout_alarm = models.JSONField(default=dict, blank=True)
    # Alarms the owner made, watched during every rollout: each named slipway-<function>-….
    rollout_extra_alarms = models.JSONField(default=list, blank=True)
    # Slipway's own probes during each step: K qualified invokes of the smoke event and the
    # golden cases against the new version; the step fails when more than `probe_max_failures` fail.
    probe_count = models.PositiveSmallIntegerField(default=3, validators=[MaxValueValidator(20)])
    probe_max_failures = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(20)])

    objects = EnvironmentQuerySet.as_manager()

    class Meta:
        ordering = ["position"]
        constraints = [models.UniqueConstraint(fields=["function", "name"], name="one_environment_per_name"),
                       models.UniqueConstraint(fields=["function", "position"], name="one_environment_per_position"),
                       models.UniqueConstraint(fields=["function"], condition=models.Q(preview=True),
                                               name="one_preview_environment_per_function")]

    def __str__(self) -> str:
        return f"{self.function_id}/{self.name}"

    def save(self, *args, **kwargs):
        if not self.gitlab_tier:
            self.gitlab_tier = tier_for(self.name)
        super().save(*args, **kwargs)

    def masked_variables(self) -> dict:
        """The variables as pages and logs may show them: secret values never."""
        return {key: "••••••" if key in self.secret_keys else value for key, value in self.variables.items()}


# Where a preview environment sits: after every environment of the promotion order, and
# clear of the positions registry._place moves environments through (theirs + 1000).
PREVIEW_POSITION = 2000


class PreviewPolicy(models.Model):
    """What a function's owner allows its merge requests' previews: forks (each new head
    SHA then waits for a deployer's approval), a function URL and its auth, a GitLab
    commit status, the target branches, drafts. One per preview environment."""

    class UrlAuth(models.TextChoices):
        NONE_URL = "", "No function URL"
        AWS_IAM = "AWS_IAM", "Function URL, IAM auth"
        NONE = "NONE", "Function URL, public (no auth)"

    environment = models.OneToOneField(Environment, on_delete=models.CASCADE, related_name="preview_policy")
    allow_forks = models.BooleanField(default=False, help_text="Merge requests from forks may preview, once a "
                                      "deployer approves each new head commit.")
    url_auth = models.CharField(max_length=8, choices=UrlAuth.choices, blank=True, default=UrlAuth.NONE_URL,
                                verbose_name="Function URL")
    commit_status = models.BooleanField(default=False, help_text="Post a GitLab commit status for each preview "
                                        "(it can block merges under \"Pipelines must succeed\").")
    target_branches = models.JSONField(default=list, blank=True,
                                       help_text="Merge requests into these branches preview; empty: the function's.")
    allow_drafts = models.BooleanField(default=False, help_text="Draft merge requests preview too.")

    def __str__(self) -> str:
        return f"preview policy of {self.environment}"

    def targets(self, branch: str) -> bool:
        """Whether a merge request into `branch` previews."""
        return branch in (self.target_branches or [self.environment.function.branch])


class Membership(models.Model):
    """Who may do what with one function."""

    class Role(models.TextChoices):
        OWNER = "owner", "Owner"  # edit settings, deploy, roll back, approve
        APPROVER = "approver", "Approver"  # approve or reject deployments to protected environments; deploy
        DEPLOYER = "deployer", "Deployer"  # deploy and roll back
        VIEWER = "viewer", "Viewer"  # read only

    function = models.ForeignKey(Function, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["function", "user"], name="one_role_per_user")]

    def __str__(self) -> str:
        return f"{self.user} {self.role} of {self.function}"


class AuditEvent(models.Model):
    """Who did what to which function, and when."""

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    actor_label = models.CharField(max_length=150, help_text="Username, or 'webhook', 'cli', 'system'.")
    function = models.ForeignKey(Function, on_delete=models.SET_NULL, null=True, blank=True,
                                 related_name="audit_events")
    action = models.CharField(max_length=64)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.actor_label} {self.action} {self.function or ''}"

    @classmethod
    def record(cls, action: str, *, actor=None, actor_label: str = "", function=None, **detail) -> AuditEvent:
        label = actor_label or (actor.get_username() if actor else "system")
        return cls.objects.create(action=action, actor=actor, actor_label=label, function=function, detail=detail)


class ApiToken(models.Model):
    """A user's token for the JSON API, shown once and stored as SHA-256 (a
    high-entropy random token needs no slow hash). Optionally limited to one
    function and to deploying (trigger, read and follow deployments only)."""

    PREFIX = "slp_"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    hint = models.CharField(max_length=12, editable=False, help_text="The token's first characters, to tell it apart.")
    function = models.ForeignKey(Function, on_delete=models.CASCADE, null=True, blank=True, related_name="+",
                                 help_text="Only this function, when set.")
    deploy_only = models.BooleanField(default=False, help_text="Trigger, read and follow deployments; nothing else.")
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.user} {self.name} ({self.hint}…)"

    @staticmethod
    def digest(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    @classmethod
    def issue(cls, user, name: str, **fields) -> tuple[ApiToken, str]:
        """A new token and its raw value, which is never stored or shown again."""
        import secrets

        raw = cls.PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, token_hash=cls.digest(raw), hint=raw[:10], **fields)
        return token, raw

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())
