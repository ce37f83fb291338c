"""Slipway's objects: what to build, what was built, each attempt to ship it.

State changes go through model methods that use conditional UPDATEs: a row
count other than 1 means another worker (or a cancel, or the sweeper) got
there first, and the caller backs off instead of overwriting.
"""

from __future__ import annotations

import hashlib
import json

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import connection, models
from django.db.models.functions import Now
from django.utils import timezone

from deploy import arch

LOG_CAP_BYTES = 256 * 1024


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
    lambda_name = models.CharField(
        max_length=64, unique=True, error_messages={"unique": "another function already deploys to this Lambda"},
        validators=[RegexValidator(r"^[A-Za-z0-9_-]+$", "letters, digits, '-' and '_' only")]
    )
    alias = models.CharField(max_length=128, default="live",
                             validators=[RegexValidator(r"^(?!^[0-9]+$)[A-Za-z0-9_-]+$", "not a valid alias")])
    memory_mb = models.PositiveIntegerField(default=1024, validators=[MinValueValidator(128), MaxValueValidator(10240)])
    timeout_s = models.PositiveIntegerField(default=30, validators=[MinValueValidator(1), MaxValueValidator(900)])
    environment = models.JSONField(default=dict, blank=True, help_text="Lambda environment variables.")
    secret_keys = models.JSONField(default=list, blank=True,
                                   help_text="Environment variables whose values are write-only and masked.")
    execution_role_arn = models.CharField(max_length=2048, blank=True,
                                          help_text="Used by CreateFunction on the first deploy.")
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
    # GitLab's secret token (X-Gitlab-Token), as SHA-256: it only has to be compared.
    webhook_secret_hash = models.CharField(max_length=128, blank=True, editable=False)
    # GitLab's signing token (whsec_…), Fernet-encrypted (portal.crypto): verifying needs the key itself.
    webhook_signing_key = models.TextField(blank=True, editable=False)
    auto_deploy = models.BooleanField(default=True)
    # An ECR repository belongs to the first function registered with it (portal/forms.py): the names
    # of the functions its owners let push to and deploy from it too. Retention then deletes an image
    # there only when no function on the repository needs it (portal/retention.py).
    shares_images_with = models.JSONField(default=list, blank=True)

    # --- Private repositories: credentials git uses to read the repository -----------------------
    class SourceAuth(models.TextChoices):
        NONE = "none", "None (a public repository, or a local path)"
        TOKEN = "token", "HTTPS deploy token"
        SSH_KEY = "ssh-key", "SSH deploy key"

    source_auth = models.CharField(max_length=10, choices=SourceAuth.choices, default=SourceAuth.NONE)
    source_username = models.CharField(max_length=255, blank=True, help_text="The deploy token's username.")
    # The deploy token or the deploy key's private key, Fernet-encrypted (portal.crypto); write-only.
    source_secret = models.TextField(blank=True, editable=False)
    source_known_hosts = models.TextField(blank=True, help_text="known_hosts line(s) pinning the git host's key.")
    # The last check for missed pushes (button or periodic task), shown on the function page:
    # a wrong token nobody clicks the button for must not stay invisible.
    reconcile_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    reconcile_outcome = models.CharField(max_length=20, blank=True, editable=False)
    reconcile_message = models.CharField(max_length=300, blank=True, editable=False)
    # --- end of private repositories ---------------------------------------------------------------

    paused_reason = models.CharField(max_length=300, blank=True,
                                     help_text="Set when auto-deploy is paused, e.g. after a rollback.")
    archived_at = models.DateTimeField(null=True, blank=True,
                                       help_text="Archived: hidden, no deploys or webhooks accepted.")
    # --- Feedback (issue 12, second half): GitLab commit status, notifications, drift ---------
    gitlab_api_url = models.CharField(max_length=300, blank=True, verbose_name="GitLab URL",
                                      help_text="e.g. https://gitlab.example.org; with a project and a token, "
                                      "deployments report their status on the commit.")
    gitlab_project = models.CharField(max_length=255, blank=True, verbose_name="GitLab project",
                                      help_text="The project's numeric id or its path (group/project).")
    # A GitLab project access token (api scope, Developer role), Fernet-encrypted (portal.crypto).
    gitlab_status_token = models.TextField(blank=True, editable=False)
    notify_webhook_url = models.CharField(max_length=500, blank=True, verbose_name="Notification webhook",
                                          help_text="Receives a signed JSON POST (Slack-compatible `text`).")
    # The HMAC-SHA256 key of the outgoing webhook, generated by Slipway, Fernet-encrypted.
    notify_webhook_secret = models.TextField(blank=True, editable=False)
    notify_members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+",
                                            help_text="Members who get notification emails.")
    # What Slipway last left in Lambda (written by the worker at its shift step, or accepted by an
    # owner): alias_version, image_digest, memory_mb, timeout_s, environment, architecture.
    expected_state = models.JSONField(default=dict, blank=True, editable=False)
    # What AWS reported when it last differed from expected_state ({} when it matches).
    drift_observed = models.JSONField(default=dict, blank=True, editable=False)
    drift_fingerprint = models.CharField(max_length=64, blank=True, editable=False)
    drift_detected_at = models.DateTimeField(null=True, blank=True, editable=False)
    drift_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    # --- end of feedback fields ---------------------------------------------------------------
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

    @property
    def webhook_configured(self) -> bool:
        """A secret token or a signing token is set: without one, every delivery is refused."""
        return bool(self.webhook_secret_hash or self.webhook_signing_key)

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

    def masked_environment(self) -> dict:
        """The environment as pages and logs may show it: secret values never."""
        return {key: "••••••" if key in self.secret_keys else value for key, value in self.environment.items()}


