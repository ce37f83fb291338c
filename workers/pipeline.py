"""The deployment runs: claim the row, call deploy/ step by step, record each
step before and after it runs, always finish the row.

Per function, one deployment runs at a time (the alias is the shared
resource); the database is the queue. Requests are rows; `dispatch` picks
the newest queued row of a function, supersedes the older ones and enqueues
it by primary key. A finishing deployment dispatches the next one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import timedelta
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from deploy import build as builder
from deploy import docker as docker_seam
from deploy import ecr, lambdas, source
from deploy.errors import AppError, DeployError, UserError
from deploy.logs import mask
from portal.models import Architecture, AuditEvent, Build, Deployment, DeploymentStep, Function

log = logging.getLogger(__name__)
Status = Deployment.Status
HEARTBEAT_SECONDS = 5
APP_RETRIES = 3  # an app error is retried this many times within its step, with backoff


def work_root() -> Path:
    return Path(settings.STATE_DIR) / "work"


def workspace_name(pk: int) -> str:
    return f"deployment-{pk}"


# --- Queueing -------------------------------------------------------------------


def dispatch(function_id: int) -> Deployment | None:
    """Enqueue the next deployment of a function if none is running.

    Rollbacks go first; among deploys the newest wins and the older queued
    ones end as superseded.
    """
    with transaction.atomic():
        Function.objects.select_for_update().filter(pk=function_id).first()
        running = Deployment.objects.filter(function_id=function_id, status__in=Deployment.RUNNING)
        queued = Deployment.objects.filter(function_id=function_id, status=Status.QUEUED)
        rollback = queued.filter(kind=Deployment.Kind.ROLLBACK).order_by("-created_at", "-pk").first()
        if rollback:
            # A rollback waits only for another rollback or a deploy already moving the alias;
            # other running deploys were told to stop before their shift.
            if running.filter(Q(kind=Deployment.Kind.ROLLBACK) | Q(status=Status.SHIFTING)).exists():
                return None
            nxt = rollback
        else:
            if running.exists():
                return None
            nxt = queued.order_by("-created_at", "-pk").first()
            if nxt is None:
                return None
        older = queued.exclude(pk=nxt.pk).exclude(kind=Deployment.Kind.ROLLBACK)
        older.update(status=Status.SUPERSEDED, superseded_by=nxt, finished_at=timezone.now(),
                     error_code="superseded", error_message=f"a newer request (#{nxt.pk}) replaced it")
        Deployment.objects.filter(pk=nxt.pk).update(enqueued_at=timezone.now())
        transaction.on_commit(lambda: enqueue(nxt.pk, nxt.kind))
    return nxt


def enqueue(pk: int, kind: str) -> None:
    """Send the task; a broker that is down leaves the row queued for the sweeper."""
    from workers import tasks

    task = tasks.rollback if kind == Deployment.Kind.ROLLBACK else tasks.deploy
    try:
        result = task.apply_async(args=[pk], queue="rollbacks" if kind == Deployment.Kind.ROLLBACK else "deploys")
    except Exception as exc:  # kombu's OperationalError and friends
        log.warning("could not enqueue deployment %s (%s); the sweeper will retry", pk, exc)
        Deployment.objects.filter(pk=pk).update(enqueued_at=None)
        return
    Deployment.objects.filter(pk=pk).update(task_id=result.id)


def claim(deployment: Deployment, first: str) -> bool:
    """Claim for this worker; False when someone else has it, it ended, or
    another deployment of the function is running (it will dispatch us)."""
    with transaction.atomic():
        Function.objects.select_for_update().filter(pk=deployment.function_id).first()
        others = Deployment.objects.filter(function_id=deployment.function_id, status__in=Deployment.RUNNING)
        if deployment.kind == Deployment.Kind.ROLLBACK:
            others = others.filter(Q(kind=Deployment.Kind.ROLLBACK) | Q(status=Status.SHIFTING))
        if others.exclude(pk=deployment.pk).exists():
            return False
        return deployment.claim(first)


# --- Recording ------------------------------------------------------------------


class Stopped(Exception):
    def __init__(self, status: str, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class StepLog:
    """Output of one step, appended as it happens and flushed about once a second."""

    def __init__(self, step: DeploymentStep):
        self.step = step
        self.lines: list[str] = []
        self.flushed_at = time.monotonic()

    def __call__(self, line: str) -> None:
        if not line.strip():
            return
        self.lines.append(mask(line))
        if time.monotonic() - self.flushed_at > 1:
            self.flush()

    def flush(self) -> None:
        self.step.output = DeploymentStep.clean_output("\n".join(self.lines))
        DeploymentStep.objects.filter(pk=self.step.pk).update(output=self.step.output)
        self.flushed_at = time.monotonic()


class Recorder:
    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        self.position = deployment.steps.count()

    @contextlib.contextmanager
    def step(self, name: str, status: str | None = None):
        """Record the step before it runs and after it ends, with its output and exit status."""
        if status and self.deployment.status != status:
            self.deployment.advance(status)
        self.position += 1
        step = DeploymentStep.objects.create(deployment=self.deployment, name=name, position=self.position)
        out = StepLog(step)
        try:
            yield out
        except BaseException as exc:
            step.status = DeploymentStep.Status.FAILED
            if isinstance(exc, DeployError):
                out(f"error {exc.code}: {exc.message}")
                step.exit_status = 1
            elif isinstance(exc, Stopped):
                out(exc.message)
            raise
        else:
            step.status = DeploymentStep.Status.SUCCEEDED
            step.exit_status = 0
        finally:
            out.flush()
            step.finished_at = timezone.now()
            step.save(update_fields=["status", "exit_status", "finished_at", "output"])

    def skip(self, name: str, reason: str) -> None:
        self.position += 1
        now = timezone.now()
        DeploymentStep.objects.create(deployment=self.deployment, name=name, position=self.position,
                                      status=DeploymentStep.Status.SKIPPED, output=reason, started_at=now,
                                      finished_at=now)


def retrying(what: str, out: StepLog, fn, *args, **kwargs):
    """Call fn; an AppError marked retryable is retried with backoff, bounded."""
    for attempt in range(APP_RETRIES + 1):
        try:
            return fn(*args, **kwargs)
        except AppError as exc:
            if not exc.retryable or attempt == APP_RETRIES:
                raise
            delay = 2 ** attempt
            out(f"{what}: {exc.message} — retrying in {delay} s ({attempt + 1}/{APP_RETRIES})")
            time.sleep(delay)


@contextlib.contextmanager
def heartbeat(deployment: Deployment):
    """Keep heartbeat_at fresh while the deployment runs, from its own thread."""
    done = threading.Event()

    def beat():
        try:
            while not done.wait(HEARTBEAT_SECONDS):
                deployment.beat()
        finally:
            connection.close()

    thread = threading.Thread(target=beat, daemon=True, name=f"heartbeat-{deployment.pk}")
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(5)


def check_stop(deployment: Deployment) -> None:
    """A step boundary: stop here if a rollback superseded us or a cancel came in time."""
    row = Deployment.objects.filter(pk=deployment.pk).values("superseded_by_id", "cancel_requested", "status").get()
    if row["superseded_by_id"]:
        raise Stopped(Status.SUPERSEDED, "superseded",
                      f"rollback #{row['superseded_by_id']} was requested; stopped before moving the alias")
    if row["cancel_requested"] and row["status"] in Deployment.CANCELLABLE:
        raise Stopped(Status.CANCELLED, "cancelled", "cancelled on request before the Lambda was touched")


def _settings(function: Function) -> lambdas.Settings:
    return lambdas.Settings(name=function.lambda_name, architecture=function.architecture,
                            memory_mb=function.memory_mb, timeout_s=function.timeout_s,
                            environment={str(k): str(v) for k, v in (function.environment or {}).items()},
                            role_arn=function.execution_role_arn or settings.SLIPWAY_DEFAULT_EXECUTION_ROLE)


def _build_args(function: Function) -> dict:
    args = {}
    base = settings.SLIPWAY_BASE_IMAGES.get(function.architecture)
    if base:
        args["BASE_IMAGE"] = base
    if settings.SLIPWAY_PYTHON_VERSION:
        args["PYTHON_VERSION"] = settings.SLIPWAY_PYTHON_VERSION
    if settings.SLIPWAY_BUILDER_IMAGE:
        args["BUILDER_IMAGE"] = settings.SLIPWAY_BUILDER_IMAGE
    args.update(function.build_args or {})
    return args


def _finish(deployment: Deployment, status: str, code: str = "", message: str = "") -> None:
    if deployment.finish(status, code, mask(message)):
        AuditEvent.record(f"deployment.{status}", actor=deployment.requested_by,
                          actor_label="" if deployment.requested_by else deployment.trigger,
                          function=deployment.function, deployment=deployment.pk, kind=deployment.kind,
                          version=deployment.version, error_code=code)


# --- Deploy -------------------------------------------------------------------------


def run_deploy(pk: int) -> str:
    deployment = Deployment.objects.select_related("function").filter(pk=pk).first()
    if deployment is None or not claim(deployment, Status.SOURCE):
        return "not claimed"
    return _settle(deployment, lambda: _deploy_steps(deployment, deployment.function, Recorder(deployment)))


def _settle(deployment: Deployment, steps) -> str:
    """Run the steps with a heartbeat; whatever happens, the row ends terminal
    and the function's next deployment is dispatched."""
    try:
        with heartbeat(deployment):
            steps()
        _finish(deployment, Status.SUCCEEDED)
    except Stopped as stop:
        _finish(deployment, stop.status, stop.code, stop.message)
    except DeployError as exc:
        _finish(deployment, Status.FAILED, exc.code, exc.message)
    except SoftTimeLimitExceeded:
        _finish(deployment, Status.FAILED, "time-limit", f"ran past the {settings.TASK_SOFT_TIME_LIMIT} s time limit")
    except Exception as exc:
        log.exception("deployment %s failed unexpectedly", deployment.pk)
        _finish(deployment, Status.FAILED, "internal-error", f"{type(exc).__name__}: {exc}")
    finally:
        dispatch(deployment.function_id)
    return deployment.status


