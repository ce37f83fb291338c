"""The one AWS seam: one error mapper, one retry layer, a stated bound on attempts.

Attempts are counted where botocore sends HTTP requests (its before-send
hook), so botocore's own retries would be counted too."""

from unittest import mock

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

from deploy import aws, lambdas
from deploy.errors import AppError, UserError


@pytest.fixture
def no_sleep():
    with mock.patch("deploy.aws.time.sleep", autospec=True) as sleep:
        yield sleep


@pytest.fixture
def plane(monkeypatch):
    """Real boto3 clients whose every HTTP request is answered by `answer` and counted per operation."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    aws.reset()
    sent: list[str] = []
    state = {"status": 503, "code": "ServiceException", "succeeds": ()}

    def answer(request, event_name, **_):
        operation = event_name.rsplit(".", 1)[-1]
        sent.append(operation)
        if operation in state["succeeds"]:
            status, headers, body = 200, {}, b'{"RevisionId": "rev-1"}'
        else:
            status, headers = state["status"], {"x-amzn-ErrorType": state["code"]}
            body = f'{{"__type": "{state["code"]}", "message": "test"}}'.encode()
        raw = mock.Mock(stream=mock.Mock(return_value=iter([body])), read=mock.Mock(return_value=body))
        return AWSResponse(request.url, status, headers, raw)

    aws.client("lambda").meta.events.register("before-send.lambda", answer)
    yield sent, state
    aws.reset()


def test_a_persistently_failing_call_is_sent_exactly_max_attempts_times(plane, no_sleep):
    sent, _ = plane
    with pytest.raises(AppError) as failed:
        lambdas.publish("fx", "d", after={"Code": {"ImageUri": "r@sha256:1"}}, image_uri="r@sha256:1")
    assert sent.count("PublishVersion") == aws.MAX_ATTEMPTS == 5
    assert failed.value.code == "lambda-ServiceException" and "after 5 attempts" in failed.value.message
    assert no_sleep.call_count == aws.MAX_ATTEMPTS - 1


def test_an_update_in_progress_is_retried_in_the_same_bounded_layer(plane, no_sleep):
    sent, state = plane
    state.update(status=409, code="ResourceConflictException", succeeds=("GetFunctionConfiguration",))
    settings = lambdas.Settings(name="fx", architecture="arm64", memory_mb=256, timeout_s=30, environment={},
                                role_arn="")
    with pytest.raises(AppError, match="after 5 attempts") as gave_up:
        lambdas.update_code(settings, "127.0.0.1:1/fx@sha256:" + "a" * 64)
    assert gave_up.value.code == "lambda-ResourceConflictException"
    assert sent.count("UpdateFunctionCode") == aws.MAX_ATTEMPTS  # not 6 x 4 x botocore's, as before
    assert sent.count("GetFunctionConfiguration") == aws.MAX_ATTEMPTS  # a fresh RevisionId for each attempt


def test_what_lambda_refuses_is_sent_once_and_is_the_users_fault(plane, no_sleep):
    sent, state = plane
    state.update(status=400, code="InvalidParameterValueException")
    with pytest.raises(UserError) as refused:
        lambdas.invoke("fx", "1", {})
    assert sent == ["Invoke"] and no_sleep.call_count == 0
    assert refused.value.code == "lambda-InvalidParameterValueException"


def _error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"test {code}"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "PublishVersion")


@pytest.mark.parametrize("code, status, family, retryable", [
    ("ThrottlingException", 429, AppError, True),
    ("ResourceConflictException", 409, AppError, True),
    ("SomethingNew", 500, AppError, True),
    ("SomethingNew", 400, AppError, False),
    ("AccessDeniedException", 403, UserError, False),
    ("RepositoryNotFoundException", 400, UserError, False),
])
def test_one_rule_decides_whose_fault_and_whether_to_retry(code, status, family, retryable):
    mapped = aws.error(_error(code, status), "doing", "lambda")
    assert (type(mapped), mapped.retryable, mapped.code) == (family, retryable, f"lambda-{code}")


def test_a_changed_revision_has_its_own_code_and_is_not_retried():
    mapped = aws.error(_error("PreconditionFailedException", 412), "publishing", "lambda")
    assert (mapped.code, mapped.retryable) == ("revision-mismatch", False)


def test_a_retry_waits_longer_each_time_within_the_cap():
    waits = [aws.backoff(n) for n in range(1, 8)]
    assert all(aws.BACKOFF_BASE / 2 <= w <= aws.BACKOFF_CAP for w in waits)
    assert aws.backoff(4) > aws.backoff(1)  # 2-4 s after the 4th failure vs 0.25-0.5 s after the 1st
