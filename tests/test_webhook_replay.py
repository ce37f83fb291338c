"""A signed delivery counts once: the same webhook-id and webhook-timestamp again is a
replay, whatever the first one's outcome, and only owners see the headers that would
let someone replay it. alice owns `hello`, bob deploys, charlie views. Celery's
send_task is the one seam patched."""

import json
import time

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse

from portal.hooks import gitlab
from portal.models import Deployment, Function, SeenSignature, WebhookDelivery
from tests.conftest import update_function
from tests.gitlab_hooks import hook, push, signed

Outcome = WebhookDelivery.Outcome
SHA = "c3e8a1f0b2d4968778695a4b3c2d1e0f9a8b7c6d"
SIGNING = gitlab.new_signing_token()


@pytest.fixture(autouse=True)
def _no_broker(sent):
    return sent


@pytest.fixture
def hooked(function):
    return hook(function, token="", signing=SIGNING)


def signed_push(msg_id="msg-1", at=None, branch="main", **extra) -> tuple[bytes, dict]:
    """A push as GitLab signs it (Idempotency-Key equal to webhook-id), and its headers."""
    body = json.dumps(push(SHA, branch=branch)).encode()
    return body, {"X-Gitlab-Event": "Push Hook", **signed(SIGNING, body, msg_id, at=at), **extra}


def post(client, body: bytes, sent: dict) -> dict:
    response = client.post("/hooks/gitlab/hello", data=body, content_type="application/json", headers=sent)
    assert response.status_code == 200, response.content
    return response.json()


def replay(sent: dict) -> dict:
    """What someone who saw the delivery sends again: every signed header as it was, the unsigned ones dropped."""
    return {name: value for name, value in sent.items() if name.lower() not in ("idempotency-key",
                                                                                "x-gitlab-event-uuid")}


@pytest.mark.postgres
def test_a_replay_after_an_accepted_delivery_is_a_duplicate(client, hooked):
    body, sent = signed_push()
    assert post(client, body, sent)["outcome"] == "accepted"
    answer = post(client, body, replay(sent))
    assert answer["outcome"] == "duplicate" and "replay" in answer["detail"]
    assert Deployment.objects.count() == 1
    original = WebhookDelivery.objects.get(outcome=Outcome.ACCEPTED)
    duplicate = WebhookDelivery.objects.get(outcome=Outcome.DUPLICATE)
    assert duplicate.duplicate_of == original and f"as delivery #{original.pk}" in duplicate.detail
    assert (duplicate.body, duplicate.body_bytes) == ("", len(body))  # the signed body is the original's


def test_a_replay_row_offers_no_replay_button_its_original_does(client, cast, hooked):
    body, sent = signed_push()
    post(client, body, sent)
    post(client, body, sent)
    client.force_login(cast["bob"])
    page = client.get(reverse("portal-deliveries", args=["hello"])).content.decode()
    assert page.count('id="delivery-') == 2 and page.count("Replay</button>") == 1


def test_a_replay_after_the_deployment_was_skipped_as_stale_is_a_duplicate(client, hooked):
    body, sent = signed_push()
    deployment = post(client, body, sent)["deployment"]
    WebhookDelivery.mark_stale(deployment, "stale: already live")
    assert post(client, body, replay(sent))["outcome"] == "duplicate"
    assert Deployment.objects.count() == 1


def test_a_replay_after_an_ignored_delivery_is_a_duplicate_once_auto_deploy_is_back_on(client, hooked):
    Function.objects.filter(pk=hooked.pk).update(auto_deploy=False)
    body, sent = signed_push()
    assert post(client, body, sent)["outcome"] == "ignored"
    Function.objects.filter(pk=hooked.pk).update(auto_deploy=True)
    assert post(client, body, replay(sent))["outcome"] == "duplicate"
    assert not Deployment.objects.exists()


@pytest.mark.postgres
def test_a_replay_after_a_paused_delivery_is_a_duplicate_once_resumed(client, hooked):
    update_function(hooked, paused_reason="rolled back to version 3 by bob")
    body, sent = signed_push()
    assert post(client, body, sent)["outcome"] == "paused"
    update_function(hooked, paused_reason="")
    assert post(client, body, sent)["outcome"] == "duplicate"
    assert not Deployment.objects.exists()