def _deploy_steps(deployment: Deployment, function: Function, rec: Recorder) -> None:
    root = work_root()
    with rec.step("source") as out:
        mirror = retrying("fetch", out, source.fetch, function.repository_url, root, allow_local=settings.LOCAL_MODE)
        sha = source.resolve(mirror, deployment.commit_sha or deployment.ref or function.branch)
        out(f"{deployment.commit_sha or deployment.ref or function.branch} is {sha}")
        deployment.commit_sha = sha
        build, _ = Build.objects.get_or_create(function=function, commit_sha=sha, architecture=function.architecture)
        Deployment.objects.filter(pk=deployment.pk).update(commit_sha=sha, build=build)
        # Build once, deploy many: an immutable tag that ECR holds is this commit's image.
        repository_uri = retrying("ECR", out, ecr.ensure_repository, function.ecr_repository)
        held = retrying("ECR", out, ecr.find, function.ecr_repository, tag=build.tag)
        out(f"ECR {'holds' if held else 'does not hold'} {function.ecr_repository}:{build.tag}")
    check_stop(deployment)

    if held:
        Build.objects.filter(pk=build.pk).update(status=Build.Status.SUCCEEDED, digest=held.digest,
                                                 size_bytes=build.size_bytes or held.size,
                                                 finished_at=build.finished_at or timezone.now())
        build.refresh_from_db()
        Deployment.objects.filter(pk=deployment.pk).update(kind=Deployment.Kind.REDEPLOY)
        rec.skip("build", f"ECR already holds {function.ecr_repository}:{build.tag} ({held.digest}); not rebuilt")
        rec.skip("push", "nothing to push")
    else:
        with _unfinished_build_fails(build):
            _build_and_push(deployment, function, build, rec, mirror, sha, repository_uri)
    check_stop(deployment)

    config = _settings(function)
    uri = ecr.image_uri(repository_uri, build.digest, settings.SLIPWAY_REGISTRY_HOST)
    description = f"{sha[:12]} {build.digest}"
    with rec.step("update", Status.UPDATING) as out:
        current = lambdas.get_configuration(config.name)
        if current is None:
            out(f"creating {config.name} from {uri}")
            retrying("create", out, lambdas.create, config, uri, description)
        else:
            changes = lambdas.configuration_changes(current, config)
            if changes:
                out(f"configuration changes: {', '.join(sorted(changes))}")
                retrying("configure", out, lambdas.update_configuration, config, changes)
            out(f"code -> {uri}")
            retrying("update", out, lambdas.update_code, config, uri)
    with rec.step("wait", Status.WAITING) as out:
        final = lambdas.wait_updated(config.name)
        out(f"LastUpdateStatus={final.get('LastUpdateStatus', '?')}")
    with rec.step("publish", Status.PUBLISHING) as out:
        version = retrying("publish", out, lambdas.publish, config.name, description)
        out(f"published version {version}")
        deployment.version = version
        Deployment.objects.filter(pk=deployment.pk).update(version=version)
    check_stop(deployment)
    with rec.step("verify", Status.VERIFYING) as out:
        _verify(function, version, out)
    check_stop(deployment)
    if not deployment.enter_shift():  # the last moment a rollback can still win
        check_stop(deployment)
        raise Deployment.TransitionError(f"deployment {deployment.pk} could not enter its shift step")
    with rec.step("shift") as out:
        previous = lambdas.point_alias(config.name, function.alias, version)
        out(f"{function.alias}: {previous or '(new)'} -> {version}")
        deployment.previous_version = previous or ""
        Deployment.objects.filter(pk=deployment.pk).update(previous_version=previous or "")


