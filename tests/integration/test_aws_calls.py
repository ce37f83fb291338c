"""Every AWS operation Slipway's processes called in this test session is allowed by
that process's IAM policy in infra/terraform.

deploy/testing.py records each call (SLIPWAY_AWS_CALLS_FILE, set by tests/conftest.py)
with the process that made it: the test workers say "worker", calls made inside a
Django request (the test client, live_server) are "web". This test runs after
every other collected test, so in a full run it checks what the whole suite
called; run alone, it still makes the worker roll back and the web process
invoke through the console first, so there is always something to check."""

import io
from unittest import mock

import pytest
from django.urls import reverse
from kombu.exceptions import OperationalError
from PIL import Image

from portal.deployments.requesting import request_rollback
from portal.models import Deployment, DeploymentStep, Membership
from tests import terraform as tf
from tests.conftest import aws_calls_file
from tests.integration.conftest import wait_done

pytestmark = [pytest.mark.integration, pytest.mark.after_everything]


def png() -> io.BytesIO:
    handle = io.BytesIO()
    Image.new("RGB", (32, 24), "white").save(handle, "PNG")
    handle.seek(0)
    handle.name = "white.png"
    return handle


def test_every_aws_operation_each_process_called_is_allowed_by_its_policy(
        worker, released_function, released_plane, client, django_user_model):
    # The session's Lambda was made by the deploy/ calls the pipeline makes: recorded here as
    # Slipway's own creation from before it tagged what it creates, the rollback tags it.
    first = released_function.deployments.order_by("pk").first()
    DeploymentStep.objects.create(deployment=first, name="update", position=1, status="succeeded",
                                  output=f"creating {released_function.first_environment.lambda_name} from "
                                         f"{first.build.image_uri}")
    rollback = wait_done(request_rollback(released_function, trigger="cli", to=released_plane.releases[0]["version"]))
    assert rollback.status == Deployment.Status.SUCCEEDED, rollback.error_message
    user = django_user_model.objects.create_user("olga", "olga@example.org", "olga-password-1")
    Membership.objects.create(function=released_function, user=user, role=Membership.Role.DEPLOYER)
    client.force_login(user)
    response = client.post(reverse("portal-console", args=[released_function.name]),
                           {"image": png(), "target": "live", "detector": "face"})
    assert response.status_code in (200, 302), response.content.decode()[-2000:]
    # The queue does not take the rollback back to version 2: the web process runs it itself.
    two = released_function.deployments.get(version=released_plane.releases[1]["version"], kind="deploy")
    with mock.patch("portal.core.sending.app.send_task", autospec=True, side_effect=OperationalError("down")):
        response = client.post(reverse("portal-function-rollback", args=[released_function.name, two.pk]))
    assert response.status_code == 302, response.content.decode()[-2000:]
    back = released_function.deployments.filter(kind="rollback").latest("pk")
    assert (back.status, back.task_id.startswith("without-queue")) == (Deployment.Status.SUCCEEDED, True)

    recorded = tf.recorded_calls(aws_calls_file())

    assert {"lambda:GetAlias", "lambda:UpdateAlias", "ecr:DescribeImages", "lambda:ListTags",
            "lambda:TagResource"} <= recorded.get("worker", set())
    assert "lambda:Invoke" in recorded.get("web", set())
    assert {"lambda:GetAlias", "lambda:UpdateAlias", "ecr:DescribeImages", "lambda:GetFunctionConfiguration",
            "lambda:ListTags"} <= recorded.get("web", set())  # the rollback without the queue
    for role in ("worker", "web"):
        assert tf.not_allowed(role, recorded[role]) == [], f"{role} called operations its policy does not allow"


def test_the_policy_check_catches_an_operation_a_role_may_not_call():
    # The check above can fail: the web role may not publish, the worker may not delete a repository.
    assert tf.not_allowed("web", {"lambda:PublishVersion", "lambda:Invoke"}) == ["lambda:PublishVersion"]
    assert tf.not_allowed("worker", {"ecr:DeleteRepository", "ecr:PutImage"}) == ["ecr:DeleteRepository"]
