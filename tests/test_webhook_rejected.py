"""Who is calling is known before the body is read, and what strangers send is kept in
bounded rings: one per function, one for names that are no function. alice owns
`hello`, charlie views it. Celery's send_task is the one seam patched."""

import io
import json
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from portal.hooks import gitlab
from portal.models import DeliveryRing, WebhookDelivery
from tests.gitlab_hooks import headers, hook, push, signed

Outcome = WebhookDelivery.Outcome
SHA = "c3e8a1f0b2d4968778695a4b3c2d1e0f9a8b7c6d"
SIGNING = gitlab.new_signing_token()
BODY = json.dumps(push(SHA)).encode()


@pytest.fixture(autouse=True)
def _no_broker(sent):
    return sent


class RecordingInput(io.BytesIO):
    """A wsgi.input that notes every read: the receiver must not touch it before it knows the caller."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.reads = []

    def read(self, *args):
        self.reads.append(args)
        return super().read(*args)

    def readline(self, *args):
        self.reads.append(args)
        return super().readline(*args)


def post_unread(client, name, sent_headers, length: int):
    """POST a delivery announcing `length` bytes through an input that records reads."""
    stream = RecordingInput(BODY)
    response = client.post(f"/hooks/gitlab/{name}", data=BODY, content_type="application/json",
                           headers=sent_headers, **{"wsgi.input": stream, "CONTENT_LENGTH": str(length)})
    return response, stream


@pytest.mark.parametrize("name, token", [("hello", None), ("hello", "guess"), ("no-such-function", "guess")])
@pytest.mark.parametrize("length", [len(BODY), 1 << 40])
def test_a_bad_or_missing_token_is_refused_before_the_body_is_read(client, function, name, token, length):
    hook(function)
    response, stream = post_unread(client, name, headers(token=token), length)
    assert (response.status_code, response.json()) == (401, {"error": "unauthorized"})
    assert stream.reads == []


@pytest.mark.parametrize("change, detail", [
    ({"webhook-timestamp": str(int(time.time()) - 3600)}, "s old; more than 300 s is refused"),
    ({"webhook-signature": "v1,not base64!"}, "webhook-signature holds no v1 signature"),
    ({"webhook-signature": ""}, "no webhook-signature header"),
    ({"webhook-id": "x" * 200}, "webhook-id is not an id GitLab sends"),
])
def test_a_signature_header_that_cannot_match_is_refused_before_the_body_is_read(client, function, change, detail):
    hook(function, token="", signing=SIGNING)
    sent = {**headers(token=None), **signed(SIGNING, BODY, "msg-1"), **change}
    response, stream = post_unread(client, "hello", sent, 1 << 40)
    assert response.status_code == 401 and stream.reads == []
    assert detail in WebhookDelivery.objects.get().detail


def test_a_well_formed_signature_over_another_body_is_read_and_then_refused(client, function):
    hook(function, token="", signing=SIGNING)
    sent = {**headers(token=None), **signed(SIGNING, b"{}", "msg-1")}
    response, stream = post_unread(client, "hello", sent, len(BODY))
    assert response.status_code == 401 and stream.reads != []
    assert WebhookDelivery.objects.get().detail == "webhook-signature does not match"


@pytest.mark.postgres
def test_rejected_deliveries_fill_a_ring_per_function_and_count_the_rest(client, cast, function, settings):
    settings.SLIPWAY_WEBHOOK_REJECTED_KEPT = 3
    hook(function)
    for n in range(5):
        response = client.post("/hooks/gitlab/hello", data=BODY, content_type="application/json",
                               headers=headers(token=f"guess-{n}", **{"X-Gitlab-Event-UUID": f"event-{n}"}))
        assert response.status_code == 401
    kept = WebhookDelivery.objects.filter(function=function)
    assert sorted(kept.values_list("event_uuid", flat=True)) == ["event-2", "event-3", "event-4"]
    assert set(kept.values_list("outcome", flat=True)) == {Outcome.REJECTED}
    assert DeliveryRing.objects.get(owner=function.pk).rejected == 5
    client.force_login(cast["charlie"])
    page = client.get(reverse("portal-deliveries", args=["hello"])).content.decode()
    assert page.count('id="delivery-') == 3 and "2 more rejected deliveries were not kept" in page


@pytest.mark.postgres
def test_rejections_to_unknown_names_fill_one_ring_of_their_own(client, function, settings):
    settings.SLIPWAY_WEBHOOK_REJECTED_KEPT = 2
    hook(function)
    for n in range(4):
        assert client.post(f"/hooks/gitlab/nobody-{n}", data=BODY, content_type="application/json",
                           headers=headers()).status_code == 401
    kept = WebhookDelivery.objects.filter(function=None)
    assert sorted(kept.values_list("detail", flat=True)) == ["no such function: 'nobody-2'",
                                                             "no such function: 'nobody-3'"]
    assert DeliveryRing.objects.get(owner=DeliveryRing.UNKNOWN).rejected == 4
    assert not WebhookDelivery.objects.filter(function=function).exists()


@pytest.mark.postgres
def test_a_smaller_ring_setting_drops_the_slots_beyond_it_when_the_ring_wraps(client, function, settings):
    hook(function)
    settings.SLIPWAY_WEBHOOK_REJECTED_KEPT = 4
    for _ in range(4):
        client.post("/hooks/gitlab/hello", data=BODY, content_type="application/json", headers=headers(token="x"))
    settings.SLIPWAY_WEBHOOK_REJECTED_KEPT = 2
    for _ in range(4):
        client.post("/hooks/gitlab/hello", data=BODY, content_type="application/json", headers=headers(token="x"))
    assert WebhookDelivery.objects.filter(function=function).count() == 2


@pytest.mark.postgres
def test_known_and_unknown_names_make_the_same_queries(client, function):
    hook(function)
    statements = []
    for name in ("hello", "no-such-function", "hello", "no-such-function"):
        with CaptureQueriesContext(connection) as queries:
            response = client.post(f"/hooks/gitlab/{name}", data=BODY, content_type="application/json",
                                   headers=headers(token="guess"))
        assert response.status_code == 401
        statements.append([q["sql"].split()[0] for q in queries])
    assert len(statements[0]) > 1  # the refusal is written, not only looked up
    assert statements[0] == statements[1] and statements[2] == statements[3]


def test_an_authenticated_malformed_delivery_is_kept_outside_the_ring(client, function, settings):
    settings.SLIPWAY_WEBHOOK_REJECTED_KEPT = 1
    hook(function)
    for _ in range(3):
        assert client.post("/hooks/gitlab/hello", data=b"{not json", content_type="application/json",
                           headers=headers()).status_code == 400
    assert WebhookDelivery.objects.filter(outcome=Outcome.REJECTED, status_code=400).count() == 3


def test_rejections_kept_and_not_kept_are_all_counted_in_the_metrics(client, function, settings):
    settings.SLIPWAY_WEBHOOK_REJECTED_KEPT = 1
    hook(function)
    for name in ("hello", "hello", "hello", "nobody"):
        client.post(f"/hooks/gitlab/{name}", data=BODY, content_type="application/json", headers=headers(token="x"))
    text = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    assert 'slipway_webhook_deliveries_total{outcome="rejected"} 4.0' in text