@contextlib.contextmanager
def _unfinished_build_fails(build: Build):
    """A build that did not reach ECR (failed, stopped, timed out) ends failed, never stays building."""
    try:
        yield
    except BaseException:
        _fail_build(build.pk)
        raise


def _fail_build(build_id: int | None) -> None:
    Build.objects.filter(pk=build_id, status=Build.Status.BUILDING).update(status=Build.Status.FAILED,
                                                                          finished_at=timezone.now())


def _build_and_push(deployment, function, build, rec, mirror, sha, repository_uri) -> None:
    local_tag = f"slipway/{function.name}:{build.tag}"
    with source.workspace(work_root(), workspace_name(deployment.pk)) as ws:
        source.export(mirror, sha, ws)
        context = source.inside(ws, function.context_path, "build context")
        dockerfile = source.inside(context, function.dockerfile_path, "Dockerfile")
        with rec.step("build", Status.BUILDING) as out:
            Build.objects.filter(pk=build.pk).update(status=Build.Status.BUILDING)
            result = builder.build(
                builder=settings.SLIPWAY_BUILDKIT_DOCKER, context=context, dockerfile=dockerfile,
                platform=Architecture.docker_platform(function.architecture), tag=local_tag,
                build_args=_build_args(function), docker_host=settings.SLIPWAY_DOCKER_HOSTS.get(function.architecture),
                labels={"slipway.function": function.name, "slipway.commit": sha,
                        "slipway.deployment": str(deployment.pk)},
                on_line=out, timeout=settings.TASK_SOFT_TIME_LIMIT,
            )
            out(f"built {result.image_id} in {result.seconds:.1f} s ({result.cache_hits} cached steps)")
            Build.objects.filter(pk=build.pk).update(cache_hits=result.cache_hits, cache_misses=result.cache_misses,
                                                     log="\n".join(out.lines)[-64_000:])
    check_stop(deployment)
    with rec.step("push", Status.PUSHING) as out:
        engine = settings.SLIPWAY_DOCKER_HOSTS.get(function.architecture, "")
        docker = retrying("docker", out, docker_seam.client, engine)
        attrs = ecr.check_architecture(docker, local_tag, function.architecture)
        host = ecr.registry_host(repository_uri, settings.SLIPWAY_REGISTRY_HOST)
        retrying("login", out, ecr.login, docker, host)
        image = retrying("push", out, ecr.push, docker, local_tag, repository_uri, build.tag,
                         host_override=settings.SLIPWAY_REGISTRY_HOST, on_line=out)
        out(f"pushed {function.ecr_repository}:{build.tag} = {image.digest}")
        Build.objects.filter(pk=build.pk).update(
            status=Build.Status.SUCCEEDED, digest=image.digest, size_bytes=attrs.get("Size") or image.size,
            platform=f"{attrs.get('Os')}/{attrs.get('Architecture')}",
            image_uri=ecr.image_uri(repository_uri, image.digest), finished_at=timezone.now())
        build.refresh_from_db()


