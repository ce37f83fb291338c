"""The health page against real components that the tests start and stop."""

import sys

import pytest

from deploy import aws
from tests.conftest import Private, free_port, stack_env, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def plane_settings(settings, monkeypatch, private_plane):
    """Point the portal at the private plane (boto3 reads the variable itself)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", private_plane.url)
    settings.AWS_ENDPOINT_URL = private_plane.url
    aws.reset()
    yield private_plane
    aws.reset()


def _checks(client):
    return client.get("/healthz").json()["checks"]


def test_it_reports_a_stopped_aws_plane_with_its_address(client, db, plane_settings):
    before = _checks(client)["aws"]
    assert before["ok"] is True and plane_settings.url in before["message"]
    plane_settings.stop()
    response = client.get("/healthz")
    aws_check = response.json()["checks"]["aws"]
    assert response.status_code == 503
    assert aws_check["ok"] is False
    assert f"Lambda API at {plane_settings.url} not answering" in aws_check["message"]


def test_it_reports_a_stopped_redis(client, db, settings, tmp_path):
    port = free_port()
    redis = Private(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                     "--dir", str(tmp_path)])
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for(lambda: _checks(client)["redis"]["ok"], 10, "the private Redis to answer")
    finally:
        redis.stop()
    check = _checks(client)["redis"]
    assert check["ok"] is False
    assert f"cannot reach Redis at redis://127.0.0.1:{port}" in check["message"]


def _worker(queues: str, log):
    node = f"slipway-pytest-{free_port()}@localhost"
    worker = Private([sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queues, "-c", "1",
                      "-n", node, "--without-mingle", "--without-gossip"], log=log)
    return node, worker


def test_it_sees_the_deploys_and_rollbacks_workers_come_and_go(client, db, tmp_path):
    stack_env("REDIS_URL")
    (deploys, one), (rollbacks, other) = _worker("deploys", tmp_path / "d.log"), _worker("rollbacks",
                                                                                       tmp_path / "r.log")
    # Other tests' session worker may answer too: this test is about its own two.
    try:
        check = wait_for(lambda: (c := _checks(client)["worker"])["ok"] and deploys in c["message"]
                         and rollbacks in c["message"] and c, 60, "both workers to answer ping")
        assert check["ok"] is True
    finally:
        one.stop()
        other.stop()
    gone = wait_for(lambda: (c := _checks(client)["worker"]) and deploys not in c["message"]
                    and rollbacks not in c["message"] and c, 30, "both workers to stop answering")
    assert not gone["ok"] or "answering" in gone["message"]  # down, or only other tests' workers left


def test_it_reports_rollbacks_that_share_a_worker_with_deploys(client, db, tmp_path):
    stack_env("REDIS_URL")
    node, worker = _worker("deploys,rollbacks", tmp_path / "worker.log")
    try:
        check = wait_for(lambda: (c := _checks(client)["worker"])["message"].startswith("rollbacks share") and c,
                         60, "the worker to answer")
    finally:
        worker.stop()
    assert check["ok"] is False
    assert node in check["message"] and "celery -A workers worker -Q rollbacks -c 1" in check["message"]


def test_it_reports_a_queue_that_no_worker_consumes(client, db, tmp_path):
    stack_env("REDIS_URL")
    node, worker = _worker("deploys", tmp_path / "worker.log")
    try:
        check = wait_for(lambda: (c := _checks(client)["worker"])["message"].startswith("no worker consumes") and c,
                         60, "the worker to answer")
    finally:
        worker.stop()
    assert check["ok"] is False
    assert "no worker consumes the rollbacks queue" in check["message"]


def test_the_human_page_needs_a_login_and_names_the_part_that_is_down(client, cast, plane_settings):
    assert client.get("/health/").status_code == 302
    plane_settings.stop()
    client.force_login(cast["charlie"])
    response = client.get("/health/")
    assert response.status_code == 503
    row = response.content.decode().split('id="check-aws"')[1].split("</tr>")[0]
    assert "down" in row and plane_settings.url in row


def test_the_shared_stack_is_healthy_apart_from_the_worker(client, db):
    """Every part `make test` starts answers (no worker runs in the test stack)."""
    checks = _checks(client)
    down = {name: c["message"] for name, c in checks.items() if not c["ok"] and name != "worker"}
    assert down == {}


def test_a_missing_feedback_worker_is_noted_but_deploys_stay_healthy(client, db, tmp_path):
    stack_env("REDIS_URL")
    (_, deploys), (_, rollbacks) = _worker("deploys", tmp_path / "d.log"), _worker("rollbacks", tmp_path / "r.log")
    try:
        noted = wait_for(lambda: (c := _checks(client)["worker"])["ok"] and "feedback queue" in c["message"] and c,
                         60, "the workers to answer without a feedback worker")
        assert "celery -A workers worker -Q feedback" in noted["message"]
        node, feedback = _worker("feedback", tmp_path / "f.log")
        try:
            served = wait_for(lambda: (c := _checks(client)["worker"])["ok"] and node in c["message"] and c,
                              60, "the feedback worker to answer")
            assert "feedback queue" not in served["message"]
        finally:
            feedback.stop()
    finally:
        deploys.stop()
        rollbacks.stop()
