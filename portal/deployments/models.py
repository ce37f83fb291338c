"""A build of a commit and each deployment that ships it, step by step.

State changes go through model methods that use conditional UPDATEs: a row
count other than 1 means another worker (or a cancel, or the sweeper) got
there first, and the caller backs off instead of overwriting.
"""

from __future__ import annotations

import hashlib
import json

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone

from deploy import arch
from portal.deployments import events
from portal.functions import Architecture, Environment, Function

LOG_CAP_BYTES = 256 * 1024


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
        # A pinned digest, verified in the previous environment, shipped to the next: no source, build or push.
        PROMOTION = "promotion"
        # A merge request's head on its preview environment's Lambda, behind the alias mr-<iid>
        # (portal/deployments/previews.py): never "what is live", never a rollback target.
        PREVIEW = "preview"

    class Trigger(models.TextChoices):
        UI = "ui"
        WEBHOOK = "webhook"
        API = "api"
        CLI = "cli"
        RECONCILE = "reconcile"  # a missed push, noticed by comparing the branch head with what is live
        PROMOTION = "promotion"  # an automatic promotion, once the previous environment's deployment succeeded

    class Status(models.TextChoices):
        QUEUED = "queued"
        # An automatic promotion waiting out its environment's soak time (promote_at): neither
        # queued nor running nor final, so dispatch, claim and the sweeper never see it.
        SOAKING = "soaking", "Soaking"
        # Held by a gate (portal/deployments/gates.py) before it touches the Lambda: a promotion
        # before its first step, a deploy once pushed (an approval binds a digest). Like SOAKING,
        # neither queued nor running nor final: no heartbeat, no lock, never blocking a rollback.
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
        FROZEN = "frozen", "Frozen"
        CHECKING = "checking", "Checking the release"
        SOURCE = "source", "Fetching source"
        BUILDING = "building", "Building"
        PUSHING = "pushing", "Pushing"
        UPDATING = "updating", "Updating Lambda"
        WAITING = "waiting", "Waiting for update"
        PUBLISHING = "publishing", "Publishing version"
        VERIFYING = "verifying", "Verifying"
        SHIFTING = "shifting", "Moving alias"
        # A canary or linear rollout between two ticks of the beat (portal/deployments/rollout.py):
        # the alias is weighted between the stable version and this one. Outside RUNNING (no
        # heartbeat: its Rollout's next_tick_at says when it is due) and outside WAITING.
        ROLLING_OUT = "rolling_out", "Rolling out"
        # A failing signal, an owner or a lost worker stopped it: slipway.rollout_abort puts the
        # alias back on the stable version with the routing cleared, then it ends failed.
        ABORTING = "aborting", "Aborting"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"
        SUPERSEDED = "superseded"

    TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.SUPERSEDED)
    GATED = (Status.AWAITING_APPROVAL, Status.FROZEN)
    # A weighted alias: the environment's queue waits behind it; a rollback supersedes it.
    ROLLOUT = (Status.ROLLING_OUT, Status.ABORTING)
    # Waiting, not running: later requests replace these as they replace queued ones.
    WAITING = (Status.QUEUED, Status.SOAKING, *GATED)
    RUNNING = (Status.CHECKING, Status.SOURCE, Status.BUILDING, Status.PUSHING, Status.UPDATING, Status.WAITING,
               Status.PUBLISHING, Status.VERIFYING, Status.SHIFTING)
    # Up to here nothing has touched the Lambda: a cancel is still clean.
    CANCELLABLE = (Status.QUEUED, Status.CHECKING, Status.SOURCE, Status.BUILDING, Status.PUSHING)
    # From here on the deployment writes to the Lambda: one at a time per Lambda (queue.enter_lambda_steps).
    TOUCHING_LAMBDA = (Status.UPDATING, Status.WAITING, Status.PUBLISHING, Status.VERIFYING, Status.SHIFTING)

    class TransitionError(Exception):
        """A status change that the row's current state does not allow."""

    function = models.ForeignKey(Function, on_delete=models.CASCADE, related_name="deployments")
    # The environment whose Lambda it deploys to; one of its function's.
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="deployments")
    build = models.ForeignKey(Build, on_delete=models.PROTECT, null=True, blank=True, related_name="deployments")
    # A promotion: the digest pinned when it was requested (the build's may change if it is pushed
    # again), the deployment of the previous environment it was verified by, and when a soak ends.
    digest = models.CharField(max_length=80, blank=True, help_text="Promotion: the image digest it ships.")
    upstream = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="promotions",
                                 help_text="Promotion: the previous environment's deployment that verified it.")
    promote_at = models.DateTimeField(null=True, blank=True, help_text="A soaking promotion is queued at this time.")
    # Gates: the approvals its environment required when it was requested (raising the
    # requirement applies to waiting requests, lowering it only to later ones), since when
    # a gate holds it, the step it resumes at once released ("update": a deploy that has
    # pushed), and an owner's override of a freeze.
    approvals_required = models.PositiveSmallIntegerField(default=0)
    gated_since = models.DateTimeField(null=True, blank=True)
    resume_at = models.CharField(max_length=20, blank=True,
                                 help_text="The step a released deploy resumes at; empty: its plan's first.")
    override_reason = models.CharField(max_length=500, blank=True)
    overridden_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                      related_name="+")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.DEPLOY)
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    ref = models.CharField(max_length=255, blank=True, help_text="What was asked for: branch, tag or SHA.")
    commit_sha = models.CharField(max_length=40, blank=True)
    commit_message = models.CharField(max_length=300, blank=True, help_text="The commit's subject line.")
    commit_author = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True)
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
    # GitLab commit status (portal/feedback/status.py): the last state posted, and who is posting now.
    gitlab_reported = models.CharField(max_length=10, blank=True, editable=False)
    gitlab_lease_until = models.DateTimeField(null=True, blank=True, editable=False)
    # GitLab deployment (portal/feedback/gitlab_deployments.py): its id (unique: an id adopted
    # after a timed-out POST belongs to one row), the final status claimed for it (one, ever:
    # claimed by a conditional UPDATE before it is sent), and who is talking to GitLab now.
    gitlab_deployment_id = models.BigIntegerField(null=True, blank=True, unique=True, editable=False)
    gitlab_deployment_final = models.CharField(max_length=10, blank=True, editable=False)
    gitlab_deployment_lease_until = models.DateTimeField(null=True, blank=True, editable=False)
    # Kind preview: the merge request's preview it deploys (its queue is keyed by that preview).
    preview = models.ForeignKey("Preview", on_delete=models.CASCADE, null=True, blank=True,
                                related_name="deployments")
    enqueued_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["function", "status"]), models.Index(fields=["environment", "status"])]

    def __str__(self) -> str:
        return f"{self.function} #{self.pk} {self.kind} {self.status}"

    def save(self, *args, **kwargs):
        if self.environment_id is None and self.function_id:  # a request that names none: the first
            self.environment = self.function.first_environment
        super().save(*args, **kwargs)

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
        # Only a row outside the Lambda steps moves in: a deploy's shift is not its first Lambda step.
        first = not Deployment.objects.filter(pk=self.pk, status__in=self.TOUCHING_LAMBDA).exists()
        if self._update(self.RUNNING, self.NOT_STOPPED, status=step, heartbeat_at=Now()):
            if first:
                events.lambda_entered.send(Deployment, deployment=self)
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

    def upstream_rollbacks(self, previous_environment_id: int) -> models.QuerySet:
        """The rollbacks of the previous environment that refuse this promotion its shift: one
        pending (queued or running), or one requested after this promotion that succeeded."""
        return Deployment.objects.filter(
            models.Q(status__in=(self.Status.QUEUED, *self.RUNNING))
            | models.Q(status=self.Status.SUCCEEDED, created_at__gt=self.created_at),
            environment_id=previous_environment_id, kind=self.Kind.ROLLBACK)

    def enter_promotion_shift(self, previous_environment_id: int) -> bool:
        """A promotion's enter_shift: also refused, in the same UPDATE, while upstream_rollbacks
        finds one (what it ships is then no longer what the previous environment vouches for).
        False: a stop was asked for, or such a rollback refused it (the caller tells which)."""
        refusing = self.upstream_rollbacks(previous_environment_id)
        if self._update(self.RUNNING, self.NOT_STOPPED, ~models.Exists(refusing), status=self.Status.SHIFTING,
                        heartbeat_at=Now()):
            return True
        self.refresh_from_db(fields=["status"])
        if self.status not in self.RUNNING:
            raise self.TransitionError(f"deployment {self.pk} is {self.status}; cannot move to shifting")
        return False

    def beat(self) -> bool:
        """Heartbeat, on the database's clock (hosts' clocks may differ); False once the row ended."""
        return bool(Deployment.objects.filter(pk=self.pk, status__in=self.RUNNING).update(heartbeat_at=Now()))

    def finish(self, status: str, error_code: str = "", error_message: str = "", *, only_from=None) -> bool:
        """End the deployment. Only a terminal status is accepted; a row that
        already ended stays as it is (returns False). `only_from`: only from these
        statuses (a rollout completes only while rolling out, not once an abort was decided)."""
        if status not in self.TERMINAL:
            raise self.TransitionError(f"finish() needs a terminal status, not {status!r}")
        non_terminal = only_from or (self.RUNNING + self.WAITING + self.ROLLOUT)
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
        """Queued, soaking or held by a gate: cancelled at once. Running before the update
        step: the worker stops at its next step boundary, at the latest at the move that
        touches the Lambda (enter_lambda refuses it in the same UPDATE). Later: too late (False)."""
        if self._update(self.WAITING, status=self.Status.CANCELLED, finished_at=Now(),
                        error_code="cancelled", error_message="cancelled before it started"):
            return True
        return self._update(self.CANCELLABLE, cancel_requested=True)

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class Preview(models.Model):
    """One merge request's preview of a function: its head, built and published on the
    preview environment's Lambda behind the alias mr-<iid> (and, where the policy wants
    one, a function URL). Open while the merge request is; closed (under its row lock) on
    close or merge, when the alias is still to be removed; removed once alias and URL are
    gone (the close, the TTL sweep, the cap or an owner). A reopen opens it again."""

    class State(models.TextChoices):
        OPEN = "open"
        CLOSED = "closed"
        REMOVED = "removed"

    function = models.ForeignKey(Function, on_delete=models.CASCADE, related_name="previews")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="previews")
    mr_iid = models.PositiveIntegerField(verbose_name="merge request")
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    title = models.CharField(max_length=255, blank=True)
    author = models.CharField(max_length=255, blank=True, help_text="The webhook's user: who opened or last moved it.")
    source_project_id = models.BigIntegerField(null=True, blank=True)
    target_project_id = models.BigIntegerField(null=True, blank=True)
    source_branch = models.CharField(max_length=255, blank=True)
    target_branch = models.CharField(max_length=255, blank=True)
    fork = models.BooleanField(default=False)
    head_sha = models.CharField(max_length=40, blank=True)
    # The merge request's updated_at in the delivery that last moved it: newest wins, not by ancestry
    # (a rebase breaks ancestry); a tie goes to the later delivery.
    mr_updated_at = models.DateTimeField(null=True, blank=True)
    delivery = models.ForeignKey("WebhookDelivery", on_delete=models.SET_NULL, null=True, blank=True,
                                 related_name="+")
    # A fork's head builds only once a deployer approved that very commit.
    approved_sha = models.CharField(max_length=40, blank=True)
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                    related_name="+")
    version = models.CharField(max_length=20, blank=True, help_text="The version its alias points at.")
    url = models.CharField(max_length=500, blank=True)
    url_id = models.CharField(max_length=64, blank=True, help_text="The function URL's id (its host's first label).")
    # The one MR note per function (portal/feedback): its id, and who is posting it now.
    note_id = models.BigIntegerField(null=True, blank=True)
    note_lease_until = models.DateTimeField(null=True, blank=True)
    last_commit_at = models.DateTimeField(null=True, blank=True, help_text="The TTL clock: when a new head arrived.")
    created_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    removed_at = models.DateTimeField(null=True, blank=True)
    removed_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-mr_iid"]
        constraints = [models.UniqueConstraint(fields=["function", "mr_iid"], name="one_preview_per_merge_request")]

    def __str__(self) -> str:
        return f"{self.function_id} !{self.mr_iid} {self.state}"

    @property
    def alias(self) -> str:
        return alias_for(self.mr_iid)

    @property
    def awaiting_approval(self) -> bool:
        """A fork's head that no deployer approved yet: nothing builds until one does."""
        return self.fork and self.state == self.State.OPEN and bool(self.head_sha) and \
            self.approved_sha != self.head_sha


