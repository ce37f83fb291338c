"""The GitLab receiver: who gets in, exactly once, paused, replay, the delivery log
and the owner's token buttons. alice owns `hello`, bob deploys, charlie views, dave
has no role. Celery's send_task is the one seam patched."""

import json
import time
from unittest import mock

import pytest
from django.urls import reverse

from portal.core import crypto
from portal.hooks import gitlab
from portal.models import AuditEvent, Deployment, Function, HookKeys, WebhookDelivery
from tests.conftest import update_function
from tests.gitlab_hooks import TOKEN, deliver, hook, push, signed

Outcome = WebhookDelivery.Outcome
SHA = "c3e8a1f0b2d4968778695a4b3c2d1e0f9a8b7c6d"
SIGNING = gitlab.new_signing_token()


@pytest.fixture(autouse=True)
def _no_broker(sent):
    return sent


@pytest.fixture
def hooked(function):
    return hook(function)


def only_delivery() -> WebhookDelivery:
    return WebhookDelivery.objects.get()


# --- Who gets in ---------------------------------------------------------------------------


@pytest.mark.parametrize("token, detail", [
    (None, "no X-Gitlab-Token header (a secret token is configured)"),
    ("not-the-token", "X-Gitlab-Token does not match"),
])
def test_a_missing_or_wrong_token_is_refused_and_recorded_without_it(client, hooked, token, detail):
    response = deliver(client, "hello", push(SHA), token=token)
    assert (response.status_code, response.json()) == (401, {"error": "unauthorized"})
    delivery = only_delivery()
    assert (delivery.outcome, delivery.detail, delivery.status_code) == (Outcome.REJECTED, detail, 401)
    assert "not-the-token" not in json.dumps(delivery.headers) and not Deployment.objects.exists()


def test_the_right_token_is_accepted_and_never_stored(client, hooked):
    response = deliver(client, "hello", push(SHA))
    assert response.status_code == 200 and response.json()["outcome"] == "accepted"
    delivery = only_delivery()
    assert delivery.headers["X-Gitlab-Event"] == "Push Hook" and "Idempotency-Key" in delivery.headers
    assert TOKEN not in json.dumps(delivery.headers) + delivery.body


def test_an_unknown_function_gets_the_same_answer_and_is_kept_only_in_the_ring_of_unknown_names(client, hooked):
    wrong = deliver(client, "hello", push(SHA), token="guess")
    unknown = deliver(client, "no-such-function", push(SHA), token=TOKEN)
    assert (unknown.status_code, unknown.content) == (wrong.status_code, wrong.content)
    stranger = WebhookDelivery.objects.get(function__isnull=True)
    assert stranger.ring.owner == 0 and stranger.detail == "no such function: 'no-such-function'"


def test_a_function_with_no_token_configured_refuses_every_delivery(client, function):
    assert deliver(client, "hello", push(SHA), token="").status_code == 401
    assert "no secret token or signing token is configured" in only_delivery().detail


def test_an_archived_function_refuses_the_right_token(client, hooked):
    Function.objects.filter(pk=hooked.pk).update(archived_at="2026-11-01T00:00:00Z")
    assert deliver(client, "hello", push(SHA)).status_code == 401
    assert "archived" in only_delivery().detail and not Deployment.objects.exists()


def _signed_delivery(client, at=None, signing=SIGNING, **kwargs):
    body = json.dumps(push(SHA)).encode()
    return deliver(client, "hello", body, token=None, **signed(signing, body, "msg-1", at=at), **kwargs)


def test_a_correct_signature_is_accepted(client, function):
    hook(function, token="", signing=SIGNING)
    assert _signed_delivery(client).json()["outcome"] == "accepted"


@pytest.mark.parametrize("offset, signing, detail", [  # seconds from now, taken when the test runs
    (-301, SIGNING, "s old; more than 300 s is refused"),
    (400, SIGNING, "s ahead; more than 300 s is refused"),
    (None, gitlab.new_signing_token(), "webhook-signature does not match"),
])
def test_a_stale_or_wrong_signature_is_refused(client, function, offset, signing, detail):
    hook(function, token="", signing=SIGNING)
    at = None if offset is None else time.time() + offset
    assert _signed_delivery(client, at=at, signing=signing).status_code == 401
    assert detail in only_delivery().detail