def test_gitlabs_own_resend_of_a_paused_delivery_deploys_once_resumed(client, hooked):
    # Resend signs the same webhook-id again with a new timestamp: a new delivery, not a replay.
    update_function(hooked, paused_reason="rolled back")
    body, sent = signed_push(at=time.time() - 10)
    post(client, body, sent)
    update_function(hooked, paused_reason="")
    assert post(client, *signed_push())["outcome"] == "accepted"
    assert post(client, *signed_push(at=time.time() + 5))["outcome"] == "duplicate"  # and once only
    assert Deployment.objects.count() == 1


def test_the_dedupe_key_of_a_signed_delivery_is_its_webhook_id(client, hooked):
    body, sent = signed_push(msg_id="msg-7")
    post(client, body, replay(sent))
    assert WebhookDelivery.objects.get().dedupe_key == "msg-7"


@pytest.mark.postgres
def test_an_idempotency_key_other_than_the_webhook_id_is_malformed(client, hooked):
    body, sent = signed_push(msg_id="msg-1")
    response = client.post("/hooks/gitlab/hello", data=body, content_type="application/json",
                           headers={**sent, "Idempotency-Key": "msg-2"})
    assert response.status_code == 400 and response.json() == {"error": "malformed"}
    assert "Idempotency-Key differs from webhook-id" in WebhookDelivery.objects.get().detail
    assert not Deployment.objects.exists() and not SeenSignature.objects.exists()


def test_a_token_only_function_keeps_deduping_by_idempotency_key(client, function):
    from tests.gitlab_hooks import deliver

    hook(function)
    assert deliver(client, "hello", push(SHA), key="k", **{"webhook-id": "other"}).json()["outcome"] == "accepted"
    assert WebhookDelivery.objects.get().dedupe_key == "k"


@pytest.mark.postgres
def test_the_database_refuses_a_second_sighting_of_a_signature(hooked):
    SeenSignature.objects.create(function=hooked, webhook_id="msg-1", timestamp=1_800_000_000)
    with pytest.raises(IntegrityError), transaction.atomic():
        SeenSignature.objects.create(function=hooked, webhook_id="msg-1", timestamp=1_800_000_000)
    SeenSignature.objects.create(function=hooked, webhook_id="msg-1", timestamp=1_800_000_001)  # a resend


@pytest.mark.postgres
def test_seen_signatures_are_pruned_only_past_the_window_and_a_batch_at_a_time(hooked):
    now = int(time.time())
    keep = SeenSignature.KEPT_S
    SeenSignature.objects.bulk_create([SeenSignature(function=hooked, webhook_id=f"old-{n}", timestamp=now - keep - 1)
                                       for n in range(5)] + [
        SeenSignature(function=hooked, webhook_id="recent", timestamp=now - keep + 60)])
    assert keep >= gitlab.SIGNATURE_TOLERANCE_S * 2  # a timestamp up to 300 s ahead stays valid 600 s
    assert SeenSignature.prune(now, batch=3) == 3
    assert SeenSignature.prune(now, batch=3) == 2 and SeenSignature.prune(now, batch=3) == 0
    assert list(SeenSignature.objects.values_list("webhook_id", flat=True)) == ["recent"]


@pytest.mark.postgres
def test_a_signed_delivery_prunes_expired_sightings(client, hooked):
    SeenSignature.objects.create(function=hooked, webhook_id="old", timestamp=int(time.time()) - 3600)
    post(client, *signed_push())
    assert list(SeenSignature.objects.values_list("webhook_id", flat=True)) == ["msg-1"]


# --- Who sees the signature headers ------------------------------------------------------------


@pytest.mark.parametrize("name, shown", [("alice", True), ("bob", False), ("charlie", False)])
def test_only_owners_see_the_signature_headers_in_the_delivery_log(client, cast, hooked, name, shown):
    body, sent = signed_push(msg_id="msg-secret-id")
    post(client, body, sent)
    client.force_login(cast[name])
    page = client.get(reverse("portal-deliveries", args=["hello"])).content.decode()
    assert "webhook-signature: " in page.lower() and 'id="delivery-' in page
    assert (sent["webhook-signature"] in page) is shown
    assert (f"webhook-timestamp: {sent['webhook-timestamp']}" in page.lower()) is shown
    assert ("webhook-id: msg-secret-id" in page.lower()) is shown
