"""The step plan (portal/deployments/plan.py) is the one list of steps: a real run of
each kind (the pipeline, its recorder, queue and settling; only the step bodies patched,
each noting the status its row was in) writes exactly its kind's plan, each step under
the status the plan gives it, and the deployment page lists the plan's steps to come."""

from datetime import timedelta
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


@pytest.fixture
def promotion_bodies(bodies):
    """As `bodies`, with a promotion's check and its GetAlias before the shift patched too."""
    checks = [mock.patch.object(steps, "check_promotion", autospec=True, side_effect=noting(bodies, "check")),
              mock.patch.object(steps, "served_upstream", autospec=True, return_value="staging serves it")]
    for patch in checks:
        patch.start()
    yield bodies


def claimed_promotion(function) -> Deployment:
    from tests.conftest import staged

    staging, production = staged(function)
    build = Build.objects.create(function=function, commit_sha="c" * 40, architecture="arm64", inputs_digest="i",
                                 status=Build.Status.SUCCEEDED, digest="sha256:" + "c" * 64)
    deployment = Deployment.objects.create(function=function, environment=production, build=build, trigger="cli",
                                           kind=Kind.PROMOTION, digest=build.digest)
    return pipeline.claimed(deployment.pk, None, "task-1")


def test_a_promotion_runs_its_plan_each_step_under_its_status_and_builds_nothing(transactional_db, function, sent,
                                                                                promotion_bodies):
    deployment = claimed_promotion(function)
    assert pipeline.promote(deployment) == Status.SUCCEEDED
    assert promotion_bodies == planned(Kind.PROMOTION) and len(promotion_bodies) == 6
    assert recorded(deployment) == [(name, "succeeded") for name in plan.names(Kind.PROMOTION)]
    assert not {"source", "build", "push"} & set(plan.names(Kind.PROMOTION))
    assert steps.verify_version.call_args.kwargs == {"golden": True}  # golden cases gate promotions too
    assert deployment.steps.get(name="shift").output == "staging serves it"


@pytest.mark.postgres  # the refusal is a subquery in the UPDATE: proven on both databases
def test_a_pending_upstream_rollback_refuses_the_promotions_shift(transactional_db, function, sent, promotion_bodies):
    deployment = claimed_promotion(function)
    staging = function.environments.get(name="staging")
    rollback = Deployment.objects.create(function=function, environment=staging, trigger="cli", kind=Kind.ROLLBACK,
                                         target_version="1")
    assert pipeline.promote(deployment) == Status.CANCELLED
    assert [name for name, _ in promotion_bodies] == ["check", "update", "wait", "publish", "verify"]  # never shift
    deployment.refresh_from_db()
    assert deployment.error_code == "not-verified-upstream"
    assert deployment.error_message.startswith(f"rollback #{rollback.pk} of staging is queued: ")


@pytest.mark.postgres  # the refusal is a subquery in the UPDATE: proven on both databases
def test_a_rollback_of_staging_requested_after_the_promotion_refuses_its_shift_once_it_succeeded(
        transactional_db, function, sent, promotion_bodies):
    deployment = claimed_promotion(function)
    staging = function.environments.get(name="staging")
    Deployment.objects.create(function=function, environment=staging, trigger="cli", kind=Kind.ROLLBACK,
                              status=Status.SUCCEEDED, target_version="1")
    assert not deployment.enter_promotion_shift(staging.pk)
    Deployment.objects.filter(kind=Kind.ROLLBACK).update(created_at=deployment.created_at - timedelta(minutes=1))
    assert deployment.enter_promotion_shift(staging.pk)  # an older, settled rollback is what staging vouched from
    assert deployment.status == Status.SHIFTING
