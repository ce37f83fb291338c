"""The feedback package's answers to the deployments package's events
(portal/deployments/events.py): GitLab commit statuses and notifications.
Connected once, by portal/apps.py."""

from __future__ import annotations

from portal import deployments
from portal.feedback import status


def _status_changed(sender, deployment, **_) -> None:
    status.report_status(deployment)


def _finished(sender, deployment, **_) -> None:
    status.after_finish(deployment)


def _superseding(sender, function, queued, **_) -> None:
    # Read before the update that supersedes them, and only when GitLab hears of it.
    if status.gitlab_configured(function):
        status.report_canceled(function, list(queued.values_list("pk", flat=True)))


def _resumed(sender, function, by, **_) -> None:
    status.notify(function, status.RESUME, by=by)


def connect() -> None:
    deployments.status_changed.connect(_status_changed, dispatch_uid="feedback.status_changed")
    deployments.finished.connect(_finished, dispatch_uid="feedback.finished")
    deployments.superseding.connect(_superseding, dispatch_uid="feedback.superseding")
    deployments.resumed.connect(_resumed, dispatch_uid="feedback.resumed")