def test_a_body_changed_after_signing_is_refused(client, function):
    hook(function, token="", signing=SIGNING)
    body = json.dumps(push(SHA)).encode()
    response = deliver(client, "hello", body.replace(b"main", b"mainx"), token=None,
                       **signed(SIGNING, body, "msg-1"))
    assert response.status_code == 401 and only_delivery().detail == "webhook-signature does not match"


def test_with_both_tokens_configured_both_are_required(client, function):
    hook(function, token=TOKEN, signing=SIGNING)
    assert deliver(client, "hello", push(SHA)).status_code == 401  # the token alone
    assert _signed_delivery(client, **{"X-Gitlab-Token": TOKEN}).status_code == 200


def test_the_signing_token_is_stored_encrypted(function):
    hook(function, token="", signing=SIGNING)
    stored = HookKeys.objects.get(function=function).webhook_signing_key
    assert SIGNING not in stored and crypto.decrypt(stored) == SIGNING


# --- Malformed and oversized -------------------------------------------------------------


@pytest.mark.parametrize("body, event, detail", [
    (b"{not json", "Push Hook", "the body is not JSON"),
    (b"[1, 2]", "Push Hook", "the body is not a JSON object"),
    (json.dumps(push("not-a-sha")).encode(), "Push Hook", "checkout_sha is not a full commit SHA"),
    (json.dumps(push(SHA)).encode(), "", "no X-Gitlab-Event header"),
])
def test_an_authenticated_malformed_delivery_gets_400_and_is_kept(client, hooked, body, event, detail):
    response = deliver(client, "hello", body, event=event)
    assert response.status_code == 400
    delivery = only_delivery()
    assert delivery.outcome == Outcome.REJECTED and detail in delivery.detail and delivery.body == body.decode()


def test_a_body_over_the_cap_gets_413_before_it_is_read(client, hooked, settings):
    settings.SLIPWAY_WEBHOOK_MAX_BODY_BYTES = 64 * 1024
    body = json.dumps({**push(SHA), "padding": "x" * 64 * 1024}).encode()
    with mock.patch("django.core.handlers.wsgi.WSGIRequest.read", autospec=True) as read:
        assert deliver(client, "hello", body).status_code == 413
    read.assert_not_called()
    assert only_delivery().body_bytes == 0


def test_the_default_cap_takes_the_largest_payload_gitlab_sends(settings):
    # GitLab's webhook encoder refuses payloads over 25 MiB (Gitlab::Json::LimitedEncoder).
    assert settings.SLIPWAY_WEBHOOK_MAX_BODY_BYTES >= 25 * 1024 * 1024


def test_an_unauthenticated_body_is_kept_only_in_part(client, function):
    # A well-formed signature is checked against the body, so the body is read: its start is kept.
    hook(function, token="", signing=SIGNING)
    body = json.dumps({**push(SHA), "padding": "x" * 10_000}).encode()
    deliver(client, "hello", body, token=None, **signed(gitlab.new_signing_token(), body, "msg-1"))
    delivery = only_delivery()
    assert delivery.status_code == 401 and len(delivery.body) == 2048 and delivery.body_bytes > 10_000


def test_a_wrong_token_is_kept_without_the_body_it_was_never_read(client, hooked):
    deliver(client, "hello", push(SHA), token="guess")
    delivery = only_delivery()
    assert (delivery.body, delivery.body_bytes, delivery.status_code) == ("", 0, 401)
    assert int(delivery.headers["Content-Length"]) > 0


def test_get_is_not_allowed(client, hooked):
    assert client.get("/hooks/gitlab/hello").status_code == 405


# --- Exactly once, paused ------------------------------------------------------------------


@pytest.mark.postgres
def test_a_resend_with_the_same_idempotency_key_is_a_duplicate(client, hooked):
    first = deliver(client, "hello", push(SHA), key="key-1")
    again = deliver(client, "hello", push(SHA), key="key-1")
    assert (first.json()["outcome"], again.json()["outcome"]) == ("accepted", "duplicate")
    assert Deployment.objects.count() == 1
    duplicate = WebhookDelivery.objects.get(outcome=Outcome.DUPLICATE)
    assert duplicate.duplicate_of == WebhookDelivery.objects.get(outcome=Outcome.ACCEPTED)


