"""The hooks package's answer to the deployments package's events
(portal/deployments/events.py): a delivery whose deployment was skipped as stale
says so in the delivery log. Connected once, by portal/apps.py."""

from __future__ import annotations

from portal import deployments
from portal.hooks.models import WebhookDelivery


def _stale(sender, deployment, reason, **_) -> None:
    WebhookDelivery.mark_stale(deployment.pk, reason)


def connect() -> None:
    deployments.stale.connect(_stale, dispatch_uid="hooks.stale")