class Membership(models.Model):
    """Who may do what with one function."""

    class Role(models.TextChoices):
        OWNER = "owner", "Owner"  # edit settings, deploy, roll back
        DEPLOYER = "deployer", "Deployer"  # deploy and roll back
        VIEWER = "viewer", "Viewer"  # read only

    function = models.ForeignKey(Function, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["function", "user"], name="one_role_per_user")]

    def __str__(self) -> str:
        return f"{self.user} {self.role} of {self.function}"


class Build(models.Model):
    """One image per set of build inputs: commit, architecture, build context,
    Dockerfile, build args (base image included). Reused only for the same
    inputs, never rebuilt; the inputs' digest is part of its immutable tag."""

    class Status(models.TextChoices):
        PENDING = "pending"
        BUILDING = "building"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    class TransitionError(Exception):
        """A status change that the build's current state does not allow."""

    function = models.ForeignKey(Function, on_delete=models.CASCADE, related_name="builds")
    # Where its image was pushed (or adopted from): the function's repository may change later, and
    # other functions may share this one, so retention asks every function on it before deleting.
    repository = models.CharField(max_length=256, blank=True, db_index=True)
    commit_sha = models.CharField(max_length=40, validators=[RegexValidator(r"^[0-9a-f]{40}$", "a full commit SHA")])
    architecture = models.CharField(max_length=10, choices=Architecture.choices)
    inputs_digest = models.CharField(max_length=64, help_text="SHA-256 of every input that shapes the image.")
    inputs = models.JSONField(default=dict, blank=True, help_text="What made it: context, Dockerfile, build args.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    image_uri = models.CharField(max_length=500, blank=True, help_text="repository@sha256:… once pushed")
    digest = models.CharField(max_length=80, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    platform = models.CharField(max_length=40, blank=True)
    cache_hits = models.PositiveIntegerField(default=0)
    cache_misses = models.PositiveIntegerField(default=0)
    log = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    image_gone_at = models.DateTimeField(null=True, blank=True,
                                         help_text="When the pipeline (or retention) found the image gone from ECR.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["function", "inputs_digest"], name="one_build_per_inputs")]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.function}:{self.tag}"

    def save(self, *args, **kwargs):
        if not self.repository and self.function_id:  # a new build goes to its function's repository
            self.repository = self.function.ecr_repository
        super().save(*args, **kwargs)

    @staticmethod
    def digest_inputs(commit_sha: str, architecture: str, inputs: dict) -> str:
        blob = json.dumps({"commit": commit_sha, "architecture": architecture, **inputs}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def tag(self) -> str:
        """`3f9c2a1b7d4e-5e8a01c2-arm64`: commit, inputs, architecture. Immutable in ECR."""
        return f"{self.commit_sha[:12]}-{self.inputs_digest[:8]}-{arch.get(self.architecture).docker}"

    def _update(self, allowed, **fields) -> bool:
        count = Build.objects.filter(pk=self.pk, status__in=allowed).update(**fields)
        if count == 1:
            self.refresh_from_db()
        return count == 1

    def start(self) -> None:
        """-> BUILDING: a new build, another attempt after a failure, or a rebuild of
        an image ECR no longer holds. Never while it is building elsewhere."""
        startable = (self.Status.PENDING, self.Status.FAILED, self.Status.SUCCEEDED)
        if not self._update(startable, status=self.Status.BUILDING, finished_at=None):
            self.refresh_from_db(fields=["status"])
            raise self.TransitionError(f"build {self.pk} is {self.status}; cannot start building")

    def succeed(self, **fields) -> None:
        """BUILDING -> SUCCEEDED with what the push recorded (digest, size, platform, image URI)."""
        if not self._update((self.Status.BUILDING,), status=self.Status.SUCCEEDED, finished_at=Now(),
                            image_gone_at=None, **fields):  # pushed again after retention deleted it
            self.refresh_from_db(fields=["status"])
            raise self.TransitionError(f"build {self.pk} is {self.status}; cannot succeed")

    def adopt(self, digest: str, size: int, repository: str) -> None:
        """ECR already holds this build's immutable tag in `repository`: take what it holds."""
        self._update((self.Status.PENDING, self.Status.FAILED, self.Status.SUCCEEDED), status=self.Status.SUCCEEDED,
                     repository=repository, digest=digest, size_bytes=self.size_bytes or size,
                     finished_at=self.finished_at or Now(), image_gone_at=None)

    @classmethod
    def fail_unfinished(cls, pk: int | None) -> bool:
        """A build that did not reach ECR ends failed, never stays building."""
        return bool(cls.objects.filter(pk=pk, status=cls.Status.BUILDING).update(status=cls.Status.FAILED,
                                                                                finished_at=Now()))


class Deployment(models.Model):
    """One attempt to make a build live behind the function's alias."""

    class Kind(models.TextChoices):
        DEPLOY = "deploy"
        REDEPLOY = "redeploy"
        ROLLBACK = "rollback"

    class Trigger(models.TextChoices):
        UI = "ui"
        WEBHOOK = "webhook"
        API = "api"
        CLI = "cli"
        RECONCILE = "reconcile"  # a missed push, noticed by comparing the branch head with what is live

    class Status(models.TextChoices):
        QUEUED = "queued"
        CHECKING = "checking", "Checking the release"
        SOURCE = "source", "Fetching source"
        BUILDING = "building", "Building"
        PUSHING = "pushing", "Pushing"
        UPDATING = "updating", "Updating Lambda"
        WAITING = "waiting", "Waiting for update"
        PUBLISHING = "publishing", "Publishing version"
        VERIFYING = "verifying", "Verifying"
        SHIFTING = "shifting", "Moving alias"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"
        SUPERSEDED = "superseded"

    TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.SUPERSEDED)
    RUNNING = (Status.CHECKING, Status.SOURCE, Status.BUILDING, Status.PUSHING, Status.UPDATING, Status.WAITING,
               Status.PUBLISHING, Status.VERIFYING, Status.SHIFTING)
    # Up to here nothing has touched the Lambda: a cancel is still clean.
    CANCELLABLE = (Status.QUEUED, Status.CHECKING, Status.SOURCE, Status.BUILDING, Status.PUSHING)
    # From here on the deployment writes to the Lambda: one at a time per function.
    TOUCHING_LAMBDA = (Status.UPDATING, Status.WAITING, Status.PUBLISHING, Status.VERIFYING, Status.SHIFTING)

    class TransitionError(Exception):
        """A status change that the row's current state does not allow."""

    function = models.ForeignKey(Function, on_delete=models.CASCADE, related_name="deployments")
    build = models.ForeignKey(Build, on_delete=models.PROTECT, null=True, blank=True, related_name="deployments")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.DEPLOY)
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    ref = models.CharField(max_length=255, blank=True, help_text="What was asked for: branch, tag or SHA.")
    commit_sha = models.CharField(max_length=40, blank=True)
    commit_message = models.CharField(max_length=300, blank=True, help_text="The commit's subject line.")
    commit_author = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED, db_index=True)
    task_id = models.CharField(max_length=64, blank=True)
    version = models.CharField(max_length=20, blank=True, help_text="Lambda version this deployment published.")
    previous_version = models.CharField(max_length=20, blank=True, help_text="Version the alias pointed at before.")
    target_version = models.CharField(max_length=20, blank=True, help_text="Rollback: the version to put back.")
    version_gone = models.BooleanField(default=False, help_text="Set when its Lambda version was found deleted.")
    # The verify invoke, for the release card; None where the platform does not measure it.
    init_ms = models.FloatField(null=True, blank=True, help_text="Cold-start init duration of the verify invoke.")
    duration_ms = models.FloatField(null=True, blank=True)
    memory_used_mb = models.PositiveIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    superseded_by = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                                      help_text="The request that replaced this one (a running deploy stops before "
                                      "moving the alias).")
    # GitLab commit status (portal/feedback.py): the last state posted, and who is posting now.
    gitlab_reported = models.CharField(max_length=10, blank=True, editable=False)
    gitlab_lease_until = models.DateTimeField(null=True, blank=True, editable=False)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["function", "status"])]

    def __str__(self) -> str:
        return f"{self.function} #{self.pk} {self.kind} {self.status}"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    def _update(self, allowed, *conditions, **fields) -> bool:
        """Conditional UPDATE from one of `allowed` statuses; refresh self on success."""
        count = Deployment.objects.filter(*conditions, pk=self.pk, status__in=allowed).update(**fields)
        if count == 1:
            self.refresh_from_db(fields=list(fields))  # timestamps come from the database's clock
        return count == 1

    def claim(self, first_step: str, task_id: str = "") -> bool:
        """Take a queued row for this worker, recording the task that took it (its
        worker settles the row by that id if the process running it dies).
        False: already claimed, cancelled or superseded."""
        if first_step not in self.RUNNING:
            raise self.TransitionError(f"{first_step!r} is not a running status")
        fields = {"task_id": task_id} if task_id else {}
        return self._update((self.Status.QUEUED,), status=first_step, started_at=Now(), heartbeat_at=Now(), **fields)

    def advance(self, step: str) -> None:
        """Move a running deployment to its next step; refuses to leave a terminal status."""
        if step not in self.RUNNING:
            raise self.TransitionError(f"{step!r} is not a running status")
        if not self._update(self.RUNNING, status=step, heartbeat_at=Now()):
            self.refresh_from_db(fields=["status"])
            raise self.TransitionError(f"deployment {self.pk} is {self.status}; cannot move to {step}")

    # No stop was asked for: no rollback superseded it, no cancel was accepted.
    NOT_STOPPED = models.Q(superseded_by__isnull=True, cancel_requested=False)

    def enter_lambda(self, step: str) -> bool:
        """Move to `step`, the first that touches the Lambda (updating, or a rollback's
        alias move), only if no stop was asked for, in that same UPDATE: a cancel accepted
        a moment before (request_cancel's own UPDATE, while the status was still
        cancellable) is never run past, and one that comes later finds the move made
        and is refused. False: a stop was asked for (the caller's check_stop ends it)."""
        if step not in self.TOUCHING_LAMBDA:
            raise self.TransitionError(f"{step!r} does not touch the Lambda")
        if self._update(self.RUNNING, self.NOT_STOPPED, status=step, heartbeat_at=Now()):
            return True
        self.refresh_from_db(fields=["status"])
        if self.status not in self.RUNNING:
            raise self.TransitionError(f"deployment {self.pk} is {self.status}; cannot move to {step}")
        return False

    def enter_shift(self) -> bool:
        """Move to SHIFTING unless a stop was asked for, in one UPDATE: a rollback
        requested at the same moment either stops this deploy here or waits until its
        shift has ended (it will not claim while one is shifting); a cancel accepted
        during a rollback's check step stops the rollback here."""
        return self.enter_lambda(self.Status.SHIFTING)

    def beat(self) -> bool:
        """Heartbeat, on the database's clock (hosts' clocks may differ); False once the row ended."""
        return bool(Deployment.objects.filter(pk=self.pk, status__in=self.RUNNING).update(heartbeat_at=Now()))

    def finish(self, status: str, error_code: str = "", error_message: str = "") -> bool:
        """End the deployment. Only a terminal status is accepted; a row that
        already ended stays as it is (returns False)."""
        if status not in self.TERMINAL:
            raise self.TransitionError(f"finish() needs a terminal status, not {status!r}")
        non_terminal = self.RUNNING + (self.Status.QUEUED,)
        return self._update(non_terminal, status=status, error_code=error_code,
                            error_message=error_message[:4000], finished_at=Now())

    def settle_lost(self, condition: models.Q, message: str, *, live: bool = False) -> bool:
        """End a running deployment whose worker is gone, only while `condition`
        still holds (the sweeper: its heartbeat is still stale, so a worker that beat
        meanwhile keeps its row; the worker's main process: the dead task is still
        the one that claimed it). It ends failed as `worker-lost`, unless `live`:
        its shift step completed, the alias serves its version, and it succeeded."""
        if live:
            return self._update(self.RUNNING, condition, status=self.Status.SUCCEEDED, error_code="",
                                error_message=message[:4000], finished_at=Now())
        return self._update(self.RUNNING, condition, status=self.Status.FAILED, error_code="worker-lost",
                            error_message=message[:4000], finished_at=Now())

    def request_cancel(self) -> bool:
        """Queued: cancelled at once. Running before the update step: the worker
        stops at its next step boundary, at the latest at the move that touches the
        Lambda (enter_lambda refuses it in the same UPDATE). Later: too late (False)."""
        if self._update((self.Status.QUEUED,), status=self.Status.CANCELLED, finished_at=Now(),
                        error_code="cancelled", error_message="cancelled before it started"):
            return True
        return self._update(self.CANCELLABLE, cancel_requested=True)

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class DeploymentStep(models.Model):
    """One pipeline step as it ran: recorded before it starts and after it ends."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        SKIPPED = "skipped"

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=20)
    position = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    output = models.TextField(blank=True)
    exit_status = models.IntegerField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["deployment", "position"]
        constraints = [models.UniqueConstraint(fields=["deployment", "position"], name="one_step_per_position")]

    def __str__(self) -> str:
        return f"{self.deployment_id}/{self.position} {self.name} {self.status}"

    @property
    def seconds(self) -> float | None:
        return (self.finished_at - self.started_at).total_seconds() if self.finished_at else None

    @staticmethod
    def clean_output(text: str) -> str:
        """Logs are data: no NUL bytes (Postgres refuses them), capped, head and tail kept."""
        text = text.replace("\x00", "")
        if len(text) > LOG_CAP_BYTES:
            half = LOG_CAP_BYTES // 2
            text = text[:half] + f"\n… {len(text) - LOG_CAP_BYTES} characters cut …\n" + text[-half:]
        return text


class WebhookDelivery(models.Model):
    """Every webhook delivery as received, with what Slipway did about it.

    Exactly once: a delivery that requested a deployment claims its dedupe key
    (GitLab's Idempotency-Key, which a manual "Resend" repeats; X-Gitlab-Event-UUID
    from older GitLab) through a partial unique constraint, so of ten identical
    deliveries arriving together one deploys and nine are logged as duplicates."""

    class Outcome(models.TextChoices):
        ACCEPTED = "accepted"  # a deployment was requested
        STALE = "stale"  # accepted, then skipped by the worker: an older commit than one live or queued
        IGNORED = "ignored"  # authenticated, nothing to deploy (another branch, a deletion, another event)
        PAUSED = "paused"  # would have deployed; auto-deploy is paused
        DUPLICATE = "duplicate"  # its key was already accepted
        REJECTED = "rejected"  # not authenticated, too large or malformed

    # The outcomes that hold a dedupe key: a stale delivery still did its one deployment.
    CLAIMS_KEY = (Outcome.ACCEPTED, Outcome.STALE)
    AUTHENTICATED = (Outcome.ACCEPTED, Outcome.STALE, Outcome.IGNORED, Outcome.PAUSED, Outcome.DUPLICATE)

    function = models.ForeignKey(Function, on_delete=models.SET_NULL, null=True, blank=True,
                                 related_name="webhook_deliveries")
    event_uuid = models.CharField(max_length=64, blank=True, db_index=True, help_text="X-Gitlab-Event-UUID")
    webhook_uuid = models.CharField(max_length=64, blank=True, help_text="X-Gitlab-Webhook-UUID: this request")
    dedupe_key = models.CharField(max_length=128, blank=True,
                                  help_text="Idempotency-Key, else X-Gitlab-Event-UUID; empty for replays.")
    event_type = models.CharField(max_length=64, blank=True)
    headers = models.JSONField(default=dict, help_text="As received, without the token.")
    body = models.TextField(blank=True, help_text="As received; only the start of it for a rejected delivery.")
    body_bytes = models.PositiveIntegerField(default=0, help_text="The size of the body as received.")
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    detail = models.CharField(max_length=500, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True, help_text="What Slipway answered.")
    deployment = models.ForeignKey(Deployment, on_delete=models.SET_NULL, null=True, blank=True)
    duplicate_of = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    replay_of = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="replays")
    replayed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                    related_name="+")
    took_ms = models.FloatField(null=True, blank=True, help_text="From the request's arrival to its answer.")
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # A refused delivery (not authenticated, too large, no length) fills a slot of a bounded ring
    # instead of adding a row: see DeliveryRing. Empty for everything else.
    ring = models.ForeignKey("DeliveryRing", on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    ring_slot = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-pk"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["function", "-received_at"], name="delivery_log")]
        constraints = [models.UniqueConstraint(
            fields=["function", "dedupe_key"],
            condition=models.Q(outcome__in=["accepted", "stale"]) & ~models.Q(dedupe_key=""),
            name="one_accepted_delivery_per_key"),
            # Unconditional (NULLs are distinct), so that the slot's upsert can name it in ON CONFLICT.
            models.UniqueConstraint(fields=["ring", "ring_slot"], name="one_delivery_per_ring_slot")]

    def __str__(self) -> str:
        return f"{self.event_type or 'webhook'} {self.outcome} at {self.received_at:%Y-%m-%d %H:%M:%S}"

    @property
    def authenticated(self) -> bool:
        return self.outcome in self.AUTHENTICATED

    @classmethod
    def mark_stale(cls, deployment_id: int, message: str) -> int:
        """The worker skipped this delivery's deployment as stale: the log says so."""
        return cls.objects.filter(deployment_id=deployment_id, outcome=cls.Outcome.ACCEPTED).update(
            outcome=cls.Outcome.STALE, detail=message[:500])