@pytest.mark.postgres
def test_without_an_idempotency_key_the_event_uuid_dedupes(client, hooked):
    for _ in range(2):
        client.post("/hooks/gitlab/hello", data=json.dumps(push(SHA)), content_type="application/json",
                    headers={"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": TOKEN, "X-Gitlab-Event-UUID": "ev-1"})
    assert Deployment.objects.count() == 1
    assert sorted(WebhookDelivery.objects.values_list("outcome", flat=True)) == ["accepted", "duplicate"]


@pytest.mark.postgres
def test_the_database_refuses_a_second_accepted_delivery_with_the_same_key(hooked):
    from django.db import IntegrityError, transaction

    WebhookDelivery.objects.create(function=hooked, dedupe_key="k", outcome=Outcome.ACCEPTED)
    with pytest.raises(IntegrityError), transaction.atomic():
        WebhookDelivery.objects.create(function=hooked, dedupe_key="k", outcome=Outcome.STALE)
    WebhookDelivery.objects.create(function=hooked, dedupe_key="k", outcome=Outcome.DUPLICATE)  # logged freely


def test_while_paused_a_push_is_recorded_as_paused_and_deploys_nothing(client, hooked):
    update_function(hooked, paused_reason="rolled back to version 3 by bob")
    response = deliver(client, "hello", push(SHA))
    assert response.status_code == 200 and response.json()["outcome"] == "paused"
    assert "rolled back to version 3" in only_delivery().detail and not Deployment.objects.exists()


def test_a_paused_delivery_resent_after_resume_deploys(client, hooked):
    update_function(hooked, paused_reason="rolled back")
    deliver(client, "hello", push(SHA), key="key-1")
    update_function(hooked, paused_reason="")
    assert deliver(client, "hello", push(SHA), key="key-1").json()["outcome"] == "accepted"
    assert Deployment.objects.count() == 1


def test_with_auto_deploy_off_a_push_is_ignored(client, hooked):
    Function.objects.filter(pk=hooked.pk).update(auto_deploy=False)
    assert deliver(client, "hello", push(SHA)).json()["outcome"] == "ignored"
    assert "auto-deploy is off" in only_delivery().detail


@pytest.mark.parametrize("body, detail", [
    (push(SHA, branch="feature/x"), "a push to feature/x; main deploys"),
    (push(SHA, before=SHA), "nothing changed (before == after)"),
    ({**push(SHA), "ref": "refs/tags/v1.0"}, "a push to 'refs/tags/v1.0', which is not a branch"),
])
def test_pushes_that_deploy_nothing_are_ignored_with_a_reason(client, hooked, body, detail):
    assert deliver(client, "hello", body).json() == {"outcome": "ignored", "detail": detail}


def test_a_tag_needs_a_pattern_it_matches(client, hooked):
    tag = {**push(SHA), "object_kind": "tag_push", "ref": "refs/tags/v2.0", "before": "0" * 40}
    assert "no tag pattern is set" in deliver(client, "hello", tag, event="Tag Push Hook").json()["detail"]
    Function.objects.filter(pk=hooked.pk).update(tag_pattern="v1.*")
    assert "does not match v1.*" in deliver(client, "hello", tag, event="Tag Push Hook").json()["detail"]
    assert not Deployment.objects.exists()


def test_a_tag_push_whose_ref_is_a_branch_is_ignored(client, hooked):
    Function.objects.filter(pk=hooked.pk).update(tag_pattern="*")
    tag = {**push(SHA), "object_kind": "tag_push"}
    assert deliver(client, "hello", tag, event="Tag Push Hook").json() == {
        "outcome": "ignored", "detail": "a tag push to 'refs/heads/main', which is not a tag"}


def test_the_delivery_records_the_webhook_deploy_in_the_audit_log(client, hooked):
    deliver(client, "hello", push(SHA))
    event = AuditEvent.objects.get(action="deployment.requested")
    assert (event.actor_label, event.detail["trigger"], event.detail["delivery"]) == (
        "webhook", "webhook", only_delivery().pk)


def test_a_webhook_deploy_supersedes_nothing_the_worker_decides(client, hooked):
    deliver(client, "hello", push(SHA))
    deliver(client, "hello", push("9" * 40))
    assert list(Deployment.objects.values_list("status", flat=True)) == ["queued", "queued"]


# --- The delivery log and Replay --------------------------------------------------------------


