"""The feedback package's answers to the deployments package's events
(portal/deployments/events.py): GitLab commit statuses, notifications, and the
expected state the drift check compares with.
Connected once, by portal/apps.py."""

from __future__ import annotations

from portal import deployments, functions
from portal.core import crypto
from portal.feedback import drift, preview_notes, status


def _status_changed(sender, deployment, **_) -> None:
    status.report_status(deployment)
    if deployment.status == deployments.Deployment.Status.AWAITING_APPROVAL:
        approval_requested(deployment)


def approval_requested(deployment) -> None:
    """A deployment entered awaiting_approval (held at request, or moved there from a freeze):
    audited, and the members and the webhook told who may approve."""
    need, eligible = deployments.approvals_required(deployment), deployments.who_may_approve(deployment)
    functions.AuditEvent.record("deployment.approval_requested", function=deployment.function,
                                actor_label="system", deployment=deployment.pk,
                                environment=deployment.environment.name, required=need, approvers=eligible)
    status.notify(deployment.function, status.APPROVAL_REQUESTED, deployment_id=deployment.pk, required=need,
                  approvers=eligible)


def _decided(sender, deployment, approval, **_) -> None:
    event = status.APPROVED if approval.decision == approval.Decision.APPROVED else status.REJECTED
    status.notify(deployment.function, event, deployment_id=deployment.pk, by=approval.user.get_username(),
                  comment=approval.comment)


def _lambda_entered(sender, deployment, **_) -> None:
    status.report_deployment(deployment)


def _finished(sender, deployment, **_) -> None:
    status.after_finish(deployment)
    if deployment.preview_id:  # the merge request's note says how its preview ended
        preview_notes.request(deployment.preview_id)


def _preview_changed(sender, preview, **_) -> None:
    preview_notes.request(preview.pk)


def _superseding(sender, function, queued, **_) -> None:
    # Read before the update that supersedes them, and only when GitLab hears of it.
    if status.gitlab_configured(function):
        status.report_canceled(function, list(queued.values_list("pk", flat=True)))


def _resumed(sender, function, by, environment=None, **_) -> None:
    status.notify(function, status.RESUME, by=by, **({"environment": environment.name} if environment else {}))


def _freeze_overridden(sender, deployment, by, reason, **_) -> None:
    status.notify(deployment.function, status.FREEZE_OVERRIDE, deployment_id=deployment.pk, by=by, reason=reason)


def _shifted(sender, deployment, written, version="", **_) -> None:
    drift.record_shift(deployment, written, version)


def _secrets(sender, function, **_) -> list[str]:
    """The function's secrets this package keeps: its GitLab token, its webhook signing
    secret, and secret environment values in the states it recorded from Lambda (a
    value replaced since may still be quoted back)."""
    reports = function.feedback_settings
    recorded = [state.get("environment") or {} for env in function.environments.select_related("drift_state")
                for state in (env.drift_state.expected_state or {}, env.drift_state.drift_observed or {})]
    values = functions.environment_secrets(function, *recorded)
    for sealed in (reports.gitlab_status_token, reports.notify_webhook_secret):
        if sealed:
            try:
                values.append(crypto.decrypt(sealed))
            except crypto.Unavailable:
                pass  # not readable here, so not usable either: nothing of it can be sent
    return values


def connect() -> None:
    functions.secrets_wanted.connect(_secrets, dispatch_uid="feedback.secrets")
    deployments.status_changed.connect(_status_changed, dispatch_uid="feedback.status_changed")
    deployments.finished.connect(_finished, dispatch_uid="feedback.finished")
    deployments.lambda_entered.connect(_lambda_entered, dispatch_uid="feedback.lambda_entered")
    deployments.decided.connect(_decided, dispatch_uid="feedback.decided")
    deployments.superseding.connect(_superseding, dispatch_uid="feedback.superseding")
    deployments.resumed.connect(_resumed, dispatch_uid="feedback.resumed")
    deployments.freeze_overridden.connect(_freeze_overridden, dispatch_uid="feedback.freeze_overridden")
    deployments.shifted.connect(_shifted, dispatch_uid="feedback.shifted")
    deployments.preview_changed.connect(_preview_changed, dispatch_uid="feedback.preview_changed")
    deployments.preview_closed.connect(_preview_changed, dispatch_uid="feedback.preview_closed")
