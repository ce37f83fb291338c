"""The step plan (portal/deployments/plan.py) is the one list of steps: a real run of
each kind (the pipeline, its recorder, queue and settling; only the step bodies patched,
each noting the status its row was in) writes exactly its kind's plan, each step under
the status the plan gives it, and the deployment page lists the plan's steps to come."""

from unittest import mock

import pytest

from portal.deployments import pipeline, plan, recording, steps
from portal.deployments import rollback as rollbacks
from portal.models import Build, Deployment
from portal.views.deployments import timeline

Kind, Status = Deployment.Kind, Deployment.Status
BODIES = {"source": (steps, "fetch_source"), "build": (steps, "build_image"), "push": (steps, "push_image"),
          "update": (steps, "update_function"), "wait": (steps, "wait_updated"),
          "publish": (steps, "publish_version"), "verify": (steps, "verify_version"),
          "shift": (steps, "shift_alias"), "check": (rollbacks, "check_release")}


def noting(ran: list, name: str, answer=None):
    """A step body that notes (step, the row's status while it runs) and answers `answer`."""
    def body(run, out, **_):
        ran.append((name, Deployment.objects.values_list("status", flat=True).get(pk=run.deployment.pk)))
        return answer
    return body


@pytest.fixture
def bodies():
    """Every step's body patched; what ran, in order, with the row's status meanwhile."""
    ran = []
    patches = [mock.patch.object(module, attr, autospec=True, side_effect=noting(ran, name))
               for name, (module, attr) in BODIES.items()]
    patches.append(mock.patch.object(rollbacks, "shift_alias", autospec=True, side_effect=noting(ran, "shift")))
    for patch in patches:
        patch.start()
    yield ran
    mock.patch.stopall()


def claimed(function, kind: str, first: str) -> Deployment:
    build = Build.objects.create(function=function, commit_sha="c" * 40, architecture="arm64", inputs_digest="i",
                                 status=Build.Status.SUCCEEDED, digest="sha256:" + "c" * 64)
    deployment = Deployment.objects.create(function=function, build=build, trigger="cli", kind=kind,
                                           target_version="1" if kind == Kind.ROLLBACK else "")
    return pipeline.claimed(deployment.pk, first, "task-1")


def recorded(deployment: Deployment) -> list[tuple[str, str]]:
    return list(deployment.steps.order_by("position").values_list("name", "status"))


def planned(kind: str, fallback: bool = False) -> list[tuple[str, str]]:
    return [(step.name, step.status) for step in plan.steps(kind, fallback=fallback)]


def test_a_deploy_runs_its_plan_each_step_under_its_status(transactional_db, function, sent, bodies):
    deployment = claimed(function, Kind.DEPLOY, Status.SOURCE)
    assert pipeline.deploy(deployment) == Status.SUCCEEDED
    assert bodies == planned(Kind.DEPLOY) and len(bodies) == 8
    assert recorded(deployment) == [(name, "succeeded") for name in plan.names(Kind.DEPLOY)]


def test_a_redeploy_runs_the_same_plan_with_build_and_push_skipped(transactional_db, function, sent, bodies):
    deployment = claimed(function, Kind.REDEPLOY, Status.SOURCE)
    assert pipeline.deploy(deployment) == Status.SUCCEEDED
    assert bodies == [step for step in planned(Kind.REDEPLOY) if step[0] not in ("build", "push")]
    assert recorded(deployment) == [(name, "skipped" if name in ("build", "push") else "succeeded")
                                    for name in plan.names(Kind.REDEPLOY)]


@pytest.mark.parametrize("version_exists", [True, False], ids=["alias-only", "fallback"])
def test_a_rollback_runs_its_plan_each_step_under_its_status(transactional_db, function, sent, bodies,
                                                               version_exists):
    deployment = claimed(function, Kind.ROLLBACK, Status.CHECKING)
    # True: only the alias moves; False: the version is gone and its image ships again first.
    rollbacks.check_release.side_effect = noting(bodies, "check", answer=version_exists)
    assert pipeline.rollback(deployment) == Status.SUCCEEDED
    assert bodies == planned(Kind.ROLLBACK, fallback=not version_exists)
    assert [name for name, _ in recorded(deployment)] == plan.names(Kind.ROLLBACK, fallback=not version_exists)


def test_the_recorder_refuses_a_step_its_kinds_plan_lacks(transactional_db, function):
    deployment = claimed(function, Kind.ROLLBACK, Status.CHECKING)
    with pytest.raises(plan.NotPlanned, match="a rollback runs no step 'build'"):
        with recording.Recorder(deployment).step("build"):
            pass
    with pytest.raises(plan.NotPlanned):
        recording.Recorder(deployment).skip("push", "nothing to push")
    assert deployment.steps.count() == 0


def test_the_page_lists_the_plans_steps_to_come(db, function):
    for kind in Kind.values:
        deployment = Deployment.objects.create(function=function, trigger="cli", kind=kind)
        rows, percent = timeline(deployment)
        assert [row["name"] for row in rows] == plan.names(kind) and percent == 0
        assert {row["state"] for row in rows} == {"to come"}
