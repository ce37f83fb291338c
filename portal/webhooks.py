"""The GitLab receiver: verify, parse, one transaction, answer.

GitLab waits 10 s, counts every non-2xx answer as a failure and disables a
hook after four in a row, so: 4xx only for a request that is not
authenticated (401, the same answer whether the function exists or not),
too large (413), without a length (411) or malformed (400); everything else
that authenticates is answered 200 with what was done about it: accepted,
ignored, paused or duplicate. Nothing slow happens here: the deployment row
is written in the same transaction as the delivery, and its task is sent
after commit.
"""

from __future__ import annotations

import json
import logging
import time

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from portal import gitlab, services
from portal.models import Function, WebhookDelivery

log = logging.getLogger(__name__)
Outcome = WebhookDelivery.Outcome
REJECTED_BODY_CHARS = 2048  # an unauthenticated body is anyone's: keep only its start


class _Answer(Exception):
    """End the request with this status; the delivery is recorded as rejected."""

    def __init__(self, status: int, error: str, detail: str):
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


class _Delivery:
    """One request as it is being processed: what gets recorded about it."""

    def __init__(self, request, function: Function | None):
        self.request, self.function = request, function
        self.started = time.monotonic()
        self.body = b""
        headers = request.headers
        self.fields = {
            "event_type": gitlab.clean_text(headers.get("X-Gitlab-Event", ""), 64),
            "event_uuid": gitlab.clean_text(headers.get("X-Gitlab-Event-UUID", ""), 64),
            "webhook_uuid": gitlab.clean_text(headers.get("X-Gitlab-Webhook-UUID", ""), 64),
            "headers": gitlab.stored_headers(headers),
        }

    def took_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000

    def record(self, outcome: str, detail: str, status: int, *, full_body: bool = True, **fields) -> WebhookDelivery:
        text = self.body.decode("utf-8", "replace")
        if not full_body:
            text = text[:REJECTED_BODY_CHARS]
        return WebhookDelivery.objects.create(
            function=self.function, **self.fields, body=gitlab.clean_text(text, len(text)),
            body_bytes=len(self.body), outcome=outcome, detail=gitlab.clean_text(detail, 500), status_code=status,
            took_ms=self.took_ms(), **fields)


def _answer(status: int, **body) -> JsonResponse:
    return JsonResponse(body, status=status)


@csrf_exempt  # authenticated by GitLab's token or signature instead
@require_POST
def gitlab_receiver(request, name: str):
    function = Function.objects.filter(name=name).first() if len(name) <= 64 else None
    delivery = _Delivery(request, function)
    try:
        try:
            return _receive(delivery)
        except _Answer as answer:
            if delivery.function is not None:  # strangers' requests to unknown names are not kept
                delivery.record(Outcome.REJECTED, answer.detail, answer.status, full_body=answer.status == 400)
            return _answer(answer.status, error=answer.error)
    except DatabaseError:
        # The request may be fine; the database is not. 503 says so (GitLab counts it as a failure).
        log.exception("webhook delivery for %r could not be recorded", name[:64])
        return _answer(503, error="unavailable")


def _receive(delivery: _Delivery) -> JsonResponse:
    request = delivery.request
    length = request.META.get("CONTENT_LENGTH", "")
    if not length.isdigit():
        raise _Answer(411, "length required", "no Content-Length header")
    cap = settings.SLIPWAY_WEBHOOK_MAX_BODY_BYTES
    if int(length) > cap:
        raise _Answer(413, "too large", f"a body of {int(length)} bytes; the cap is {cap}")
    delivery.body = request.read(int(length))  # bounded by Content-Length, which is within the cap

    problem = gitlab.authenticate(delivery.function, request.headers, delivery.body, time.time())
    if problem:
        raise _Answer(401, "unauthorized", problem)
    try:
        payload = json.loads(delivery.body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _Answer(400, "malformed", f"the body is not JSON: {str(exc)[:200]}") from None
    try:
        if not isinstance(payload, dict):
            raise gitlab.Malformed("the body is not a JSON object")
        if not delivery.fields["event_type"]:
            raise gitlab.Malformed("no X-Gitlab-Event header")
        key = gitlab.dedupe_key(request.headers)
        with transaction.atomic():
            return _process(delivery, key, payload)
    except gitlab.Malformed as exc:
        raise _Answer(400, "malformed", str(exc)) from None


def _process(delivery: _Delivery, key: str, payload: dict) -> JsonResponse:
    """One transaction. An accepted delivery claims its key first, in a savepoint: the
    partial unique index makes a simultaneous twin wait for it and then fail, so a
    duplicate never queues for the function's lock. Only then is the function row
    locked (the queue's lock order), its settings read again (a rollback may have
    paused it meanwhile) and the deployment requested."""
    event = delivery.fields["event_type"]
    decision = gitlab.decide(delivery.function, event, payload)
    delivery.fields["dedupe_key"] = key
    if not decision.deploy:
        if key and WebhookDelivery.objects.filter(function=delivery.function, dedupe_key=key,
                                                  outcome__in=WebhookDelivery.CLAIMS_KEY).exists():
            return _duplicate(delivery, key)
        outcome = Outcome.PAUSED if decision.paused else Outcome.IGNORED
        delivery.record(outcome, decision.detail, 200)
        return _answer(200, outcome=outcome, detail=decision.detail)
    try:
        with transaction.atomic():
            row = delivery.record(Outcome.ACCEPTED, decision.detail, 200)
    except IntegrityError:
        return _duplicate(delivery, key)
    function = Function.objects.select_for_update().get(pk=delivery.function.pk)
    if function.is_archived:  # archived since the token was checked: nothing of this is kept but the refusal
        raise _Answer(401, "unauthorized", "the function is archived: it accepts no deliveries")
    decision = gitlab.decide(function, event, payload)
    if not decision.deploy:  # paused or switched off meanwhile: the key is free again
        outcome = Outcome.PAUSED if decision.paused else Outcome.IGNORED
        WebhookDelivery.objects.filter(pk=row.pk).update(outcome=outcome, detail=decision.detail[:500])
        return _answer(200, outcome=outcome, detail=decision.detail)
    try:
        deployment = services.request_webhook_deploy(function, ref=decision.ref, commit=decision.commit,
                                                     delivery=row.pk)
    except services.RequestRefused as exc:
        WebhookDelivery.objects.filter(pk=row.pk).update(outcome=Outcome.IGNORED, detail=str(exc)[:500])
        return _answer(200, outcome=Outcome.IGNORED, detail=str(exc))
    WebhookDelivery.objects.filter(pk=row.pk).update(deployment=deployment, took_ms=delivery.took_ms())
    return _answer(200, outcome=Outcome.ACCEPTED, detail=decision.detail, deployment=deployment.pk)


def _duplicate(delivery: _Delivery, key: str) -> JsonResponse:
    original = WebhookDelivery.objects.filter(function=delivery.function, dedupe_key=key,
                                              outcome__in=WebhookDelivery.CLAIMS_KEY).first()
    detail = (f"already accepted as delivery #{original.pk}" if original else "already accepted") + \
        (f" (deployment #{original.deployment_id})" if original and original.deployment_id else "")
    delivery.record(Outcome.DUPLICATE, detail, 200, duplicate_of=original)
    return _answer(200, outcome=Outcome.DUPLICATE, detail=detail)
