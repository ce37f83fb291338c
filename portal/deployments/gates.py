"""Gates: what holds a deploy or promotion before it touches a protected or frozen
environment's Lambda. Rollbacks pass every gate.

A held row waits in status FROZEN or AWAITING_APPROVAL (Deployment.GATED): neither
queued nor running, so it holds no lock, sends no heartbeat and blocks nothing.
Once nothing holds it, reconsider() puts it back in the queue in its request's
place; a deploy that had pushed resumes at its update step (resume_at).
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from portal.deployments import approvals, events, freezes, queue
from portal.deployments.models import Deployment

Status, Kind = Deployment.Status, Deployment.Kind


def hold_reason(deployment: Deployment, at: datetime | None = None) -> tuple[str, str] | None:
    """(status, why) for the gate holding `deployment` at `at` (default now); None: none does.
    A rollback is never held; an owner's override passes a freeze."""
    if deployment.kind == Kind.ROLLBACK:
        return None
    at = at or timezone.now()
    environment = deployment.environment
    if not deployment.override_reason:
        window = freezes.active_freeze(environment, at)
        if window is not None:
            where = "every environment" if window.environment_id is None else environment.name
            return Status.FROZEN, f"frozen: {window.reason} ({where})"
    need = approvals.required(deployment)
    if need and not approvals.satisfied(deployment, at):
        have = approvals.counting(deployment, at).count()
        return Status.AWAITING_APPROVAL, f"awaiting approval: {have} of {need} in {environment.name}"
    return None


def reconsider(pk: int) -> Deployment | None:
    """Re-check a held row under the lock order (function, environment, deployment) and, when
    no gate holds it any more, queue it again (sent if it may start now). Moves it between
    FROZEN and AWAITING_APPROVAL when the other gate now holds it. None: not held (ended,
    superseded, or released meanwhile); else the row as it is now."""
    with transaction.atomic():
        row = Deployment.objects.filter(pk=pk).values_list("environment_id", "function_id").first()
        if row is None:
            return None
        queue._lock(*row)
        deployment = (Deployment.objects.select_for_update().select_related("function", "environment", "build")
                      .filter(pk=pk, status__in=Deployment.GATED).first())
        if deployment is None:
            return None
        held = hold_reason(deployment)
        if held is not None:
            if held[0] != deployment.status:
                Deployment.objects.filter(pk=pk).update(status=held[0])
                deployment.status = held[0]
                events.status_changed.send(Deployment, deployment=deployment)
            return deployment
        return queue.release_held(deployment)
