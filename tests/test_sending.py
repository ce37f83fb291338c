"""The web's budget for the broker (portal/core/sending.py): a request stops sending after
one publish fails, its rows stay queued, and it answers at once with a notice."""

from unittest import mock

import pytest
from kombu.exceptions import OperationalError

from portal.celery import DEPLOY_TASK
from portal.core import sending
from portal.models import ApiToken, Deployment
from tests.api_client import Api, openapi

Status = Deployment.Status


@pytest.fixture
def frozen():
    """The broker's send seam, failing as a publish to a frozen Redis does."""
    with mock.patch("portal.core.sending.app.send_task", autospec=True,
                    side_effect=OperationalError("Timeout reading from socket")) as send_task:
        yield send_task


def test_after_one_publish_fails_the_request_sends_nothing_more(frozen):
    with sending.budget(5):
        for _ in range(3):
            with pytest.raises(sending.QueueDown, match="Timeout reading from socket"):
                sending.send_task(DEPLOY_TASK, args=[1], deployment=1)
        assert sending.unsent(1)
    assert frozen.call_count == 1


def test_a_web_publish_is_not_retried(sent, settings):
    settings.SLIPWAY_WEB_SEND_RETRIES = 0
    with sending.budget(5):
        sending.send_task(DEPLOY_TASK, args=[7], task_id="t")
    sent.assert_called_once_with(DEPLOY_TASK, args=[7], task_id="t", retry=True, retry_policy={"max_retries": 0})


def test_a_spent_budget_sends_nothing(sent):
    with sending.budget(5) as spending:
        spending.spent = 5.0
        with pytest.raises(sending.QueueDown, match="budget"):
            sending.send_task(DEPLOY_TASK, args=[1])
    sent.assert_not_called()


def test_outside_a_request_each_send_stands_alone(sent):
    sending.send_task(DEPLOY_TASK, args=[1])
    sending.send_task(DEPLOY_TASK, args=[2])
    assert sent.call_count == 2


def test_a_deploy_the_queue_did_not_take_answers_202_stays_queued_and_says_so(transactional_db, client, cast,
                                                                              frozen):
    token = ApiToken.issue(cast["bob"], "bob's")[1]
    response = Api(client, openapi(client)).call("post", "/functions/{name}/deployments", {"commit": "c" * 40},
                                                 name="hello", token=token)
    assert response.status_code == 202
    body = response.json()
    assert body["notice"] == (f"the queue is not answering: deployment #{body['id']} stays queued and starts "
                              "when the queue is back")
    row = Deployment.objects.get(pk=body["id"])
    assert (row.status, row.enqueued_at) == (Status.QUEUED, None)  # the sweeper sends it (UNSENT_GRACE)


def test_a_deploy_the_queue_took_has_no_notice(transactional_db, client, cast, sent):
    token = ApiToken.issue(cast["bob"], "bob's")[1]
    response = Api(client, openapi(client)).call("post", "/functions/{name}/deployments", {"commit": "c" * 40},
                                                 name="hello", token=token)
    assert response.status_code == 202 and response.json()["notice"] == ""
    assert sent.call_count == 1


@pytest.fixture
def version_gone(monkeypatch):
    """A real Lambda client (the urgent class the web's rollback uses) whose every request
    is answered 404 ResourceNotFoundException: the version to put back was deleted."""
    from botocore.awsrequest import AWSResponse

    from deploy import aws

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    aws.reset()
    asked = []

    def answer(request, event_name, **_):
        asked.append(event_name.rsplit(".", 1)[-1])
        body = b'{"__type": "ResourceNotFoundException", "message": "no such version"}'
        raw = mock.Mock(stream=mock.Mock(return_value=iter([body])), read=mock.Mock(return_value=body))
        return AWSResponse(request.url, 404, {"x-amzn-ErrorType": "ResourceNotFoundException"}, raw)

    with aws.urgent():
        aws.client("lambda").meta.events.register("before-send.lambda", answer)
    yield asked
    aws.reset()


def test_a_rollback_whose_version_is_gone_is_not_run_by_the_web_and_stays_queued(transactional_db, client, cast,
                                                                                function, frozen, version_gone):
    from tests.conftest import released

    released(function, "1", "a" * 40)
    released(function, "2", "b" * 40)
    token = ApiToken.issue(cast["bob"], "bob's")[1]
    response = Api(client, openapi(client)).call("post", "/functions/{name}/rollback", {"to": "1"}, name="hello",
                                                 token=token)
    assert response.status_code == 202
    body = response.json()
    assert (body["status"], body["steps"]) == (Status.QUEUED, [])  # update, publish, verify: the worker's
    assert "stays queued" in body["notice"]
    assert version_gone == ["GetFunctionConfiguration"]  # asked once, then left alone
