"""The per-environment queue: request, supersede, dispatch, claim.

The alias is the shared resource, so per environment one deployment runs at a
time (a rollback may start beside a deploy it superseded: that deploy stops
before its shift). Every rule below is keyed by the deployment's environment: a
deployment to one environment never waits for, supersedes or stops one to
another. The Lambda steps are serialized per Lambda, keyed by (region, Lambda
name) — one region per installation (AWS_REGION), and a Lambda name belongs to
one environment (Environment.lambda_name is unique) — so that is per environment
too. The database is the queue; Celery only carries primary keys. Rules:

- Requests run in the order they were made. A new deploy supersedes the
  queued deploys before it (a webhook deploy supersedes nothing: the worker
  skips the older commits of a burst as stale); a new rollback supersedes every queued request
  before it (deploys and older rollbacks) and tells running deploys to stop
  before their shift. A request made after a queued rollback runs after it.
- A rollout (rolling out or aborting) holds the alias between ticks: deploys and
  promotions queue behind it; a rollback supersedes a rolling-out one (its ticks stop,
  the rollback moves the alias to the stable version) and never waits for it.
- Every transaction here locks the function row, then the environment row,
  before any of its deployments (one lock order, so Postgres never deadlocks two
  of them): the function's settings and the environment's are both read under it.
- Previews (kind preview, portal/deployments/previews.py) queue per merge request
  instead: their queue is keyed by (function, MR iid), i.e. by their Preview row, so
  previews of different MRs never wait for each other (their Lambda steps still take
  turns on the preview Lambda's lock), and never for production's rows (another
  environment). The preview row is locked after the environment row.
- Tasks are sent by name; which queue they go to is in settings only.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now

from portal.celery import DEPLOY_TASK, ROLLBACK_TASK
from portal.core import sending
from portal.deployments import events
from portal.deployments.models import Deployment
from portal.functions import AuditEvent, Environment, Function

log = logging.getLogger(__name__)
# What holds a deployment, asked under the lock order: (held status, why) or None (gates.py).
Gate = Callable[[Deployment], "tuple[str, str] | None"]
Status = Deployment.Status
Kind = Deployment.Kind
# A queued row whose message left this long ago without being claimed is sent again.
RESEND_AFTER = timedelta(seconds=60)


def _lock(environment_id: int, function_id: int | None = None) -> Environment:
    """The environment's function row, then the environment row (the lock order)."""
    if function_id is None:
        function_id = Environment.objects.values_list("function_id", flat=True).get(pk=environment_id)
    Function.objects.select_for_update().get(pk=function_id)
    return Environment.objects.select_for_update().get(pk=environment_id)


def request(function: Function, *, environment: Environment | None = None, supersede: bool = True,
            locked: bool = False, **fields) -> Deployment:
    """Write a deployment row, supersede what it replaces, and send it after
    commit when it may start now.

    `supersede=False` is for webhook deploys: deliveries arrive out of order, so
    a later request may carry an older commit; the worker, which sees the
    repository, skips the stale ones instead (workers/steps.stale_reason).
    `locked=True`: the caller already holds the function's row lock and then
    its environment's in this transaction (the webhook receiver re-reads the
    settings under them). `environment`: the function's first when not given
    (every request targets it until requests name one)."""
    with transaction.atomic(savepoint=False):  # inside a caller's transaction, no savepoint: one less round trip
        if not locked:
            Function.objects.select_for_update().get(pk=function.pk)
        if environment is None:
            environment = function.first_environment  # locked=True: read (prefetched) under the caller's lock
        if not locked:
            environment = Environment.objects.select_for_update().get(pk=environment.pk)
        if fields.get("kind") != Kind.ROLLBACK:  # the protection asked when it was requested (read under the lock)
            fields.setdefault("approvals_required", environment.required_approvals)
        if fields.get("status") in Deployment.GATED:
            fields.setdefault("gated_since", Now())
        deployment = Deployment.objects.create(function=function, environment=environment, **fields)
        if deployment.status in Deployment.GATED:
            deployment.refresh_from_db(fields=["gated_since"])
        if supersede:
            _supersede_for(deployment)
        events.status_changed.send(Deployment, deployment=deployment)  # pending (once the commit is known)
        if deployment.status == Status.QUEUED and _may_start_now(deployment):
            # Decided under the lock the request already holds: no second
            # transaction (dispatch's) to find out what this one knows.
            _mark_sent(deployment.pk, deployment.kind)
    return deployment