class DeliveryRing(models.Model):
    """Where refused deliveries are kept: a ring of SLIPWAY_WEBHOOK_REJECTED_KEPT slots per
    function, and one ring for every name that is no function (owner 0), so that anyone
    may knock without growing the database, and a known name costs the same queries as an
    unknown one. `rejected` counts every refusal ever written to the ring: the log says how
    many more there were than it keeps."""

    UNKNOWN = 0  # the owner of the ring for names that are no function

    owner = models.PositiveBigIntegerField(unique=True, help_text="The function's primary key; 0 for unknown names.")
    rejected = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"ring of {'unknown names' if self.owner == self.UNKNOWN else f'function #{self.owner}'}"

    @classmethod
    def count_one(cls, owner: int) -> tuple[int, int]:
        """Count one more refusal for `owner`'s ring, creating the ring on the first: (ring pk, count).
        One statement (an upsert that returns the new count), so concurrent refusals get distinct
        counts, hence distinct slots, and the path is the same whether the ring exists or not."""
        table = connection.ops.quote_name(cls._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(f'INSERT INTO {table} ("owner", "rejected") VALUES (%s, 1) ON CONFLICT ("owner") '
                           f'DO UPDATE SET "rejected" = {table}."rejected" + 1 RETURNING "id", "rejected"', [owner])
            return cursor.fetchone()


class SeenSignature(models.Model):
    """A signed delivery's (webhook-id, webhook-timestamp), claimed before it is processed: the
    same pair again is a replay, whatever the first one's outcome. GitLab's own resend signs
    the id again with a new timestamp, so it is a new pair. Kept while a delivery with that
    timestamp could still pass the signature window (up to 300 s old or ahead), then pruned."""

    KEPT_S = 900  # twice the window either way, with room for clocks that differ between web hosts

    function = models.ForeignKey(Function, on_delete=models.CASCADE, related_name="+")
    webhook_id = models.CharField(max_length=128)
    timestamp = models.BigIntegerField(db_index=True, help_text="webhook-timestamp, Unix seconds.")
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["function", "webhook_id", "timestamp"],
                                               name="one_sighting_per_signature")]

    @classmethod
    def prune(cls, now: float, batch: int = 200) -> int:
        """Delete at most `batch` sightings whose timestamp no signature check would accept any
        more. Safe beside concurrent prunes and claims: it only deletes, and only the expired."""
        expired = cls.objects.filter(timestamp__lt=int(now) - cls.KEPT_S).order_by("timestamp").values("pk")[:batch]
        return cls.objects.filter(pk__in=expired).delete()[0]  # one DELETE … WHERE id IN (SELECT … LIMIT)


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


