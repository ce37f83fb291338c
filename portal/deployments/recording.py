"""Recording a deployment as it runs: each step before and after it runs,
its output as it happens, a heartbeat, the stops at step boundaries, and the
one place a row is finished."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from celery.exceptions import SoftTimeLimitExceeded
from django import db
from django.conf import settings
from django.utils import timezone

from deploy import retry
from deploy.errors import AppError, DeployError
from deploy.logs import mask
from portal import functions
from portal.core import jsonlog
from portal.deployments import events, plan, promotion, queue
from portal.deployments.models import Deployment, DeploymentStep
from portal.functions import AuditEvent

log = logging.getLogger(__name__)
Status = Deployment.Status
HEARTBEAT_SECONDS = 5


def _reconnectable(exc: BaseException) -> bool:
    """A database error outside a transaction: closing the connection loses no earlier write."""
    return isinstance(exc, db.Error) and not db.connection.in_atomic_block


# One more attempt, at once, on a new connection (on_retry closes the cut one).
RECONNECT = retry.Policy("reconnect", attempts=2, retry_on=_reconnectable)


def write_once_more(what: str, fn, *args, **kwargs):
    """A write that survives one cut connection (Postgres restarted mid-task, a connection
    the server dropped): Django checks a connection only when a task starts, so the
    next query on a cut one fails. Then the connection is closed, which makes the next
    query open a new one, and the write is tried once more; a second failure is raised.
    Never inside a transaction: closing would lose its earlier writes."""
    def reconnect(attempt: int, exc: BaseException, delay: float) -> None:
        log.warning("%s failed (%s): reconnecting to the database and trying once more", what, exc)
        db.connection.close()

    return retry.run(lambda: fn(*args, **kwargs), RECONNECT, on_retry=reconnect)


class Stopped(Exception):
    """The deployment stops at a step boundary: superseded or cancelled."""

    def __init__(self, status: str, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Held(Exception):
    """A gate holds the deployment before its Lambda steps (queue.enter_lambda_steps), or its
    rollout started (rollout.start: the beat's ticks take it on): its row is in that status
    already; the task ends without finishing it."""

    def __init__(self, status: str, message: str = ""):
        super().__init__(message or status)
        self.status = status


class StepLog:
    """Output of one step, appended as it happens and flushed about once a second."""

    def __init__(self, step: DeploymentStep, secrets: list[str] | None = None):
        self.step = step
        self.lines: list[str] = []
        self.flushed_at = time.monotonic()
        self.secrets = secrets or []  # the function's secret values (portal.masking), masked like the usual patterns

    def __call__(self, line: str) -> None:
        if not line.strip():
            return
        self.lines.append(mask(line, *self.secrets))
        if time.monotonic() - self.flushed_at > 1:
            self.flush()

    def flush(self) -> None:
        self.step.output = DeploymentStep.clean_output("\n".join(self.lines))
        write_once_more(f"writing the output of step {self.step.name}",
                        DeploymentStep.objects.filter(pk=self.step.pk).update, output=self.step.output)
        self.flushed_at = time.monotonic()


class Recorder:
    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        self.position = deployment.steps.count()
        self.secrets = functions.secret_values(deployment.function)

    @contextlib.contextmanager
    def step(self, name: str):
        """Record the step before it runs and after it ends, with its output and exit status.
        The step plan (plan.py) names the status it runs under: the row moves into it here,
        unless a guarded transition did already; a step the plan lacks is refused."""
        planned = plan.step(self.deployment.kind, name)
        if not planned.guarded and self.deployment.status != planned.status:
            write_once_more(f"moving to {planned.status}", self.deployment.advance, planned.status)
        self.position += 1
        step = write_once_more(f"recording step {name}", DeploymentStep.objects.create, deployment=self.deployment,
                               name=name, position=self.position)
        out = StepLog(step, self.secrets)
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
            write_once_more(f"ending step {name}", step.save,
                            update_fields=["status", "exit_status", "finished_at", "output"])

    def skip(self, name: str, reason: str) -> None:
        """Record a planned step as skipped (a redeploy's build and push), or the note that the
        web process ran a rollback without the queue."""
        if name != plan.WITHOUT_QUEUE:
            plan.step(self.deployment.kind, name)
        self.position += 1
        now = timezone.now()
        write_once_more(f"recording step {name}", DeploymentStep.objects.create, deployment=self.deployment,
                        name=name, position=self.position, status=DeploymentStep.Status.SKIPPED, output=reason,
                        started_at=now, finished_at=now)


def retrying(what: str, out: StepLog, fn, *args, **kwargs):
    """For docker and git calls (AWS calls retry in deploy.aws, and only there):
    an AppError marked retryable is retried with backoff, bounded (deploy.retry.APP)."""
    def report(attempt: int, exc: AppError, delay: float) -> None:
        out(f"{what}: {exc.message} — retrying in {delay:g} s ({attempt}/{retry.APP.attempts - 1})")

    return retry.run(lambda: fn(*args, **kwargs), retry.APP, on_retry=report)


@contextlib.contextmanager
def heartbeat(deployment: Deployment, interval: float | None = None):
    """Keep heartbeat_at fresh while the deployment runs, from its own thread.

    A database error (a locked SQLite, a Postgres restart) is tried once more on a
    new connection; failing again costs one beat, never the rest."""
    done = threading.Event()
    every = interval or HEARTBEAT_SECONDS

    def beat():
        try:
            while not done.wait(every):
                try:
                    write_once_more(f"heartbeat of deployment {deployment.pk}", deployment.beat)
                except db.Error as exc:
                    log.warning("heartbeat of deployment %s missed: %s", deployment.pk, exc)
                    db.connection.close()
        finally:
            db.connection.close()

    thread = threading.Thread(target=beat, daemon=True, name=f"heartbeat-{deployment.pk}")
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(5)


def check_stop(deployment: Deployment) -> None:
    """A step boundary: stop here if a rollback superseded us or a cancel came in time."""
    row = write_once_more("checking for a stop", lambda: Deployment.objects.filter(pk=deployment.pk).values(
        "superseded_by_id", "cancel_requested", "status").get())
    if row["superseded_by_id"]:
        raise Stopped(Status.SUPERSEDED, "superseded",
                      f"rollback #{row['superseded_by_id']} was requested; stopped before moving the alias")
    if row["cancel_requested"] and row["status"] in Deployment.CANCELLABLE:
        raise Stopped(Status.CANCELLED, "cancelled", "cancelled on request before the Lambda was touched")


def finish(deployment: Deployment, status: str, code: str = "", message: str = "", *, only_from=None) -> bool:
    """The one place a row is finished: its error message is masked here, before the API,
    the pages, notifications and commit statuses can show it. False: it had ended (or was
    not in `only_from`)."""
    message = functions.scrub(message, deployment.function)
    if write_once_more(f"finishing deployment {deployment.pk}", deployment.finish, status, code, message,
                       only_from=only_from):
        log.info("deployment %s %s%s", deployment.pk, status, f": {code}: {message}" if code else "")
        AuditEvent.record(f"deployment.{status}", actor=deployment.requested_by,
                          actor_label="" if deployment.requested_by else deployment.trigger,
                          function=deployment.function, deployment=deployment.pk, kind=deployment.kind,
                          version=deployment.version, error_code=code)
        events.finished.send(Deployment, deployment=deployment)
        promotion.after_finished(deployment)  # the next environment's automatic promotion, or soaks cancelled
        return True
    return False


def settle(deployment: Deployment, steps) -> str:
    """Run the steps with a heartbeat; whatever happens, the row ends terminal
    and the function's next deployment is dispatched."""
    with jsonlog.bound(deployment=deployment.pk, function=deployment.function.name), \
            jsonlog.hiding(functions.secret_values(deployment.function)):
        return _settle(deployment, steps)


def _settle(deployment: Deployment, steps) -> str:
    try:
        with heartbeat(deployment):
            steps()
        finish(deployment, Status.SUCCEEDED)
    except Held as held:  # a gate holds it, or its rollout's ticks go on: no finish; the task ends
        log.info("deployment %s left %s: %s", deployment.pk, held.status, held)
        deployment.status = held.status
    except Stopped as stop:
        finish(deployment, stop.status, stop.code, stop.message)
    except DeployError as exc:
        finish(deployment, Status.FAILED, exc.code, exc.message)
    except db.Error as exc:  # twice in a row (write_once_more): the database is gone for now
        log.exception("deployment %s lost its database", deployment.pk)
        finish(deployment, Status.FAILED, "database-unavailable", f"the database did not answer: {exc}")
    except SoftTimeLimitExceeded:
        finish(deployment, Status.FAILED, "time-limit", f"ran past the {settings.TASK_SOFT_TIME_LIMIT} s time limit")
    except Exception as exc:
        log.exception("deployment %s failed unexpectedly", deployment.pk)
        finish(deployment, Status.FAILED, "internal-error", f"{type(exc).__name__}: {exc}")
    finally:
        queue.dispatch(deployment.environment_id)
    return deployment.status