def test_viewers_see_the_delivery_log_paginated_and_strangers_do_not(client, cast, hooked):
    for n in range(26):
        deliver(client, "hello", push(SHA, branch=f"feature-{n}"))
    deployment = deliver(client, "hello", push(SHA)).json()["deployment"]
    client.force_login(cast["charlie"])
    page = client.get(reverse("portal-deliveries", args=["hello"]))
    assert page.status_code == 200 and page.content.count(b'id="delivery-') == 25
    assert f'href="/deployments/{deployment}/"'.encode() in page.content and b'data-status="queued"' in page.content
    assert b"a push to feature-25; main deploys" in page.content and TOKEN.encode() not in page.content
    assert b"Replay</button>" not in page.content  # a viewer cannot replay
    client.force_login(cast["dave"])
    assert client.get(reverse("portal-deliveries", args=["hello"])).status_code == 404


def test_replay_is_a_new_explicit_request_by_the_clicking_deployer(client, cast, hooked):
    update_function(hooked, paused_reason="rolled back")
    deliver(client, "hello", push(SHA), key="key-1")
    original = only_delivery()
    client.force_login(cast["bob"])
    url = reverse("portal-delivery-replay", args=["hello", original.pk])
    for _ in range(2):  # not deduplicated
        assert client.post(url).status_code == 302
    deployments = Deployment.objects.order_by("pk")
    assert [(d.trigger, d.requested_by, d.commit_sha) for d in deployments] == [("ui", cast["bob"], SHA)] * 2
    replays = WebhookDelivery.objects.filter(replay_of=original)
    assert {r.replayed_by for r in replays} == {cast["bob"]} and replays.count() == 2
    assert AuditEvent.objects.filter(action="webhook.replayed", actor=cast["bob"]).count() == 2


@pytest.mark.parametrize("name, status", [("charlie", 403), ("dave", 404)])
def test_replay_needs_a_deployer(client, cast, hooked, name, status):
    deliver(client, "hello", push(SHA))
    client.force_login(cast[name])
    assert client.post(reverse("portal-delivery-replay", args=["hello", only_delivery().pk])).status_code == status
    assert Deployment.objects.count() == 1


def test_a_rejected_delivery_cannot_be_replayed(client, cast, hooked):
    deliver(client, "hello", push(SHA), token="guess")
    client.force_login(cast["bob"])
    client.post(reverse("portal-delivery-replay", args=["hello", only_delivery().pk]))
    assert not Deployment.objects.exists()


# --- The owner's buttons -----------------------------------------------------------------------


def test_the_owner_generates_a_secret_token_shown_once_that_gitlab_then_uses(client, cast, function):
    client.force_login(cast["alice"])
    response = client.post(reverse("portal-webhook-secret-token", args=["hello"]), {"action": "generate"})
    token = response.context["token"]
    assert response.status_code == 200 and token.encode() in response.content
    assert response["Cache-Control"] == "no-store"
    assert token.encode() not in client.get(reverse("portal-function", args=["hello"])).content
    assert deliver(client, "hello", push(SHA), token=token).status_code == 200
    assert token not in json.dumps(list(AuditEvent.objects.values_list("detail", flat=True)))
    assert AuditEvent.objects.filter(action="function.webhook_secret_created", actor=cast["alice"]).exists()


def test_rotating_the_secret_token_refuses_the_old_one(client, cast, hooked):
    client.force_login(cast["alice"])
    new = client.post(reverse("portal-webhook-secret-token", args=["hello"]), {"action": "generate"}).context["token"]
    assert deliver(client, "hello", push(SHA), token=TOKEN).status_code == 401
    assert deliver(client, "hello", push(SHA), token=new).status_code == 200
    assert AuditEvent.objects.filter(action="function.webhook_secret_rotated").exists()


def test_the_owner_generates_a_signing_token_and_signed_deliveries_get_in(client, cast, function):
    client.force_login(cast["alice"])
    response = client.post(reverse("portal-webhook-signing-token", args=["hello"]), {"action": "generate"})
    signing = response.context["token"]
    assert signing.startswith("whsec_") and signing.encode() in response.content
    assert _signed_delivery(client, signing=signing).status_code == 200
    assert signing not in json.dumps(list(AuditEvent.objects.values_list("detail", flat=True)))


