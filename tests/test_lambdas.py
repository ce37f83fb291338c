"""Lambda calls wait out "update in progress" a bounded number of times; the
boto3 seam (deploy.aws.client) is the only thing patched."""

from unittest import mock

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from deploy import lambdas
from deploy.errors import AppError, UserError


def _error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"test {code}"}}, "UpdateFunctionCode")


@pytest.fixture
def sleeps():
    with mock.patch("deploy.lambdas.time.sleep", autospec=True) as sleep:
        yield sleep


@pytest.fixture
def lam():
    with mock.patch("deploy.aws.client", autospec=True) as client:
        yield client.return_value


def test_it_retries_a_conflict_and_returns_the_answer(sleeps):
    fn = mock.Mock(side_effect=[_error("ResourceConflictException")] * 2 + [{"Version": "3"}])
    assert lambdas.call("publishing", fn, FunctionName="f") == {"Version": "3"}
    assert fn.call_count == 3
    assert [c.args[0] for c in sleeps.call_args_list] == [0.5, 1.0]


def test_it_gives_up_after_a_bounded_number_of_conflicts(sleeps):
    fn = mock.Mock(side_effect=_error("ResourceConflictException"))
    with pytest.raises(AppError, match="still reports an update in progress") as gave_up:
        lambdas.call("updating", fn, FunctionName="f")
    assert gave_up.value.code == "update-conflict"
    assert fn.call_count == lambdas.CONFLICT_ATTEMPTS
    assert sleeps.call_count == lambdas.CONFLICT_ATTEMPTS - 1
    assert max(c.args[0] for c in sleeps.call_args_list) <= 8


def test_it_does_not_retry_what_lambda_refuses(sleeps):
    fn = mock.Mock(side_effect=_error("InvalidParameterValueException"))
    with pytest.raises(UserError) as refused:
        lambdas.call("updating", fn, FunctionName="f")
    assert refused.value.code == "lambda-InvalidParameterValueException"
    assert fn.call_count == 1 and sleeps.call_count == 0


def test_an_unreachable_plane_is_an_app_error_at_once(sleeps):
    fn = mock.Mock(side_effect=EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    with pytest.raises(AppError) as failed:
        lambdas.call("updating", fn, FunctionName="f")
    assert failed.value.code == "aws-unreachable"
    assert fn.call_count == 1 and sleeps.call_count == 0


def test_update_code_retries_a_conflict_with_the_revision_read_just_before(lam, sleeps):
    lam.get_function_configuration.side_effect = [{"RevisionId": "rev-1"}, {"RevisionId": "rev-2"}]
    lam.update_function_code.side_effect = [_error("ResourceConflictException"), {"RevisionId": "rev-3"}]
    settings = lambdas.Settings(name="fx", architecture="arm64", memory_mb=256, timeout_s=30, environment={},
                                role_arn="")
    image = "127.0.0.1:4599/fx@sha256:" + "a" * 64
    assert lambdas.update_code(settings, image) == {"RevisionId": "rev-3"}
    assert [c.kwargs for c in lam.update_function_code.call_args_list] == [
        {"FunctionName": "fx", "ImageUri": image, "Architectures": ["arm64"], "RevisionId": revision}
        for revision in ("rev-1", "rev-2")]
