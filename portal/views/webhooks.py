"""The GitLab receiver: verify, parse, one transaction, answer.

GitLab waits 10 s, counts every non-2xx answer as a failure and disables a
hook after four in a row, so: 4xx only for a request that is not
authenticated (401, the same answer whether the function exists or not),
too large (413), without a length (411) or malformed (400); everything else
that authenticates is answered 200 with what was done about it: accepted,
ignored, paused or duplicate. Nothing slow happens here: the deployment row
is written in the same transaction as the delivery, and its task is sent
after commit.

Who is calling is settled from the headers before the body is read: the
secret token in full, the signature headers' shape and timestamp, then the
length; only then is the body read (bounded) and its signature checked. A
refusal before that fills a slot of a bounded ring (DeliveryRing): a known
name and an unknown one take the same path. A signed delivery claims its
(webhook-id, webhook-timestamp) first: the same pair again is a replay.
"""

from __future__ import annotations

import json
import logging
import time

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Prefetch
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from deploy.errors import SlipwayError
from portal import deployments, functions
from portal.core import errors
from portal.hooks import gitlab, merge_requests
from portal.models import AuditEvent, DeliveryRing, Environment, Function, SeenSignature, WebhookDelivery

log = logging.getLogger(__name__)
Outcome = WebhookDelivery.Outcome
REJECTED_BODY_CHARS = 2048  # an unauthenticated body is anyone's: keep only its start
RECORDED_FIELDS = ["function", "event_uuid", "webhook_uuid", "dedupe_key", "event_type", "headers", "body",
                   "body_bytes", "outcome", "detail", "status_code", "took_ms", "received_at"]


class _Answer(SlipwayError):
    """End the request with this status and code; the delivery is recorded as rejected."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(code, message, status=status)


class _Delivery:
    """One request as it is being processed: what gets recorded about it."""

    def __init__(self, request, function: Function | None):
        self.request, self.function = request, function
        self.started = time.monotonic()
        self.body = b""
        self.row: WebhookDelivery | None = None
        headers = request.headers
        self.fields = {
            "event_type": gitlab.clean_text(headers.get("X-Gitlab-Event", ""), 64),
            "event_uuid": gitlab.clean_text(headers.get("X-Gitlab-Event-UUID", ""), 64),
            "webhook_uuid": gitlab.clean_text(headers.get("X-Gitlab-Webhook-UUID", ""), 64),
            "headers": gitlab.stored_headers(headers),
        }

    def took_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000

    def _row(self, outcome: str, detail: str, status: int, body_chars: int | None, **fields) -> WebhookDelivery:
        text = self.body.decode("utf-8", "replace")[:body_chars]
        return WebhookDelivery(
            function=self.function, **self.fields, body=gitlab.clean_text(text, len(text)),
            body_bytes=len(self.body), outcome=outcome, detail=gitlab.clean_text(detail, 500), status_code=status,
            took_ms=self.took_ms(), **fields)

    def record(self, outcome: str, detail: str, status: int, *, body_chars: int | None = None,
               **fields) -> WebhookDelivery:
        """A row of the function's log; `body_chars` keeps only the start of the body."""
        self.row = self._row(outcome, detail, status, body_chars, **fields)
        self.row.save(force_insert=True)
        return self.row

    def refuse(self, detail: str, status: int) -> None:
        """A refusal before the caller is known: it overwrites the oldest slot of its ring (the
        function's, or the one of unknown names). The same statements whoever was called:
        count one, upsert the slot, and, when the ring wraps, drop slots a smaller setting left."""
        size = settings.SLIPWAY_WEBHOOK_REJECTED_KEPT
        owner = self.function.pk if self.function is not None else DeliveryRing.UNKNOWN
        ring, count = DeliveryRing.count_one(owner)
        slot = (count - 1) % size
        row = self._row(Outcome.REJECTED, detail, status, REJECTED_BODY_CHARS, ring_id=ring, ring_slot=slot)
        WebhookDelivery.objects.bulk_create([row], update_conflicts=True, unique_fields=["ring", "ring_slot"],
                                            update_fields=RECORDED_FIELDS)
        if slot == 0:
            WebhookDelivery.objects.filter(ring_id=ring, ring_slot__gte=size).delete()


def _answer(status: int, **body) -> JsonResponse:
    return JsonResponse(body, status=status)