def release_soak(pk: int) -> Deployment | None:
    """A soaking promotion whose time has come becomes queued, in its request's place
    among the environment's requests, and is sent if it may start now. None when it no
    longer soaks (cancelled or superseded meanwhile)."""
    with transaction.atomic():
        row = Deployment.objects.filter(pk=pk).values_list("environment_id", "function_id").first()
        if row is None:
            return None
        _lock(*row)
        if not Deployment.objects.filter(pk=pk, status=Status.SOAKING).update(status=Status.QUEUED,
                                                                               enqueued_at=None):
            return None
        deployment = Deployment.objects.select_related("function", "environment").get(pk=pk)
        events.status_changed.send(Deployment, deployment=deployment)  # queued
        if _may_start_now(deployment):
            _mark_sent(deployment.pk, deployment.kind)
    return deployment


def release_held(deployment: Deployment) -> Deployment | None:
    """A row a gate held (Deployment.GATED) becomes queued again, in its request's place
    among the environment's requests, and is sent if it may start now. The caller holds
    the lock order (gates.reconsider). None when it is no longer held."""
    if not Deployment.objects.filter(pk=deployment.pk, status__in=Deployment.GATED).update(
            status=Status.QUEUED, enqueued_at=None, gated_since=None):
        return None
    deployment.refresh_from_db()
    events.status_changed.send(Deployment, deployment=deployment)  # queued
    if _may_start_now(deployment):
        _mark_sent(deployment.pk, deployment.kind)
    return deployment


def queue_of(deployment: Deployment) -> Q:
    """The rows `deployment` queues with: its environment's, or for a preview its merge request's."""
    if deployment.kind == Kind.PREVIEW:
        return Q(preview_id=deployment.preview_id, kind=Kind.PREVIEW)
    return Q(environment_id=deployment.environment_id)


def _earlier(deployment: Deployment):
    return Deployment.objects.filter(queue_of(deployment), status=Status.QUEUED, pk__lt=deployment.pk)


def _may_start_now(deployment: Deployment) -> bool:
    """False when an earlier request still waits or something blocks it: then the
    deployment it waits for dispatches it when it ends (settle, a cancel, the
    lost-worker handler or the sweeper all do, under this same lock), and a
    burst of requests skips a dispatch transaction each."""
    return not _earlier(deployment).exists() and not _blockers(deployment).exists()


def _supersede_for(new: Deployment) -> None:
    if new.kind == Kind.PREVIEW:
        return _supersede_preview(new)
    before = Deployment.objects.filter(environment_id=new.environment_id, pk__lt=new.pk)
    # A promotion soaking into the environment, or a request awaiting approval, waits like a
    # queued request: any later request replaces it. Requests a freeze holds stay until it
    # ends, when the newest of them runs (gates.gates_due): a later request replaces them
    # unless the freeze holds it too. A rollback replaces every one.
    waiting = [Status.QUEUED, Status.SOAKING, Status.AWAITING_APPROVAL]
    if new.status != Status.FROZEN or new.kind == Kind.ROLLBACK:
        waiting.append(Status.FROZEN)
    queued = before.filter(status__in=waiting)
    if new.kind == Kind.ROLLBACK:
        message = f"rollback #{new.pk} replaced it"
        # Running deploys stop before their shift; a rollout stops ticking (the rollback moves the alias).
        before.filter(status__in=(*Deployment.RUNNING, Status.ROLLING_OUT), superseded_by__isnull=True).exclude(
            kind=Kind.ROLLBACK).update(superseded_by=new)
    else:
        message = f"deploy #{new.pk}, requested later, replaced it"
        queued = queued.exclude(kind=Kind.ROLLBACK)
    events.superseding.send(Deployment, function=new.function, queued=queued)
    queued.update(status=Status.SUPERSEDED, superseded_by=new, finished_at=Now(), error_code="superseded",
                  error_message=message)