def alias_for(mr_iid: int) -> str:
    """A merge request's preview alias on the preview Lambda."""
    return f"mr-{mr_iid}"


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


class ImageDeletion(models.Model):
    """An ECR image retention is deleting: marked under the locks of every function on its
    repository, deleted after that commit, then unmarked. The source step never adopts
    or deploys a marked image (portal/deployments/steps.py); a mark older than retention.MARK_STALE is one a
    crashed run left behind, and counts for nothing."""

    repository = models.CharField(max_length=256)
    digest = models.CharField(max_length=80)
    marked_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["repository", "digest"], name="one_mark_per_image")]

    def __str__(self) -> str:
        return f"{self.repository}@{self.digest}"


class Approval(models.Model):
    """One user's decision on one gated deployment. It binds the digest, the environment and
    a fingerprint of the environment's settings when it was given; it counts only while all
    three still hold, before it expires (SLIPWAY_APPROVAL_TTL), and while its user still
    holds a role that may approve (portal/deployments/approvals.py)."""

    class Decision(models.TextChoices):
        APPROVED = "approved"
        REJECTED = "rejected"

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="approvals")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    digest = models.CharField(max_length=80)
    settings_fingerprint = models.CharField(max_length=64)
    comment = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [models.UniqueConstraint(fields=["deployment", "user"], name="one_decision_per_user")]

    def __str__(self) -> str:
        return f"{self.user_id} {self.decision} #{self.deployment_id}"


