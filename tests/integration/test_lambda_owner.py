"""Taking over a Lambda, on the local plane with a real worker: what Slipway creates
carries its function's tag, and a Lambda someone else made under the allowed name
prefix, with a role Slipway may not pass, is refused before its code changes."""

import contextlib

import pytest

from deploy import aws, lambdas
from deploy.errors import LAMBDA_NOT_OWNED
from portal.deployments.requesting import request_deploy
from portal.models import Deployment
from tests.conftest import update_function
from tests.integration.conftest import wait_done

pytestmark = pytest.mark.integration
Status = Deployment.Status
FOREIGN_ROLE = "arn:aws:iam::111111111111:role/made-by-terraform"


def tags(arn: str) -> dict:
    return aws.client("lambda").list_tags(Resource=arn).get("Tags") or {}


@pytest.fixture
def foreign_name(fixture_function, unique):
    name = f"slipway-test-foreign-{unique}"
    yield name
    with contextlib.suppress(Exception):
        aws.client("lambda").delete_function(FunctionName=name)


def test_slipway_tags_what_it_creates_and_refuses_a_lambda_made_outside_it_with_a_role_not_allowed(
        worker, fixture_function, repo, foreign_name):
    repo.release("one")
    first = wait_done(request_deploy(fixture_function, trigger="cli"))
    assert first.status == Status.SUCCEEDED, first.error_message
    arn = lambdas.get_configuration(fixture_function.first_environment.lambda_name)["FunctionArn"]
    assert tags(arn) == {"slipway:function": fixture_function.name}

    # Another team's Lambda under the allowed prefix (made with Terraform, say), from the same image.
    image = lambdas.version_image(fixture_function.first_environment.lambda_name, first.version)
    assert image.endswith(first.build.digest)
    lambdas.create(lambdas.Settings(name=foreign_name, architecture="x86_64", memory_mb=512, timeout_s=30,
                                    environment={"OWNER": "payments"}, role_arn=FOREIGN_ROLE), image, "terraform")
    foreign_arn = lambdas.get_configuration(foreign_name)["FunctionArn"]
    update_function(fixture_function, lambda_name=foreign_name)  # registered onto it
    fixture_function.refresh_from_db()

    refused = wait_done(request_deploy(fixture_function, trigger="cli"))
    assert (refused.status, refused.error_code) == (Status.FAILED, LAMBDA_NOT_OWNED), refused.error_message
    assert FOREIGN_ROLE in refused.error_message and "was not created by Slipway" in refused.error_message
    config = lambdas.get_configuration(foreign_name)
    assert (config["Role"], config["MemorySize"], config["Environment"]["Variables"]) == (
        FOREIGN_ROLE, 512, {"OWNER": "payments"})
    assert [v["Version"] for v in lambdas.list_versions(foreign_name)] == ["$LATEST"]
    assert tags(foreign_arn) == {}