def _verify(function: Function, version: str, out: StepLog) -> None:
    if not function.smoke_event:
        out("no smoke event configured; invoking with {}")
    error, result = lambdas.invoke(function.lambda_name, version, function.smoke_event or {})
    preview = str(result)[:500]
    out(f"result: {preview}")
    if error:
        raise UserError("smoke-function-error", f"version {version} raised {error}: {preview}")
    if isinstance(result, dict) and "error" in result:
        raise UserError("smoke-error-result", f"version {version} answered the smoke event with an error: {preview}")


# --- Rollback ------------------------------------------------------------------------


def run_rollback(pk: int) -> str:
    deployment = Deployment.objects.select_related("function", "build").filter(pk=pk).first()
    if deployment is None or not claim(deployment, Status.VERIFYING):
        return "not claimed"
    return _settle(deployment, lambda: _rollback_steps(deployment, deployment.function, Recorder(deployment)))


def _rollback_steps(deployment: Deployment, function: Function, rec: Recorder) -> None:
    build = deployment.build
    version = deployment.target_version
    with rec.step("check") as out:
        if build is None or not build.digest:
            raise UserError("nothing-to-restore", "the release to roll back to has no recorded image")
        image = ecr.find(function.ecr_repository, digest=build.digest)
        if image is None:
            raise UserError("image-missing", f"ECR no longer holds {function.ecr_repository}@{build.digest}; "
                            "deploy the commit again instead")
        out(f"ECR still holds {function.ecr_repository}@{build.digest}")
        has_version = bool(version) and lambdas.version_exists(function.lambda_name, version)
        out(f"version {version} {'exists' if has_version else 'is gone: updating code to its digest'}")
    if not has_version:
        config = _settings(function)
        with rec.step("update", Status.UPDATING) as out:
            repository_uri = retrying("ECR", out, ecr.ensure_repository, function.ecr_repository)
            uri = ecr.image_uri(repository_uri, build.digest, settings.SLIPWAY_REGISTRY_HOST)
            retrying("update", out, lambdas.update_code, config, uri)
        with rec.step("wait", Status.WAITING):
            lambdas.wait_updated(config.name)
        with rec.step("publish", Status.PUBLISHING) as out:
            version = lambdas.publish(config.name, f"rollback to {build.commit_sha[:12]} {build.digest}")
            out(f"published version {version}")
    with rec.step("shift", Status.SHIFTING) as out:
        previous = lambdas.point_alias(function.lambda_name, function.alias, version)
        out(f"{function.alias}: {previous} -> {version}")
    Deployment.objects.filter(pk=deployment.pk).update(version=version, previous_version=previous or "")
    deployment.version = version


