"""Which Lambdas a function's code may go into, at the boto3 seam (deploy.aws.client
is the only thing patched): Slipway tags what it creates, and deploys to any other
Lambda only while that Lambda's role is one the platform team allows."""

from unittest import mock

import pytest
from botocore.exceptions import ClientError

from deploy.errors import LAMBDA_NOT_OWNED, UserError
from portal.deployments import steps
from portal.models import Build, Deployment, DeploymentStep
from tests.conftest import create_function, set_environment

ARN = "arn:aws:lambda:us-east-1:000000000000:function:team-hello"
ALLOWED = "arn:aws:iam::000000000000:role/slipway-fx"
FOREIGN = "arn:aws:iam::111111111111:role/made-by-terraform"
DIGEST = "sha256:" + "a" * 64


@pytest.fixture
def lam(settings):
    settings.SLIPWAY_ALLOWED_EXECUTION_ROLES = ["arn:aws:iam::000000000000:role/*"]
    with mock.patch("deploy.aws.client", autospec=True) as client:
        made = client.return_value
        made.get_function.return_value = {"Configuration": {"State": "Active", "LastUpdateStatus": "Successful"}}
        yield made


@pytest.fixture
def run(function):
    set_environment(function, execution_role_arn=ALLOWED)
    build = Build.objects.create(function=function, commit_sha="c" * 40, architecture="x86_64", inputs_digest="i",
                                 status=Build.Status.SUCCEEDED, digest=DIGEST)
    deployment = Deployment.objects.create(function=function, build=build, trigger="cli", status="pushing")
    made = steps.Run(deployment)
    made.repository_uri = "000000000000.dkr.ecr.us-east-1.amazonaws.com/team/hello"
    return made


def existing(lam, role: str, tags: dict) -> None:
    lam.get_function_configuration.return_value = {"FunctionArn": ARN, "Role": role, "MemorySize": 1024,
                                                   "Timeout": 30, "RevisionId": "rev-1"}
    lam.list_tags.return_value = {"Tags": tags}


def deploy(run) -> list[str]:
    lines = []
    steps.update_function(run, lines.append)
    return lines


def test_a_lambda_slipway_creates_is_tagged_with_its_function_by_a_call_of_its_own(lam, run):
    lam.get_function_configuration.side_effect = ClientError(
        {"Error": {"Code": "ResourceNotFoundException", "Message": "not found"}}, "GetFunctionConfiguration")
    lam.create_function.return_value = {"FunctionArn": ARN}
    deploy(run)
    assert "Tags" not in lam.create_function.call_args.kwargs
    lam.tag_resource.assert_called_once_with(Resource=ARN, Tags={"slipway:function": "hello"})


def test_it_refuses_a_lambda_it_did_not_create_whose_role_is_not_allowed(lam, run):
    existing(lam, FOREIGN, {})
    with pytest.raises(UserError) as refused:
        deploy(run)
    assert refused.value.code == LAMBDA_NOT_OWNED
    assert "was not created by Slipway" in refused.value.message and FOREIGN in refused.value.message
    lam.update_function_code.assert_not_called()
    lam.update_function_configuration.assert_not_called()
    lam.tag_resource.assert_not_called()


def test_it_refuses_a_lambda_tagged_for_another_function_whose_role_is_not_allowed(lam, run):
    existing(lam, FOREIGN, {"slipway:function": "payments"})
    with pytest.raises(UserError, match="slipway:function=payments") as refused:
        deploy(run)
    assert refused.value.code == LAMBDA_NOT_OWNED
    lam.update_function_code.assert_not_called()


def test_it_deploys_into_a_lambda_tagged_with_its_own_name_whatever_its_role(lam, run):
    existing(lam, FOREIGN, {"slipway:function": "hello"})
    deploy(run)
    assert lam.update_function_code.call_args.kwargs["FunctionName"] == "team-hello"
    lam.tag_resource.assert_not_called()


def test_a_lambda_it_did_not_create_with_an_allowed_role_is_deployed_but_not_tagged(lam, run):
    existing(lam, ALLOWED, {})
    lines = deploy(run)
    assert lam.update_function_code.call_count == 1
    lam.tag_resource.assert_not_called()  # its role is checked again on the next deploy
    assert any("allowed execution role" in line for line in lines)


def test_a_lambda_its_records_show_it_created_gets_the_tag_on_its_next_deploy(lam, run):
    earlier = Deployment.objects.create(function=run.function, trigger="cli", status="succeeded")
    DeploymentStep.objects.create(deployment=earlier, name="update", position=1, status="succeeded",
                                  output=f"creating team-hello from 127.0.0.1:4599/team/hello@{DIGEST}")
    existing(lam, FOREIGN, {})
    deploy(run)
    lam.tag_resource.assert_called_once_with(Resource=ARN, Tags={"slipway:function": "hello"})
    assert lam.update_function_code.call_count == 1


def test_a_creation_recorded_after_a_wait_for_another_deployment_counts_too(lam, run):
    earlier = Deployment.objects.create(function=run.function, trigger="cli", status="succeeded")
    DeploymentStep.objects.create(deployment=earlier, name="update", position=1, status="succeeded",
                                  output="waited 1.5 s for another deployment of hello to leave the Lambda\n"
                                         f"creating team-hello from 127.0.0.1:4599/team/hello@{DIGEST}")
    existing(lam, FOREIGN, {})
    deploy(run)
    lam.tag_resource.assert_called_once_with(Resource=ARN, Tags={"slipway:function": "hello"})


def test_another_functions_record_of_creating_it_does_not_make_it_this_ones(lam, run):
    # payments created team-hello, then moved to another Lambda; hello registered onto team-hello.
    payments = create_function(name="payments", repository_url="https://gitlab.example.com/t/p.git",
                               ecr_repository="team/payments", lambda_name="team-payments")
    theirs = Deployment.objects.create(function=payments, trigger="cli", status="succeeded")
    DeploymentStep.objects.create(deployment=theirs, name="update", position=1, status="succeeded",
                                  output=f"creating team-hello from 127.0.0.1:4599/team/payments@{DIGEST}")
    existing(lam, FOREIGN, {})
    with pytest.raises(UserError):
        deploy(run)
    lam.tag_resource.assert_not_called()


def test_ownership_is_checked_on_every_deploy_not_only_the_first(lam, run):
    existing(lam, ALLOWED, {})
    deploy(run)
    existing(lam, FOREIGN, {})  # the other team's Terraform changed the role since
    with pytest.raises(UserError) as refused:
        deploy(run)
    assert refused.value.code == LAMBDA_NOT_OWNED
    assert lam.list_tags.call_count == 2 and lam.update_function_code.call_count == 1


def test_a_version_only_rollback_checks_the_lambda_too(lam, run):
    run.deployment.target_version = "3"
    lam.describe_images.return_value = {"imageDetails": [{"imageDigest": DIGEST}]}
    lam.describe_repositories.return_value = {"repositories": [{"repositoryUri": run.repository_uri}]}
    existing(lam, FOREIGN, {})
    with pytest.raises(UserError) as refused:
        steps.check_release(run, lambda line: None)
    assert refused.value.code == LAMBDA_NOT_OWNED
    lam.update_alias.assert_not_called()
