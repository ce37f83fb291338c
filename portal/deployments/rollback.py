"""The rollback: claim, check, alias move and records, for the rollback task
and for the web process when the queue does not answer.

A rollback is what a team needs most when something else is broken, so it
must not need the broker: when the broker does not take a rollback within the
request's budget (portal/core/sending.py) and the version to put back still exists,
the web process runs this same code itself, under the same lock (the claim is
queue.claim's conditional UPDATE), with the same steps, records and audit,
marked on the timeline as run without the queue. A rollback whose version is
gone must update, publish and verify (minutes): that one stays queued for the
worker, which passes its fallback (`ship`) in.

AWS calls here are urgent (deploy.aws.urgent): short timeouts, few attempts,
each failed attempt on the step's log as it happens, and `aws-unreachable`
within SLIPWAY_ROLLBACK_AWS_DEADLINE. The fallback keeps the deploy budgets.

Also here, because both the task's steps and the web's need them: the Run the
steps share, the owner check and the alias move.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db.models import Q
from django.db.models.functions import Now

from deploy import aws, ecr, lambdas, testing
from deploy.errors import LAMBDA_NOT_OWNED, UserError
from portal.deployments import events, plan, queue, retention, rollout
from portal.deployments.models import Build, Deployment, DeploymentStep
from portal.deployments.recording import Recorder, StepLog, Stopped, check_stop, settle
from portal.functions import AuditEvent, Environment, Function, role_allowed

log = logging.getLogger(__name__)
Status = Deployment.Status
RELEASE_KINDS = (Deployment.Kind.DEPLOY, Deployment.Kind.REDEPLOY, Deployment.Kind.ROLLBACK, Deployment.Kind.PROMOTION)
WITHOUT_QUEUE = plan.WITHOUT_QUEUE  # the timeline's step that says who ran it


@dataclass
class Run:
    """What the steps of one deployment learn and hand on."""

    deployment: Deployment
    mirror: Path | None = None
    repository_uri: str = ""
    image_uri: str = ""  # repository@digest, as Lambda pulls it
    after_update: dict = field(default_factory=dict)  # GetFunction once our update was applied
    stale: str = ""  # a webhook deploy of an older commit than one live or queued: why it is skipped

    @property
    def function(self) -> Function:
        return self.deployment.function

    @property
    def environment(self) -> Environment:
        """Where it deploys: the Lambda, its alias and settings."""
        return self.deployment.environment

    @property
    def build(self) -> Build | None:
        return self.deployment.build

    @property
    def digest(self) -> str:
        """The image digest it ships: a promotion's pinned one, else its build's."""
        return self.deployment.digest or (self.build.digest if self.build else "")

    def record(self, **fields) -> None:
        Deployment.objects.filter(pk=self.deployment.pk).update(**fields)
        for name, value in fields.items():
            setattr(self.deployment, name, value)


def lambda_settings(environment: Environment) -> lambdas.Settings:
    """The environment's Lambda as Slipway writes it (the architecture is the function's:
    one build serves every environment)."""
    return lambdas.Settings(name=environment.lambda_name, architecture=environment.function.architecture,
                            memory_mb=environment.memory_mb, timeout_s=environment.timeout_s,
                            environment={str(k): str(v) for k, v in (environment.variables or {}).items()},
                            role_arn=environment.execution_role_arn or settings.SLIPWAY_DEFAULT_EXECUTION_ROLE)



def wait_while_marked(run: Run, out: StepLog, repository: str, digest: str) -> None:
    """Wait (stoppable) until retention no longer marks the image as being deleted."""
    if retention.marked(repository, digest):
        out(f"retention is deleting {repository}@{digest}: waiting until it is done")
        if hasattr(out, "flush"):  # a StepLog: the page shows why the step waits, not a second later
            out.flush()
    while retention.marked(repository, digest):
        check_stop(run.deployment)
        time.sleep(1)



CREATING = "creating {name} from "


def check_owner(run: Run, out: StepLog, current: dict) -> None:
    """Go on only into a Lambda this function's code may run in, checked on every deploy
    and rollback: one Slipway created for this function (tagged with its name, or, from
    before tagging, created by one of its deployments: tagged now), or any other whose
    current execution role the platform team allows Slipway to pass. Without this,
    registering onto another team's Lambda under an allowed name prefix would run this
    function's code with that Lambda's role."""
    function, lambda_name = run.function, run.environment.lambda_name
    arn = current["FunctionArn"]
    owner = lambdas.list_tags(arn).get(lambdas.OWNER_TAG)
    if owner == function.name:
        return
    line = CREATING.format(name=lambda_name)  # first, or after the "waited …" line
    if owner is None and DeploymentStep.objects.filter(
            Q(output__startswith=line) | Q(output__contains="\n" + line),
            deployment__environment=run.environment, name="update").exists():
        lambdas.tag(arn, {lambdas.OWNER_TAG: function.name})
        out(f"tagged {lambda_name} {lambdas.OWNER_TAG}={function.name}: Slipway created it")
        return
    role = current.get("Role") or ""
    whose = f"carries {lambdas.OWNER_TAG}={owner}" if owner else "was not created by Slipway"
    if role and role_allowed(role):
        out(f"{lambda_name} {whose}; its role {role} is an allowed execution role")
        return
    raise UserError(LAMBDA_NOT_OWNED, f"{lambda_name} {whose} and its execution role {role or '(none)'} "
                    "is not in SLIPWAY_ALLOWED_EXECUTION_ROLES: Slipway does not run this function's code in it")



def shift_alias(run: Run, out: StepLog) -> None:
    environment, version = run.environment, run.deployment.version
    previous = lambdas.point_alias(environment.lambda_name, environment.alias, version)
    out(f"{environment.alias}: {previous or '(new)'} -> {version}")
    run.record(previous_version=previous or "")
    remember_expected_state(run)


def remember_expected_state(run: Run) -> None:
    """Announce what this deployment left in Lambda; the feedback package keeps it for the
    drift check (portal/feedback/drift.py record_shift).

    Taken here, by whoever just moved the alias, from what it wrote itself (not from the
    function's settings, which an owner may have edited since, and not read back from
    AWS, which could bake in a change made behind our back). A deploy (or a rollback's
    fallback) wrote $LATEST: image, memory, timeout, environment, architecture. A
    version-only rollback moved the alias alone: `written` is None, and $LATEST stays as
    the previous record has it."""
    written = None
    if run.image_uri:
        config = lambda_settings(run.environment)
        written = {"image_digest": run.digest, "memory_mb": config.memory_mb, "timeout_s": config.timeout_s,
                   "environment": config.environment, "architecture": config.architecture}
    events.shifted.send(Deployment, deployment=run.deployment, written=written)


# --- Checks ----------------------------------------------------------------------------


def check_release(run: Run, out: StepLog) -> bool:
    """Is the release still there to put back? True when its version exists (the
    alias only moves); False when its image must be deployed again first."""
    function, build, version = run.function, run.build, run.deployment.target_version
    if build is None or not build.digest:
        raise UserError("nothing-to-restore", "the release to roll back to has no recorded image")
    # Marked before this rollback was requested (retention defers while it is unfinished): once
    # the mark clears, the image is gone and the rollback says so.
    wait_while_marked(run, out, function.ecr_repository, build.digest)
    if ecr.find(function.ecr_repository, digest=build.digest) is None:
        Build.objects.filter(pk=build.pk, image_gone_at__isnull=True).update(image_gone_at=Now())
        raise UserError("image-missing", f"ECR no longer holds {function.ecr_repository}@{build.digest}; "
                        "deploy the commit again instead")
    out(f"ECR still holds {function.ecr_repository}@{build.digest}")
    lambda_name = run.environment.lambda_name
    exists = bool(version) and lambdas.version_exists(lambda_name, version)
    current = lambdas.get_configuration(lambda_name) if exists else None
    if current:  # only the alias moves: the Lambda is checked here (a fallback's update step checks it)
        check_owner(run, out, current)
    out(f"version {version} {'exists' if exists else 'is gone: its image is deployed, published and verified again'}")
    if exists:
        run.record(version=version)
        return True
    run.repository_uri = ecr.ensure_repository(function.ecr_repository)  # the fallback pushes nothing, but reads it
    if version:  # the release page offers no version-only rollback to it any more
        Deployment.objects.filter(environment=run.environment, version=version, kind__in=RELEASE_KINDS).update(
            version_gone=True)
    return exists


# --- The rollback itself ------------------------------------------------------------------


def perform(deployment: Deployment, ship: Callable[[Run, Recorder], None] | None = None) -> str:
    """check -> (fallback: `ship`) -> shift, recorded and settled. Called with the row claimed."""
    run, rec = Run(deployment), Recorder(deployment)
    ends = time.monotonic() + settings.SLIPWAY_ROLLBACK_AWS_DEADLINE  # the check and the alias move together

    def steps() -> None:
        nonlocal ends
        with rec.step("check") as out:
            with aws.urgent(ends - time.monotonic(), report=_as_it_happens(out)):
                version_exists = check_release(run, out)
        testing.pause("before-rollback-shift", run.function.name)  # tests only: hold here while a cancel lands
        if not version_exists:
            if ship is None:  # the web checked the version first; it went meanwhile
                raise Stopped(Status.FAILED, "version-gone", f"version {deployment.target_version} went while "
                              "the rollback was checked; request it again once the queue answers")
            ship(run, rec)  # deploy budgets; the alias move after it gets a deadline of its own
            ends = time.monotonic() + settings.SLIPWAY_ROLLBACK_AWS_DEADLINE
        enter_shift(deployment)  # a cancel accepted during the check step stops it here
        with rec.step("shift") as out:
            with aws.urgent(ends - time.monotonic(), report=_as_it_happens(out)):
                shift_alias(run, out)  # one UpdateAlias, routing cleared: a rollout's steps are skipped
            for ended in rollout.end_superseded(deployment):
                out(f"rollout #{ended} ended: its remaining steps skipped")

    return settle(deployment, steps)


def _as_it_happens(out: StepLog) -> Callable[[str], None]:
    def report(line: str) -> None:
        out(line)
        out.flush()  # the page shows each attempt now, not a second later
    return report


def enter_shift(deployment: Deployment) -> None:
    """To SHIFTING only if no stop was asked for, in that UPDATE (Deployment.enter_shift)."""
    if not deployment.enter_shift():
        check_stop(deployment)
        raise Deployment.TransitionError(f"deployment {deployment.pk} could not enter its shift step")


def run_without_queue(deployment: Deployment, why: str) -> bool:
    """The web's rollback when the broker did not take it: only when its version
    still exists (an alias move, seconds), claimed like the task claims it. False:
    not run here (the version is gone or AWS does not say, or the row was not
    claimable): it stays queued for the worker."""
    function, lambda_name = deployment.function, deployment.environment.lambda_name
    try:  # within the request's budget: an AWS that does not answer leaves it to the worker, not to gunicorn's timeout
        with aws.urgent(settings.SLIPWAY_REQUEST_BUDGET):
            exists = bool(deployment.target_version) and lambdas.version_exists(lambda_name,
                                                                                deployment.target_version)
    except Exception as exc:  # AWS unreachable too: the worker tries when the queue is back
        log.warning("rollback #%s not run without the queue: %s", deployment.pk, exc)
        return False
    if not exists:
        return False
    if not queue.claim(deployment, Status.CHECKING, f"{WITHOUT_QUEUE}-{uuid.uuid4()}"):
        return False
    Recorder(deployment).skip(WITHOUT_QUEUE, f"run by the web process without the queue: {why}")
    AuditEvent.record("deployment.rollback_without_queue", actor=deployment.requested_by,
                      actor_label="" if deployment.requested_by else deployment.trigger, function=function,
                      deployment=deployment.pk, to_version=deployment.target_version, reason=why[:500])
    perform(deployment)
    return True