@csrf_exempt  # authenticated by GitLab's token or signature instead
@require_POST
def gitlab_receiver(request, name: str):
    function = Function.objects.select_related("hook_keys").filter(name=name).first() if len(name) <= 64 else None
    delivery = _Delivery(request, function)
    try:
        try:
            return _receive(delivery, name)
        except (_Answer, gitlab.Malformed) as answer:  # the receiver's own answers: never another SlipwayError
            if answer.status == 400:  # authenticated, so kept in full in the function's log
                delivery.record(Outcome.REJECTED, answer.message, answer.status)
            else:
                delivery.refuse(answer.message, answer.status)
            return _answer(answer.status, error=answer.code)
    except DatabaseError:
        # The request may be fine; the database is not. 503 says so (GitLab counts it as a failure).
        log.exception("webhook delivery for %r could not be recorded", name[:64])
        return _answer(503, error="unavailable")


def _receive(delivery: _Delivery, name: str) -> JsonResponse:
    request, function, now = delivery.request, delivery.function, time.time()
    problem = gitlab.check_headers(function, request.headers, now)
    if problem:
        raise _Answer(401, "unauthorized", f"{problem}: {gitlab.clean_text(name, 100)!r}" if function is None
                      else problem)
    length = request.META.get("CONTENT_LENGTH", "")
    if not length.isdigit():
        raise _Answer(411, "length required", "no Content-Length header")
    cap = settings.SLIPWAY_WEBHOOK_MAX_BODY_BYTES
    if int(length) > cap:
        raise _Answer(413, "too large", f"a body of {int(length)} bytes; the cap is {cap}")
    delivery.body = request.read(int(length))  # bounded by Content-Length, which is within the cap
    problem = gitlab.check_body(function, request.headers, delivery.body)
    if problem:
        raise _Answer(401, "unauthorized", problem)

    try:
        payload = json.loads(delivery.body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _Answer(400, "malformed", f"the body is not JSON: {str(exc)[:200]}") from None
    pair = gitlab.signed_pair(function, request.headers)
    try:
        if not isinstance(payload, dict):
            raise gitlab.Malformed("the body is not a JSON object")
        if not delivery.fields["event_type"]:
            raise gitlab.Malformed("no X-Gitlab-Event header")
        key = gitlab.dedupe_key(request.headers, signed=pair is not None)
        with transaction.atomic():
            if pair is None:
                return _process(delivery, key, payload)
            return _process_signed(delivery, key, payload, pair)
    finally:
        if pair is not None:
            SeenSignature.prune(now)  # in its own statement, after the transaction: it holds no lock


def _process_signed(delivery: _Delivery, key: str, payload: dict, pair: tuple[str, int]) -> JsonResponse:
    """Claim the signature's (webhook-id, webhook-timestamp), in a savepoint, before anything else:
    a simultaneous twin waits on the unique constraint and then fails, and a later replay finds
    it, whatever this delivery's outcome. A rollback (archived meanwhile, malformed) frees it."""
    function = delivery.function
    try:
        with transaction.atomic():
            seen = SeenSignature.objects.create(function=function, webhook_id=pair[0], timestamp=pair[1])
    except IntegrityError:
        return _replayed(delivery, key, pair)
    response = _process(delivery, key, payload)
    if delivery.row is not None:
        SeenSignature.objects.filter(pk=seen.pk).update(delivery=delivery.row)
    return response


def _replayed(delivery: _Delivery, key: str, pair: tuple[str, int]) -> JsonResponse:
    first = SeenSignature.objects.filter(function=delivery.function, webhook_id=pair[0], timestamp=pair[1]) \
        .values_list("delivery_id", flat=True).first()
    detail = "a replay: this webhook-id and webhook-timestamp were already received" + (
        f" as delivery #{first}" if first else "")
    delivery.fields["dedupe_key"] = key
    # The body is the first one's (the signature says so): not kept twice.
    delivery.record(Outcome.DUPLICATE, detail, 200, body_chars=0, duplicate_of_id=first)
    return _answer(200, outcome=Outcome.DUPLICATE, detail=detail)


def _process(delivery: _Delivery, key: str, payload: dict) -> JsonResponse:
    """One transaction. An accepted delivery claims its key first, in a savepoint: the
    partial unique index makes a simultaneous twin wait for it and then fail, so a
    duplicate never queues for the function's lock. Only then is the function row
    locked (the queue's lock order), its settings read again (a rollback may have
    paused it meanwhile) and the deployment requested."""
    event = delivery.fields["event_type"]
    delivery.fields["dedupe_key"] = key
    if event == merge_requests.EVENT:
        return _merge_request(delivery, key, payload)
    decision = gitlab.decide(delivery.function, event, payload)
    if not decision.deploy:
        return _ignored(delivery, key, decision.detail, Outcome.PAUSED if decision.paused else Outcome.IGNORED)
    row = _claim(delivery, decision.detail)
    if row is None:
        return _duplicate(delivery, key)
    # The feedback settings come with the lock: the request reports to GitLab from them. Then
    # its environments' rows, locked and read in one query (the lock order: function, then
    # environments): the decision reads the first's pause, and the request goes to it.
    function = (Function.objects.select_for_update(of=("self",)).select_related("feedback_settings")
                .prefetch_related(Prefetch("environments", queryset=Environment.objects.select_for_update()))
                .get(pk=delivery.function.pk))
    if function.is_archived:  # archived since the token was checked: nothing of this is kept but the refusal
        raise _Answer(401, "unauthorized", "the function is archived: it accepts no deliveries")
    decision = gitlab.decide(function, event, payload)
    if not decision.deploy:  # paused or switched off meanwhile: the key is free again
        outcome = Outcome.PAUSED if decision.paused else Outcome.IGNORED
        WebhookDelivery.objects.filter(pk=row.pk).update(outcome=outcome, detail=decision.detail[:500])
        return _answer(200, outcome=outcome, detail=decision.detail)
    try:
        deployment = deployments.request_webhook_deploy(function, ref=decision.ref, commit=decision.commit,
                                                     delivery=row.pk)
    except errors.RequestRefused as exc:
        WebhookDelivery.objects.filter(pk=row.pk).update(outcome=Outcome.IGNORED, detail=str(exc)[:500])
        return _answer(200, outcome=Outcome.IGNORED, detail=str(exc))
    WebhookDelivery.objects.filter(pk=row.pk).update(deployment=deployment, took_ms=delivery.took_ms())
    return _answer(200, outcome=Outcome.ACCEPTED, detail=decision.detail, deployment=deployment.pk)


def _ignored(delivery: _Delivery, key: str, detail: str, outcome: str = Outcome.IGNORED) -> JsonResponse:
    """Nothing to do: logged as ignored (or paused), unless its key was already accepted."""
    if key and WebhookDelivery.objects.filter(function=delivery.function, dedupe_key=key,
                                              outcome__in=WebhookDelivery.CLAIMS_KEY).exists():
        return _duplicate(delivery, key)
    delivery.record(outcome, detail, 200)
    return _answer(200, outcome=outcome, detail=detail)


def _claim(delivery: _Delivery, detail: str) -> WebhookDelivery | None:
    """Record the delivery accepted, claiming its key in a savepoint; None: a twin has it."""
    try:
        with transaction.atomic():
            return delivery.record(Outcome.ACCEPTED, detail, 200)
    except IntegrityError:
        delivery.row = None
        return None


def _merge_request(delivery: _Delivery, key: str, payload: dict) -> JsonResponse:
    """A merge request event: a preview opened, moved, closed, or waiting for a fork's approval
    (portal/deployments/previews.py). The delivery's row links the preview it moved."""
    function = delivery.function
    environment = functions.preview_environment(function)
    decision = merge_requests.decide(function, payload, environment.preview_policy if environment else None)
    if decision.merge_request is None:
        if decision.refused:
            AuditEvent.record("preview.refused", function=function, actor_label="webhook", reason=decision.detail)
        return _ignored(delivery, key, decision.detail)
    row = _claim(delivery, decision.detail)
    if row is None:
        return _duplicate(delivery, key)
    function = Function.objects.select_for_update().get(pk=function.pk)  # the lock order: the function first
    if function.is_archived:
        raise _Answer(401, "unauthorized", "the function is archived: it accepts no deliveries")
    try:
        received = deployments.receive_merge_request(function, decision.merge_request, delivery=row.pk)
    except errors.RequestRefused as exc:
        WebhookDelivery.objects.filter(pk=row.pk).update(outcome=Outcome.IGNORED, detail=str(exc)[:500])
        return _answer(200, outcome=Outcome.IGNORED, detail=str(exc))
    outcome = Outcome.ACCEPTED if received.accepted else Outcome.IGNORED
    WebhookDelivery.objects.filter(pk=row.pk).update(outcome=outcome, detail=received.detail[:500],
                                                     preview=received.preview, deployment=received.deployment,
                                                     took_ms=delivery.took_ms())
    extra = {"deployment": received.deployment.pk} if received.deployment else {}
    return _answer(200, outcome=outcome, detail=received.detail, merge_request=decision.merge_request.iid, **extra)


def _duplicate(delivery: _Delivery, key: str) -> JsonResponse:
    original = WebhookDelivery.objects.filter(function=delivery.function, dedupe_key=key,
                                              outcome__in=WebhookDelivery.CLAIMS_KEY).first()
    detail = (f"already accepted as delivery #{original.pk}" if original else "already accepted") + \
        (f" (deployment #{original.deployment_id})" if original and original.deployment_id else "")
    delivery.record(Outcome.DUPLICATE, detail, 200, duplicate_of=original)
    return _answer(200, outcome=Outcome.DUPLICATE, detail=detail)