class FreezeWindow(models.Model):
    """A quiet period for one environment, or for every environment (global: staff only).
    Recurring (GitLab's model: a start cron, an end cron and an IANA time zone; active when
    the latest start at or before an instant is later than the latest end) or one-off
    (starts_at..ends_at). portal/deployments/freezes.py decides when one is active."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, null=True, blank=True,
                                    related_name="freeze_windows", help_text="None: every environment (global).")
    reason = models.CharField(max_length=200)
    start_cron = models.CharField(max_length=100, blank=True)
    end_cron = models.CharField(max_length=100, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    starts_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]
        constraints = [models.CheckConstraint(
            condition=(models.Q(start_cron__gt="", end_cron__gt="", starts_at__isnull=True, ends_at__isnull=True)
                       | models.Q(start_cron="", end_cron="", starts_at__isnull=False, ends_at__isnull=False,
                                  ends_at__gt=models.F("starts_at"))),
            name="freeze_recurring_or_one_off")]

    def __str__(self) -> str:
        return f"freeze {self.reason} ({self.environment or 'global'})"


class Rollout(models.Model):
    """One deployment's weighted shift of its environment's alias from the stable version
    (the alias's primary) to the new one, advanced by short ticks of the beat
    (portal/deployments/rollout.py). Its deployment's status says where it is
    (rolling_out, aborting, then terminal); this row holds the plan's position, when the
    next tick is due and which tick holds it, and the signals it watches."""

    deployment = models.OneToOneField(Deployment, on_delete=models.CASCADE, related_name="rollout")
    # The plan, copied from the environment when it started (an edit applies to later rollouts).
    strategy = models.CharField(max_length=12, choices=Environment.Strategy.choices)
    percent = models.PositiveSmallIntegerField()
    minutes = models.PositiveSmallIntegerField()
    stable_version = models.CharField(max_length=20)
    new_version = models.CharField(max_length=20)
    # The new version's share of the alias as last written and confirmed (0 <= weight <= 1), and
    # the index of the plan's step that wrote it.
    weight = models.FloatField(default=0.0)
    step = models.PositiveSmallIntegerField(default=0)
    step_started_at = models.DateTimeField(null=True, blank=True)
    next_tick_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # The tick that holds it now (a conditional UPDATE takes it), until when.
    tick_task_id = models.CharField(max_length=64, blank=True)
    tick_lease_until = models.DateTimeField(null=True, blank=True)
    # Manual control: paused (until paused_at + SLIPWAY_ROLLOUT_PAUSE_MAX), promote now.
    paused_at = models.DateTimeField(null=True, blank=True)
    promote_now = models.BooleanField(default=False)
    # Health signals (portal/deployments/health.py): the alarms watched, those already in ALARM
    # when it started (reported, never blocking: the fix must get through), those Slipway
    # created for it (deleted once it ended: alarms_deleted_at).
    alarms = models.JSONField(default=list, blank=True)
    alarms_already = models.JSONField(default=list, blank=True)
    alarms_created = models.JSONField(default=list, blank=True)
    alarms_deleted_at = models.DateTimeField(null=True, blank=True)
    # Why it was aborted: "alarm:<name>", "probe", "manual", "worker-lost", "rollback", "drift".
    abort_signal = models.CharField(max_length=300, blank=True)
    abort_reason = models.TextField(blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"rollout of #{self.deployment_id} {self.stable_version}->{self.new_version} at {self.weight:.0%}"


class RolloutEvent(models.Model):
    """One change on a rollout's timeline: a weight written or adopted, a probe round, a
    pause, a resume, promote now, the abort, the end. The page draws the weight over time from these."""

    class Action(models.TextChoices):
        START = "start"
        SHIFT = "shift"  # a planned weight written to the alias
        ADOPT = "adopt"  # a weight the alias already showed (a tick died after writing it)
        PROBE = "probe"
        ALARM = "alarm"  # reported: already in ALARM when the rollout started
        PAUSE = "pause"
        RESUME = "resume"
        PROMOTE = "promote"  # promote now: the remaining steps skipped
        ABORT = "abort"
        DONE = "done"  # 100 % on the new version, routing cleared
        FALLBACK = "fallback"  # a weighted alias impossible (role or dead-letter changed): all at once

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="events")
    action = models.CharField(max_length=10, choices=Action.choices)
    weight = models.FloatField(help_text="The new version's share after this event (0-1).")
    note = models.CharField(max_length=500, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["at", "pk"]

    def __str__(self) -> str:
        return f"{self.rollout_id} {self.action} {self.weight:.0%}"
