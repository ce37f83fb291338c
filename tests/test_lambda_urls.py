"""A preview's function URL on its alias, at the boto3 seam (deploy.aws.client is the only
thing patched): AWS_IAM by default, NONE with the two statements Lambda requires since
October 2025, and a clean-up in a fixed order that tolerates only ResourceNotFoundException."""

import json
from unittest import mock

import pytest
from botocore.exceptions import ClientError

from deploy import lambdas
from deploy.errors import AppError, UserError

URL = "https://abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws/"


def _error(code: str, operation: str = "X") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"test {code}"}}, operation)


def _policy(*sids: str) -> dict:
    return {"Policy": json.dumps({"Statement": [{"Sid": sid} for sid in sids]})}


@pytest.fixture
def lam():
    with mock.patch("deploy.aws.client", autospec=True) as client, \
            mock.patch("deploy.aws.time.sleep", autospec=True):
        yield client.return_value


def test_an_iam_url_is_created_on_the_alias_with_no_public_statement(lam):
    lam.get_function_url_config.side_effect = _error("ResourceNotFoundException")
    lam.create_function_url_config.return_value = {"FunctionUrl": URL, "AuthType": "AWS_IAM"}
    lam.get_policy.side_effect = _error("ResourceNotFoundException")
    assert lambdas.ensure_url("fx-preview", "mr-7", "AWS_IAM") == URL
    assert lam.create_function_url_config.call_args.kwargs == {"FunctionName": "fx-preview", "Qualifier": "mr-7",
                                                               "AuthType": "AWS_IAM"}
    lam.add_permission.assert_not_called()
    lam.remove_permission.assert_not_called()


def test_a_public_url_gets_both_statements_on_the_alias(lam):
    lam.get_function_url_config.side_effect = _error("ResourceNotFoundException")
    lam.create_function_url_config.return_value = {"FunctionUrl": URL, "AuthType": "NONE"}
    lam.get_policy.side_effect = _error("ResourceNotFoundException")
    lambdas.ensure_url("fx-preview", "mr-7", "NONE")
    assert [c.kwargs for c in lam.add_permission.call_args_list] == [
        {"FunctionName": "fx-preview", "Qualifier": "mr-7", "StatementId": "slipway-mr-7-url",
         "Action": "lambda:InvokeFunctionUrl", "Principal": "*", "FunctionUrlAuthType": "NONE"},
        {"FunctionName": "fx-preview", "Qualifier": "mr-7", "StatementId": "slipway-mr-7-invoke",
         "Action": "lambda:InvokeFunction", "Principal": "*", "InvokedViaFunctionUrl": True}]


def test_a_second_run_adds_only_the_missing_statement(lam):
    lam.get_function_url_config.return_value = {"FunctionUrl": URL, "AuthType": "NONE"}
    lam.get_policy.return_value = _policy("slipway-mr-7-url", "someone-else")
    lambdas.ensure_url("fx-preview", "mr-7", "NONE")
    lam.create_function_url_config.assert_not_called()
    assert [c.kwargs["StatementId"] for c in lam.add_permission.call_args_list] == ["slipway-mr-7-invoke"]


def test_a_url_made_private_loses_its_public_statements(lam):
    lam.get_function_url_config.return_value = {"FunctionUrl": URL, "AuthType": "NONE"}
    lam.update_function_url_config.return_value = {"FunctionUrl": URL, "AuthType": "AWS_IAM"}
    lam.get_policy.return_value = _policy("slipway-mr-7-url", "slipway-mr-7-invoke", "someone-else")
    lambdas.ensure_url("fx-preview", "mr-7", "AWS_IAM")
    assert lam.update_function_url_config.call_args.kwargs["AuthType"] == "AWS_IAM"
    assert sorted(c.kwargs["StatementId"] for c in lam.remove_permission.call_args_list) == [
        "slipway-mr-7-invoke", "slipway-mr-7-url"]
    assert {c.kwargs["Qualifier"] for c in lam.remove_permission.call_args_list} == {"mr-7"}


def test_an_unknown_auth_type_is_refused_before_any_call(lam):
    with pytest.raises(UserError) as refused:
        lambdas.ensure_url("fx-preview", "mr-7", "none")
    assert refused.value.code == "bad-url-auth"
    assert lam.method_calls == []


def test_clean_up_runs_url_then_each_statement_then_alias_all_on_the_alias(lam):
    lam.delete_function_url_config.return_value = {}
    lam.remove_permission.side_effect = [{}, _error("ResourceNotFoundException")]
    lam.delete_alias.return_value = {}
    assert lambdas.remove_alias("fx-preview", "mr-7") == ["url", "slipway-mr-7-url", "alias"]
    assert [(name, kwargs) for name, _, kwargs in lam.method_calls] == [
        ("delete_function_url_config", {"FunctionName": "fx-preview", "Qualifier": "mr-7"}),
        ("remove_permission", {"FunctionName": "fx-preview", "Qualifier": "mr-7", "StatementId": "slipway-mr-7-url"}),
        ("remove_permission", {"FunctionName": "fx-preview", "Qualifier": "mr-7",
                               "StatementId": "slipway-mr-7-invoke"}),
        ("delete_alias", {"FunctionName": "fx-preview", "Name": "mr-7"})]


def test_clean_up_of_what_is_gone_already_is_a_no_op(lam):
    for call in (lam.delete_function_url_config, lam.remove_permission, lam.delete_alias):
        call.side_effect = _error("ResourceNotFoundException")
    assert lambdas.remove_alias("fx-preview", "mr-7") == []
    assert lam.delete_alias.call_count == 1


@pytest.mark.parametrize("code", ["AccessDeniedException", "InvalidParameterValueException"])
def test_clean_up_tolerates_nothing_but_not_found(lam, code):
    lam.delete_function_url_config.return_value = {}
    lam.remove_permission.side_effect = _error(code)
    with pytest.raises(UserError) as failed:
        lambdas.remove_alias("fx-preview", "mr-7")
    assert failed.value.code == f"lambda-{code}"
    lam.delete_alias.assert_not_called()  # the alias outlives a statement that could not be removed


def test_a_throttled_clean_up_is_retried_then_fails_as_ours(lam):
    lam.delete_function_url_config.side_effect = _error("TooManyRequestsException")
    with pytest.raises(AppError) as failed:
        lambdas.remove_alias("fx-preview", "mr-7")
    assert failed.value.code == "lambda-TooManyRequestsException"
    assert lam.delete_function_url_config.call_count > 1


def test_the_url_id_is_the_first_label_of_its_host():
    assert lambdas.url_id(URL) == "abcdefghijklmnopqrstuvwxyz012345"


def test_urls_are_listed_across_pages(lam):
    lam.list_function_url_configs.side_effect = [{"FunctionUrlConfigs": [{"FunctionUrl": "a"}], "NextMarker": "m"},
                                                 {"FunctionUrlConfigs": [{"FunctionUrl": "b"}]}]
    assert [c["FunctionUrl"] for c in lambdas.list_urls("fx-preview")] == ["a", "b"]
    assert lam.list_function_url_configs.call_args.kwargs == {"FunctionName": "fx-preview", "Marker": "m"}