# --- Sweeper -------------------------------------------------------------------------


def sweep() -> dict:
    """Settle what lost its worker; re-send what lost its message."""
    cutoff = timezone.now() - timedelta(seconds=settings.HEARTBEAT_STALE_SECONDS)
    lost = []
    for deployment in Deployment.objects.filter(status__in=Deployment.RUNNING, heartbeat_at__lt=cutoff):
        step = deployment.status
        if deployment.finish(Status.FAILED, "worker-lost",
                             f"no heartbeat since {deployment.heartbeat_at:%H:%M:%S} while {step}; the worker "
                             "running it stopped. The alias was not moved by it unless its shift step completed."):
            lost.append(deployment.pk)
            DeploymentStep.objects.filter(deployment=deployment, status=DeploymentStep.Status.RUNNING).update(
                status=DeploymentStep.Status.FAILED, finished_at=timezone.now())
            _fail_build(deployment.build_id)
            with contextlib.suppress(OSError):
                import shutil

                shutil.rmtree(work_root() / "workspaces" / workspace_name(deployment.pk), ignore_errors=True)
            AuditEvent.record("deployment.worker_lost", actor_label="system", function=deployment.function,
                              deployment=deployment.pk, step=step)
            dispatch(deployment.function_id)
    # Queued rows whose message never made it (broker down) or was lost.
    resend_before = timezone.now() - timedelta(seconds=max(settings.HEARTBEAT_STALE_SECONDS, 60))
    waiting = (Deployment.objects.filter(status=Status.QUEUED, enqueued_at__isnull=True,
                                         created_at__lt=timezone.now() - timedelta(seconds=10))
               | Deployment.objects.filter(status=Status.QUEUED, enqueued_at__lt=resend_before))
    resent = sorted({d.function_id for d in waiting})
    for function_id in resent:
        dispatch(function_id)
    if lost:
        log.warning("sweeper failed %d deployment(s) with worker-lost: %s", len(lost), lost)
    return {"worker_lost": lost, "redispatched_functions": resent}
