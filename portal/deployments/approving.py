"""Approving and rejecting a deployment held for a protected environment.

Who may decide: a user whose role on the function may approve (owner or approver;
staff always), never the one who requested it (`own-request`), once per deployment
(`already-decided`). A decision is taken on a row held by a gate: one awaiting
approval, or one FROZEN whose approvals are still short (approvals gathered during
a freeze count when it ends: the freeze and the approvals are separate gates, and
waiting for the first before asking for the second would only delay the release).
A row that is queued, running or over is refused `not-awaiting-approval`.

An approval binds the digest the deployment ships, the environment and the
fingerprint of its settings, and expires after SLIPWAY_APPROVAL_TTL
(portal/deployments/approvals.py decides which count). After an approval,
gates.reconsider releases the row if nothing holds it any more. A rejection ends the
deployment cancelled `rejected`, with the rejecter's comment. Both are audited
(`deployment.approved`, `deployment.rejected`); the feedback package notifies
(events.decided). Pages call these only from a signed-in session with a CSRF form:
the API offers no way to approve.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.core.errors import RequestRefused
from portal.deployments import approvals, events, gates, queue
from portal.deployments.models import Approval, Deployment
from portal.deployments.promotion import deployment_digest
from portal.functions import APPROVING_ROLES, AuditEvent, Membership

Status, Decision = Deployment.Status, Approval.Decision
COMMENT_MAX = Approval._meta.get_field("comment").max_length


def may_approve(user, function_id: int) -> bool:
    """Staff, or a member whose role may approve (portal/functions/access.py's APPROVE)."""
    return user.is_authenticated and (user.is_staff or Membership.objects.filter(
        function_id=function_id, user_id=user.pk, role__in=APPROVING_ROLES).exists())


def decidable(deployment: Deployment, at=None) -> bool:
    """Held, and approvals still decide something: awaiting approval, or frozen with fewer
    counting approvals than it needs."""
    if deployment.status == Status.AWAITING_APPROVAL:
        return True
    return deployment.status == Status.FROZEN and not approvals.satisfied(deployment, at)


def refusal(deployment: Deployment, user) -> RequestRefused | None:
    """Why `user` may not decide on `deployment` now; None: they may. The pages use it to
    say so beside the buttons, approve and reject to refuse."""
    if not may_approve(user, deployment.function_id):
        return RequestRefused(f"your role on {deployment.function.name} does not allow approving: an owner or an "
                              "approver may", status=403, code="not-approver")
    if deployment.requested_by_id is not None and deployment.requested_by_id == user.pk:
        return RequestRefused("you requested this deployment: another approver must decide on it", status=403,
                              code="own-request")
    if not decidable(deployment):
        return RequestRefused(f"deployment #{deployment.pk} is {deployment.get_status_display().lower()}: "
                              "there is nothing to approve or reject", code="not-awaiting-approval")
    if Approval.objects.filter(deployment=deployment, user=user).exists():
        return RequestRefused(f"you already decided on deployment #{deployment.pk}", code="already-decided")
    if not deployment_digest(deployment):
        return RequestRefused(f"deployment #{deployment.pk} has no image digest yet: an approval binds one",
                              code="not-awaiting-approval")
    return None


def approve(deployment: Deployment, user, comment: str = "") -> Approval:
    """Record `user`'s approval, then release the deployment if nothing else holds it."""
    approval = _decide(deployment, user, Decision.APPROVED, comment)
    gates.reconsider(deployment.pk)  # its own transaction, under the lock order
    return approval


def reject(deployment: Deployment, user, comment: str = "") -> Approval:
    """Record `user`'s rejection and end the deployment cancelled `rejected`."""
    return _decide(deployment, user, Decision.REJECTED, comment)


def _decide(deployment: Deployment, user, decision: str, comment: str) -> Approval:
    comment = (comment or "").strip()
    if len(comment) > COMMENT_MAX:
        raise RequestRefused(f"the comment is {len(comment)} characters: at most {COMMENT_MAX}", status=400,
                             code="invalid")
    try:
        with transaction.atomic():
            queue._lock(deployment.environment_id, deployment.function_id)  # the one lock order
            row = (Deployment.objects.select_for_update().select_related("function", "environment", "build")
                   .get(pk=deployment.pk))
            refused = refusal(row, user)
            if refused is not None:
                raise refused
            now = timezone.now()
            approval = Approval.objects.create(
                deployment=row, user=user, decision=decision, environment=row.environment,
                digest=deployment_digest(row), settings_fingerprint=approvals.fingerprint(row.environment),
                comment=comment, expires_at=now + timedelta(seconds=settings.SLIPWAY_APPROVAL_TTL))
            AuditEvent.record(f"deployment.{decision}", function=row.function, actor=user, deployment=row.pk,
                              environment=row.environment.name, digest=approval.digest, comment=comment)
            if decision == Decision.REJECTED:
                who = user.get_username()
                row.finish(Status.CANCELLED, error_code="rejected",
                           error_message=f"rejected by {who}" + (f": {comment}" if comment else ""))
                transaction.on_commit(lambda: queue.dispatch(row.environment_id))  # whatever waited behind it
                events.status_changed.send(Deployment, deployment=row)  # canceled
            events.decided.send(Deployment, deployment=row, approval=approval)
    except IntegrityError:  # a second decision of the same user, racing the first past the check
        raise RequestRefused(f"you already decided on deployment #{deployment.pk}", code="already-decided") from None
    return approval