# --- The test console --------------------------------------------------------------------


class ConsoleImage(models.Model):
    """An image sent from the console, stored once per function and content. Kept in
    the database (web and workers may run on different hosts, neither keeps files);
    removed by the retention task once no golden case uses it and no run used it lately."""

    function = models.ForeignKey(Function, on_delete=models.CASCADE, related_name="console_images")
    sha256 = models.CharField(max_length=64)
    data = models.BinaryField()
    format = models.CharField(max_length=8, help_text="jpeg, png, webp or bmp, as read from its header")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    size_bytes = models.PositiveIntegerField()
    name = models.CharField(max_length=200, blank=True, help_text="The uploaded file's name or the sample's.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["function", "sha256"], name="one_console_image_per_content")]

    def __str__(self) -> str:
        return f"{self.function} {self.name or self.sha256[:12]} {self.width}x{self.height}"

    CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "bmp": "image/bmp"}

    @property
    def content_type(self) -> str:
        return self.CONTENT_TYPES[self.format]

    @classmethod
    def forget_unused(cls, before) -> int:
        """Delete images last used before `before` that no golden case holds; runs keep
        their results without the image. Returns how many were deleted."""
        stale = cls.objects.filter(last_used_at__lt=before, golden_cases__isnull=True)
        return stale.delete()[1].get(cls._meta.label, 0)