def _supersede_preview(new: Deployment) -> None:
    """A preview replaces the queued previews of its own merge request only (the caller
    decided, under the preview's lock, that it is the newest by the MR's updated_at)."""
    queued = Deployment.objects.filter(queue_of(new), status=Status.QUEUED, pk__lt=new.pk)
    events.superseding.send(Deployment, function=new.function, queued=queued)
    queued.update(status=Status.SUPERSEDED, superseded_by=new, finished_at=Now(), error_code="superseded",
                  error_message=f"preview #{new.pk} of a newer head replaced it")


def _blockers(deployment: Deployment):
    """The running deployments of its queue that `deployment` must wait for: a deploy or
    promotion also waits for a rollout (rolling out or aborting); a rollback never does."""
    running = Deployment.objects.filter(queue_of(deployment), status__in=Deployment.RUNNING).exclude(
        pk=deployment.pk)
    if deployment.kind == Kind.ROLLBACK:
        # Deploys it superseded stop before their shift; it waits only for one already shifting.
        return running.filter(Q(kind=Kind.ROLLBACK) | Q(superseded_by__isnull=True) | Q(status=Status.SHIFTING))
    return Deployment.objects.filter(queue_of(deployment),
                                     status__in=(*Deployment.RUNNING, *Deployment.ROLLOUT)).exclude(pk=deployment.pk)


def dispatch(environment_id: int) -> Deployment | None:
    """Send the environment's next queued deployment unless it must wait.

    A row whose message already left recently is not sent again (a duplicate
    would be harmless, only noisy); the sweeper re-sends lost ones."""
    with transaction.atomic():
        if _lock(environment_id).preview:
            return _dispatch_previews(environment_id)
        head = Deployment.objects.filter(environment_id=environment_id, status=Status.QUEUED).order_by("pk").first()
        if head is None or _blockers(head).exists():
            return None
        _mark_sent(head.pk, head.kind, DUE)
    return head


def _dispatch_previews(environment_id: int) -> Deployment | None:
    """The preview environment has one queue per merge request: send each one's head
    that need not wait. Returns the first sent (None: none)."""
    heads: dict[int, int] = {}  # preview -> its oldest queued row
    for pk, preview_id in (Deployment.objects.filter(environment_id=environment_id, status=Status.QUEUED)
                           .order_by("-pk").values_list("pk", "preview_id")):
        heads[preview_id] = pk
    sent = None
    for head in Deployment.objects.filter(pk__in=list(heads.values())).order_by("pk"):
        if not _blockers(head).exists():
            _mark_sent(head.pk, head.kind, DUE)
            sent = sent or head
    return sent


# A queued row not sent yet, or sent so long ago that its message was lost.
DUE = Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=Now() - RESEND_AFTER)


def _mark_sent(pk: int, kind: str, *conditions: Q) -> None:
    """Stamp the queued row as sent, under a task id chosen here, and send it after
    commit: the id is written with the stamp, so a sent task needs no second write."""
    task_id = str(uuid.uuid4())
    if Deployment.objects.filter(*conditions, pk=pk, status=Status.QUEUED).update(enqueued_at=Now(), task_id=task_id):
        transaction.on_commit(lambda: send(pk, kind, task_id))


