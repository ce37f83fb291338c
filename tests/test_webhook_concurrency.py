"""Ten identical deliveries at the same moment, over real HTTP to a live server:
one deployment, ten deliveries logged. Marked `postgres`: there the row locks and
the partial unique index are real (SQLite serialises whole transactions)."""

import json
import threading
import time
import urllib.error
import urllib.request
from unittest import mock

import pytest

from portal.models import Deployment, WebhookDelivery
from tests.gitlab_hooks import headers, hook, push

pytestmark = pytest.mark.postgres


def post(url: str, body: bytes, sent_headers: dict) -> tuple[int, dict, float, float]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={**sent_headers, "Content-Type": "application/json"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, answer = response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        status, answer = exc.code, json.load(exc)
    return status, answer, started, time.monotonic()


def test_ten_identical_deliveries_at_once_make_one_deployment_and_ten_log_rows(live_server, transactional_db,
                                                                              function):
    hook(function)
    body, sent_headers = json.dumps(push("c" * 40)).encode(), headers(key="the-same-key")
    url, gate, results = f"{live_server.url}/hooks/gitlab/hello", threading.Barrier(10), []

    def deliver():
        gate.wait()
        results.append(post(url, body, sent_headers))

    with mock.patch("portal.core.sending.app.send_task", autospec=True) as send_task:
        send_task.return_value.id = "task-1"
        threads = [threading.Thread(target=deliver) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert len(results) == 10 and {status for status, *_ in results} == {200}
    # The interleaving this is about: some of them were in flight at the same time.
    assert any(a[2] < b[3] and b[2] < a[3] for a, b in zip(results, results[1:], strict=False))
    outcomes = sorted(answer["outcome"] for _, answer, *_ in results)
    assert outcomes == ["accepted"] + ["duplicate"] * 9
    assert Deployment.objects.count() == 1 and WebhookDelivery.objects.count() == 10
    accepted = WebhookDelivery.objects.get(outcome="accepted")
    assert set(WebhookDelivery.objects.filter(outcome="duplicate").values_list("duplicate_of", flat=True)) == {
        accepted.pk}
    assert send_task.call_count == 1


def test_ten_identical_signed_deliveries_at_once_make_one_deployment(live_server, transactional_db, function):
    # A replay as an onlooker sends it: the signed headers as they were, no unsigned key to dedupe on.
    from portal.hooks import gitlab
    from tests.gitlab_hooks import signed

    signing = gitlab.new_signing_token()
    hook(function, token="", signing=signing)
    body = json.dumps(push("d" * 40)).encode()
    sent_headers = {"X-Gitlab-Event": "Push Hook", **signed(signing, body, "msg-1")}
    sent_headers.pop("Idempotency-Key")
    url, gate, results = f"{live_server.url}/hooks/gitlab/hello", threading.Barrier(10), []

    def deliver():
        gate.wait()
        results.append(post(url, body, sent_headers))

    with mock.patch("portal.core.sending.app.send_task", autospec=True) as send_task:
        send_task.return_value.id = "task-1"
        threads = [threading.Thread(target=deliver) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert len(results) == 10 and {status for status, *_ in results} == {200}, results
    assert any(a[2] < b[3] and b[2] < a[3] for a, b in zip(results, results[1:], strict=False))
    assert sorted(answer["outcome"] for _, answer, *_ in results) == ["accepted"] + ["duplicate"] * 9
    assert Deployment.objects.count() == 1 and send_task.call_count == 1
    accepted = WebhookDelivery.objects.get(outcome="accepted")
    assert set(WebhookDelivery.objects.filter(outcome="duplicate").values_list("duplicate_of", flat=True)) == {
        accepted.pk}