class ConsoleRun(models.Model):
    """One invoke from the console: who sent what to which target, and what came back.
    Stored only once the function answered (an answer that is an error included)."""

    class Outcome(models.TextChoices):
        OK = "ok", "Boxes"
        ERROR_RESULT = "error_result", "Error answer"
        FUNCTION_ERROR = "function_error", "Function error"
        TIMEOUT = "timeout", "Timed out"
        UNEXPECTED = "unexpected", "Not a detector answer"

    function = models.ForeignKey(Function, on_delete=models.CASCADE, related_name="console_runs")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    image = models.ForeignKey(ConsoleImage, on_delete=models.SET_NULL, null=True, blank=True, related_name="runs")
    image_name = models.CharField(max_length=200, blank=True)
    image_width = models.PositiveIntegerField(default=0)
    image_height = models.PositiveIntegerField(default=0)
    target = models.CharField(max_length=128, help_text="What was asked for: the alias or a version number.")
    executed_version = models.CharField(max_length=20, blank=True, help_text="What Lambda says ran.")
    options = models.JSONField(default=dict, blank=True)
    request = models.JSONField(default=dict, blank=True, help_text="The event as sent, without the image bytes.")
    via_s3 = models.BooleanField(default=False)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    result = models.JSONField(null=True, blank=True, help_text="The function's answer, decoded.")
    error_code = models.CharField(max_length=100, blank=True)
    error_message = models.TextField(blank=True)
    box_count = models.PositiveIntegerField(null=True, blank=True)
    round_trip_ms = models.FloatField()
    init_ms = models.FloatField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    billed_ms = models.FloatField(null=True, blank=True)
    memory_used_mb = models.PositiveIntegerField(null=True, blank=True)
    log_tail = models.TextField(blank=True)
    compared_with = models.OneToOneField("self", on_delete=models.SET_NULL, null=True, blank=True,
                                         related_name="compared_by", help_text="Compare mode: the other side.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.function} console run #{self.pk} {self.target} {self.outcome}"

    @property
    def boxes(self) -> list[dict]:
        if self.outcome != self.Outcome.OK:
            return []
        return list(self.result.get("boxes") or [])

    @property
    def function_timings(self) -> dict:
        timings = (self.result or {}).get("timings_ms") if isinstance(self.result, dict) else None
        return timings if isinstance(timings, dict) else {}

    @property
    def partner(self) -> ConsoleRun | None:
        if self.compared_with_id:
            return self.compared_with
        return ConsoleRun.objects.filter(compared_with=self).first()


class GoldenCase(models.Model):
    """An image, its options and the boxes a release found on it, saved by an owner:
    every later deploy must find the same boxes before its alias moves."""

    function = models.ForeignKey(Function, on_delete=models.CASCADE, related_name="golden_cases")
    name = models.CharField(max_length=100)
    image = models.ForeignKey(ConsoleImage, on_delete=models.PROTECT, related_name="golden_cases")
    options = models.JSONField(default=dict, blank=True)
    boxes = models.JSONField(default=list, blank=True)
    saved_from = models.ForeignKey(ConsoleRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    version = models.CharField(max_length=20, blank=True, help_text="The version whose answer was saved.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return f"{self.function} golden case {self.name}"


# --- Feedback: GitLab commit status and notifications ---------------------------------------


class NotificationAttempt(models.Model):
    """One outgoing request (or email) Slipway made to tell someone something: a commit
    status posted to GitLab, a notification webhook, an email. Every attempt is kept,
    failed ones with why; none of them ever changes the deployment it is about."""

    class Channel(models.TextChoices):
        GITLAB = "gitlab", "GitLab commit status"
        WEBHOOK = "webhook", "Webhook"
        EMAIL = "email", "Email"

    class Outcome(models.TextChoices):
        OK = "ok"
        FAILED = "failed"

    function = models.ForeignKey(Function, on_delete=models.CASCADE, related_name="notification_attempts")
    deployment = models.ForeignKey(Deployment, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="notification_attempts")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    event = models.CharField(max_length=20, help_text="The commit status state, or the notification's event.")
    attempt = models.PositiveSmallIntegerField(default=1)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    target = models.CharField(max_length=500, blank=True, help_text="Where it went (host and path, or addresses).")
    detail = models.CharField(max_length=500, blank=True)
    took_ms = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["function", "-created_at"], name="notification_log")]

    def __str__(self) -> str:
        return f"{self.function} {self.channel} {self.event} #{self.attempt} {self.outcome}"


class ImageDeletion(models.Model):
    """An ECR image retention is deleting: marked under the locks of every function on its
    repository, deleted after that commit, then unmarked. The source step never adopts
    or deploys a marked image (workers/steps.py); a mark older than retention.MARK_STALE is one a
    crashed run left behind, and counts for nothing."""

    repository = models.CharField(max_length=256)
    digest = models.CharField(max_length=80)
    marked_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["repository", "digest"], name="one_mark_per_image")]

    def __str__(self) -> str:
        return f"{self.repository}@{self.digest}"
