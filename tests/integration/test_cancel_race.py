"""A cancel accepted at the last moment is never ignored: a real worker is held
(deploy/testing.py) just before the move that touches the Lambda, the cancel
lands while it waits there, and on release the move is refused in the same
UPDATE that would have made it, so the alias stays where it was."""

import json

import pytest
from django.db import connection

from deploy import lambdas
from portal.deployments.requesting import cancel, request_deploy, request_rollback
from portal.models import Deployment
from tests.conftest import wait_for
from tests.integration.conftest import wait_done

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
Status = Deployment.Status


@pytest.fixture
def hold(faults, tmp_path):
    """Hold the worker that reaches `point` for `function` until release() is called."""
    class Hold:
        held = tmp_path / "held"
        release_file = tmp_path / "release"

        def at(self, point: str, function) -> None:
            faults.write_text(json.dumps([{"operation": point, "pause": True, "function": function.name,
                                           "held": str(self.held), "release": str(self.release_file)}]))

        def wait_held(self, what: str) -> int:
            return int(wait_for(lambda: self.held.exists() and self.held.read_text(), 120, what))

        def release(self) -> None:
            self.release_file.write_text("go")

    made = Hold()
    yield made
    made.release()  # never leave a worker waiting for a test that failed
    faults.write_text("[]")


def alias_version(function) -> str | None:
    return lambdas.alias_version(function.first_environment.lambda_name, function.first_environment.alias)


def test_a_cancel_accepted_just_before_the_update_step_stops_the_deploy_and_keeps_the_alias(
        worker, fixture_function, repo, hold):
    repo.release("one")
    first = wait_done(request_deploy(fixture_function, trigger="cli"))
    assert first.status == Status.SUCCEEDED, first.error_message
    repo.release("two")
    hold.at("enter-lambda-steps", fixture_function)
    deploy = request_deploy(fixture_function, trigger="cli")
    hold.wait_held("the worker to reach the move to updating")

    deploy.refresh_from_db()
    assert deploy.status == Status.PUSHING, "the worker is not held after its push"
    assert cancel(deploy, trigger="cli"), "the cancel was refused: it did not land in time"
    assert not hold.release_file.exists() and Deployment.objects.get(pk=deploy.pk).status == Status.PUSHING
    hold.release()

    wait_done(deploy)
    assert (deploy.status, deploy.error_code) == (Status.CANCELLED, "cancelled")
    assert not deploy.steps.filter(name="update").exists()
    assert alias_version(fixture_function) == first.version
    print(f"cancel before updating on {connection.vendor}: {deploy.status}, alias at {first.version}")


def test_a_cancel_accepted_during_a_rollbacks_check_keeps_the_alias(worker, released_function, released_plane, hold):
    live = released_plane.releases[-1]["version"]
    hold.at("before-rollback-shift", released_function)
    rollback = request_rollback(released_function, trigger="cli", to=released_plane.releases[0]["version"])
    hold.wait_held("the rollback to finish its check step")

    rollback.refresh_from_db()
    assert rollback.status == Status.CHECKING, "the rollback is not held in its check step"
    assert cancel(rollback, trigger="cli"), "the cancel was refused: it did not land in time"
    assert Deployment.objects.get(pk=rollback.pk).status == Status.CHECKING
    hold.release()

    wait_done(rollback)
    assert (rollback.status, rollback.error_code) == (Status.CANCELLED, "cancelled")
    assert not rollback.steps.filter(name="shift").exists()
    assert alias_version(released_function) == live