def send(pk: int, kind: str, task_id: str) -> None:
    """Send the task by name; a broker that is down (or did not answer within the
    request's budget, portal/core/sending.py) leaves the row queued for the sweeper."""
    name = ROLLBACK_TASK if kind == Kind.ROLLBACK else DEPLOY_TASK
    try:
        sending.send_task(name, args=[pk], task_id=task_id, deployment=pk)
    except Exception as exc:  # QueueDown, kombu's OperationalError and friends
        log.warning("could not send deployment %s (%s); the sweeper will retry", pk, exc)
        Deployment.objects.filter(pk=pk, status=Status.QUEUED, task_id=task_id).update(enqueued_at=None)


def claim(deployment: Deployment, first: str, task_id: str = "", gate: Gate | None = None) -> bool:
    """Take the row for task `task_id`. False when it ended, someone else has it,
    or it must wait (then the deployment it waits for dispatches it when done), or
    `gate` (gates.at_claim) holds it: then it moves to the held status instead."""
    with transaction.atomic():
        _lock(deployment.environment_id, deployment.function_id)
        if _earlier(deployment).exists() or _blockers(deployment).exists():  # requests run in the order they were made
            Deployment.objects.filter(pk=deployment.pk, status=Status.QUEUED).update(enqueued_at=None)
            return False
        held = gate(deployment) if gate is not None else None
        if held is not None:
            hold(deployment, *held, allowed=(Status.QUEUED,))
            return False
        if not deployment.claim(first, task_id):
            return False
        events.status_changed.send(Deployment, deployment=deployment)  # running
        return True


def enter_lambda_steps(deployment: Deployment, gate: Gate | None = None) -> bool:
    """Move to UPDATING unless another deployment is writing to the same Lambda (past
    its push), or a stop was asked for; False: check for a stop, then wait and ask
    again. Deploys and a rollback's fallback both come through here, so they never
    interleave. The Lambda lock's key is (region, Lambda name): the region is the
    installation's, so the name, read under the environment's row lock.

    `gate` (gates.hold_reason) is asked in the same transaction: when one holds it, the
    row moves to the held status instead (a deploy pins its build's digest and resumes
    at its update step once released), and False is returned with deployment.status
    the held one: the task then ends (pipeline.Held)."""
    with transaction.atomic():
        environment = _lock(deployment.environment_id, deployment.function_id)
        held = gate(deployment) if gate is not None else None
        if held is not None:
            pinned = {}
            if deployment.kind in (Kind.DEPLOY, Kind.REDEPLOY):
                pinned = {"resume_at": "update", "digest": deployment.digest or deployment.build.digest}
            if hold(deployment, *held, allowed=Deployment.RUNNING, stoppable=True, **pinned):
                return False
        others = Deployment.objects.filter(environment__lambda_name=environment.lambda_name,
                                           status__in=Deployment.TOUCHING_LAMBDA).exclude(pk=deployment.pk)
        if others.exists():
            return False
        return deployment.enter_lambda(Status.UPDATING)


def hold(deployment: Deployment, status: str, why: str, *, allowed, stoppable: bool = False, **fields) -> bool:
    """Move the row from one of `allowed` into the held `status` (Deployment.GATED), with
    `fields`; `stoppable`: only while no stop was asked for (a running row: a cancel or a
    rollback that came first wins, check_stop ends it). The caller holds the lock order.
    Audited with `why`; False: it was not in an allowed status (nothing changed)."""
    conditions = (Deployment.NOT_STOPPED,) if stoppable else ()
    if not Deployment.objects.filter(*conditions, pk=deployment.pk, status__in=allowed).update(
            status=status, gated_since=Now(), enqueued_at=None, **fields):
        return False
    deployment.refresh_from_db()
    events.status_changed.send(Deployment, deployment=deployment)  # awaiting approval, frozen
    AuditEvent.record("deployment.held", actor_label="gates", function=deployment.function, deployment=deployment.pk,
                      environment=deployment.environment.name, status=status, reason=why[:500],
                      resume_at=deployment.resume_at)
    return True
