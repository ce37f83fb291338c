"""Urgent AWS calls (a rollback's check and alias move) fail fast against an AWS that
does not answer: the urgent class's short timeouts and few attempts, each failed attempt
told to the step's log as it happens, and no new attempt after the rollback's deadline.
The endpoint is a real socket that accepts connections and never answers (a frozen plane)."""

import socket

import pytest

from deploy import aws, budgets, lambdas
from deploy.errors import AppError


@pytest.fixture
def silent_aws(monkeypatch):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)  # the kernel completes connections; nobody ever reads them
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
        monkeypatch.setattr(budgets, "URGENT", budgets.Aws("urgent", connect=0.2, read=0.2, attempts=3))
        aws.reset()
        yield
    aws.reset()


def test_an_urgent_call_gives_up_after_the_urgent_attempts_each_reported(silent_aws):
    lines = []
    with aws.urgent(deadline=30, report=lines.append), pytest.raises(AppError) as raised:
        lambdas.version_exists("team-hello", "3")
    assert raised.value.code == "aws-unreachable"
    assert raised.value.message.endswith("(after 3 attempts)")
    assert [line.split(" failed")[0] for line in lines] == ["attempt 1 of 3", "attempt 2 of 3"]
    assert all("aws-unreachable" in line and "retrying in" in line for line in lines)


def test_no_attempt_starts_after_the_deadline(silent_aws):
    lines = []
    with aws.urgent(deadline=0.1, report=lines.append), pytest.raises(AppError) as raised:
        lambdas.version_exists("team-hello", "3")
    assert raised.value.code == "aws-unreachable" and lines == []  # one attempt; the deadline passed before a second


def test_outside_urgent_calls_keep_the_long_class(silent_aws, monkeypatch):
    monkeypatch.setattr(aws, "backoff", lambda attempt: 0)
    monkeypatch.setattr(budgets, "LONG", budgets.Aws("long", connect=0.2, read=0.2, attempts=5))
    with pytest.raises(AppError) as raised:
        lambdas.version_exists("team-hello", "3")
    assert raised.value.message.endswith(f"(after {aws.MAX_ATTEMPTS} attempts)")


def test_a_rollback_against_an_unreachable_aws_fails_fast_showing_each_attempt(silent_aws, transactional_db,
                                                                                 function, sent):
    from portal.deployments import queue, requesting
    from portal.deployments import rollback as rollbacks
    from portal.models import Deployment
    from tests.conftest import released

    released(function, "1", "a" * 40)
    released(function, "2", "b" * 40)
    rollback = requesting.request_rollback(function, trigger="cli", to="1")
    assert queue.claim(rollback, Deployment.Status.CHECKING, "task-1")
    rollbacks.perform(rollback)
    rollback.refresh_from_db()
    assert (rollback.status, rollback.error_code) == (Deployment.Status.FAILED, "aws-unreachable")
    assert rollback.error_message.endswith("(after 3 attempts)")
    check = rollback.steps.get(name="check")
    assert "attempt 1 of 3 failed (aws-unreachable)" in check.output
    assert "attempt 2 of 3 failed (aws-unreachable)" in check.output