def test_removing_the_last_token_makes_the_function_refuse_deliveries(client, cast, hooked):
    client.force_login(cast["alice"])
    client.post(reverse("portal-webhook-secret-token", args=["hello"]), {"action": "remove"})
    assert deliver(client, "hello", push(SHA)).status_code == 401
    assert AuditEvent.objects.filter(action="function.webhook_secret_removed").exists()


@pytest.mark.parametrize("name, status", [("bob", 403), ("charlie", 403), ("dave", 404)])
def test_only_owners_manage_webhook_tokens(client, cast, function, name, status):
    client.force_login(cast[name])
    response = client.post(reverse("portal-webhook-secret-token", args=["hello"]), {"action": "generate"})
    assert response.status_code == status
    assert HookKeys.objects.get(function=function).webhook_secret_hash == ""


def test_the_function_page_shows_owners_the_hook_url_and_token_state(client, cast, hooked):
    client.force_login(cast["alice"])
    page = client.get(reverse("portal-function", args=["hello"])).content.decode()
    assert "http://testserver/hooks/gitlab/hello" in page and "Rotate" in page
    client.force_login(cast["charlie"])
    page = client.get(reverse("portal-function", args=["hello"])).content.decode()
    assert "Deliveries" in page and "Rotate" not in page


def test_a_signing_token_needs_a_fernet_key(client, cast, function, settings):
    settings.SLIPWAY_FERNET_KEYS = []
    client.force_login(cast["alice"])
    response = client.post(reverse("portal-webhook-signing-token", args=["hello"]), {"action": "generate"},
                           follow=True)
    assert b"SLIPWAY_FERNET_KEY is not set" in response.content
    assert HookKeys.objects.get(function=function).webhook_signing_key == ""



def test_a_pause_that_lands_while_a_push_is_processed_wins(client, hooked):
    real, seen = gitlab.decide, []

    def decide(function, *args, **kwargs):
        seen.append(function.first_environment.paused_reason)
        decision = real(function, *args, **kwargs)
        if len(seen) == 1:  # a rollback pauses auto-deploy right after the first look
            update_function(hooked, paused_reason="rolled back to version 2 by bob")
        return decision

    with mock.patch("portal.views.webhooks.gitlab.decide", side_effect=decide):
        answer = deliver(client, "hello", push(SHA), key="key-1").json()
    assert seen == ["", "rolled back to version 2 by bob"]
    assert answer["outcome"] == "paused" and not Deployment.objects.exists()
    update_function(hooked, paused_reason="")
    assert deliver(client, "hello", push(SHA), key="key-1").json()["outcome"] == "accepted"  # the key is free


def test_the_owner_sets_a_tag_pattern_on_the_edit_form_and_a_bad_one_is_refused(client, cast, function):
    from tests.test_views import _form

    update_function(function, lambda_name="slipway-hello", ecr_repository="slipway/hello")
    client.force_login(cast["alice"])
    url = reverse("portal-function-edit", args=["hello"])
    data = _form(name="hello", lambda_name="slipway-hello", ecr_repository="slipway/hello")
    assert client.post(url, {**data, "tag_pattern": "v 1;rm"}).status_code == 400
    assert client.post(url, {**data, "tag_pattern": "v[0-9]*"}).status_code == 302
    assert Function.objects.get(pk=function.pk).tag_pattern == "v[0-9]*"
    assert AuditEvent.objects.get(action="function.edited").detail["tag_pattern"] == "v[0-9]*"


# --- Fast --------------------------------------------------------------------------------


@pytest.mark.postgres
def test_an_accepted_delivery_is_one_transaction_and_sends_its_task_with_the_stored_id(
        client, hooked, sent, django_assert_max_num_queries, django_capture_on_commit_callbacks):
    # The function lookup and its first environment's pause, then BEGIN, the key's savepoint,
    # the delivery, the function's lock, its environments' lock (read with it), the
    # deployment, the queue check, its sent stamp, the audit row, the delivery's link, COMMIT.
    with django_capture_on_commit_callbacks(execute=True), django_assert_max_num_queries(15):
        response = deliver(client, "hello", push(SHA))
    deployment = Deployment.objects.get()
    assert response.json()["deployment"] == deployment.pk and deployment.enqueued_at is not None
    assert sent.call_args.kwargs == {"args": [deployment.pk], "task_id": deployment.task_id}
