"""Replaying a logged delivery as a new, explicit request.
"""

from __future__ import annotations

from django.db import transaction

from portal.core.errors import RequestRefused
from portal.deployments import Deployment, queue_deploy
from portal.functions import AuditEvent
from portal.hooks import merge_requests


def replay_delivery(delivery, *, user):
    """Process a logged delivery again as a new, explicit request by `user`: a UI deploy
    (auto-deploy being off or paused does not stop it), not subject to dedupe. The
    replay is logged as a delivery of its own that names the original."""
    import json

    from portal.hooks import gitlab
    from portal.hooks.models import WebhookDelivery

    function = delivery.function
    if function is None or function.is_archived:
        raise RequestRefused("the function is archived: it accepts no deploys")
    if not delivery.authenticated:
        raise RequestRefused("only deliveries that were authenticated can be replayed")
    if delivery.event_type == merge_requests.EVENT:  # newest wins by the MR's updated_at: a replay would lose
        raise RequestRefused("a merge request delivery is not replayed: Redeploy its preview on the Previews page")
    try:
        payload = json.loads(delivery.body)
        if not isinstance(payload, dict):
            raise ValueError("not a JSON object")
        decision = gitlab.decide(function, delivery.event_type, payload, explicit=True)
    except (ValueError, RecursionError, gitlab.Malformed) as exc:
        raise RequestRefused(f"delivery #{delivery.pk} cannot be replayed: {exc}") from None
    with transaction.atomic():
        replay = WebhookDelivery.objects.create(
            function=function, event_uuid=delivery.event_uuid, event_type=delivery.event_type,
            headers=delivery.headers, body=delivery.body, body_bytes=delivery.body_bytes, replay_of=delivery,
            replayed_by=user, outcome=WebhookDelivery.Outcome.ACCEPTED if decision.deploy
            else WebhookDelivery.Outcome.IGNORED, detail=gitlab.clean_text(decision.detail, 500))
        if decision.deploy:
            replay.deployment = queue_deploy(function, trigger=Deployment.Trigger.UI, user=user, ref=decision.ref,
                                              commit=decision.commit, delivery=replay.pk)
            replay.save(update_fields=["deployment"])
        AuditEvent.record("webhook.replayed", function=function, actor=user, delivery=delivery.pk,
                          replay=replay.pk, deployment=replay.deployment_id)
    return replay
