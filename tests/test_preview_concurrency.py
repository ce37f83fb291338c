"""A close that arrives while an update holds the preview's lock, over real HTTP to a live
server: the close waits for the update's transaction, then closes the preview and stops
the deployment the update queued. Marked `postgres`: there the row locks are real."""

from __future__ import annotations

import json
import threading

import pytest

from portal.models import Deployment, Preview
from tests.conftest import wait_for
from tests.gitlab_hooks import headers, hook
from tests.previews import MR_EVENT, merge_request, previews_on
from tests.test_webhook_concurrency import post

pytestmark = pytest.mark.postgres


def test_a_close_during_an_update_waits_for_its_lock_then_stops_what_it_queued(
        live_server, transactional_db, function, settings, sent, tmp_path, monkeypatch):
    settings.SLIPWAY_ALLOWED_LAMBDA_PREFIXES = ["team-"]
    hook(function)
    previews_on(function)
    held, release, faults = tmp_path / "held", tmp_path / "release", tmp_path / "faults.json"
    faults.write_text(json.dumps([{"operation": "preview-locked", "pause": True, "function": "hello",
                                   "held": str(held), "release": str(release)}]))
    monkeypatch.setenv("SLIPWAY_FAULTS_FILE", str(faults))
    url, results = f"{live_server.url}/hooks/gitlab/hello", {}

    def deliver(name: str, body: dict) -> None:
        results[name] = post(url, json.dumps(body).encode(), headers(event=MR_EVENT))

    update = threading.Thread(target=deliver, args=("update", merge_request("merge_request_update.json")))
    update.start()
    wait_for(held.exists, 30, "the update to hold the preview's lock")
    close = threading.Thread(target=deliver, args=("close", merge_request("merge_request_close.json")))
    close.start()
    close.join(0.5)
    assert close.is_alive() and "close" not in results  # it waits for the lock the update holds
    release.write_text("go")
    update.join(30)
    close.join(30)
    (status_u, answer_u, _, done_u), (status_c, answer_c, started_c, done_c) = results["update"], results["close"]
    assert (status_u, answer_u["outcome"], status_c, answer_c["outcome"]) == (200, "accepted", 200, "accepted")
    assert started_c < done_u < done_c  # the interleaving this is about: the close was in flight, and ended last
    preview = Preview.objects.get()
    assert (preview.state, preview.removed_reason) == ("closed", "merge request closed")
    assert Deployment.objects.get(pk=answer_u["deployment"]).status == Deployment.Status.CANCELLED
