"""Canary rollouts end to end: the session's released function (versions 1 and 2 on the local
plane), a real worker and a beat of this module's own ticking every second, a rollout "minute"
of 3 s (SLIPWAY_ROLLOUT_MINUTE, set for the test workers), probes K=2 with the smoke event only.
The local plane ignores weights when invoking (30 of 30 invokes go to the primary), so routing is
read back through GetAlias, and the new version is reached through its qualified probes.

Each rollout begins as the deploy's shift step begins it (rollout.start, called here on the row
the pipeline would have in its shift step); the ticks, the abort, the rollback run in the worker."""

import json
import os
import signal
from datetime import timedelta

import pytest
from django.utils import timezone

from deploy import lambdas
from portal.deployments import requesting, rollout, sweeper
from portal.deployments.models import Deployment, DeploymentStep, Rollout
from portal.deployments.recording import StepLog
from portal.functions import Environment
from tests.conftest import aws_calls_file, wait_for
from tests.integration.conftest import own_beat, wait_done

Status = Deployment.Status


@pytest.fixture(scope="module")
def beat(tmp_path_factory, worker):
    with own_beat(tmp_path_factory.mktemp("rollout-beat"), SLIPWAY_ROLLOUT_TICK=1) as process:
        yield process


@pytest.fixture
def held(faults, tmp_path):
    """Hold the worker's next tick of this function at a pause point of rollout.py."""
    paths = {"held": tmp_path / "held", "release": tmp_path / "release"}

    def at(point: str, function) -> None:
        faults.write_text(json.dumps([{"operation": point, "pause": True, "function": function.name,
                                       "held": str(paths["held"]), "release": str(paths["release"])}]))

    def pid() -> int:
        return int(wait_for(lambda: paths["held"].exists() and paths["held"].read_text(), 60, "the tick to be held"))

    yield at, pid, lambda: paths["release"].write_text("go")
    paths["release"].write_text("go")
    faults.write_text("[]")


def begin(function, plane, settings, *, minutes: int = 1) -> Deployment:
    """Version 1 live, version 2's deploy in its shift step begins a canary of 10 % for `minutes`."""
    settings.SLIPWAY_ROLLOUT_TICK = 1  # this process writes the first next_tick_at
    one, two = (release["version"] for release in plane.releases)
    environment = function.first_environment
    Environment.objects.filter(pk=environment.pk).update(rollout_strategy="canary", rollout_percent=10,
                                                         rollout_minutes=minutes, probe_count=2)
    lambdas.point_alias(plane.lambda_name, "live", one)
    Deployment.objects.filter(function=function, version=two).update(status=Status.SHIFTING, finished_at=None)
    deployment = Deployment.objects.select_related("function", "environment").get(function=function, version=two)
    assert rollout.start(deployment, StepLog(DeploymentStep.objects.create(deployment=deployment, name="shift",
                                                                           position=1)))
    found = lambdas.get_alias(plane.lambda_name, "live")
    assert (found["FunctionVersion"], lambdas.routing(found)) == (one, {two: 0.1})
    return deployment


def actions(deployment) -> list[str]:
    return list(Rollout.objects.get(deployment=deployment).events.values_list("action", flat=True))


def alias_of(plane) -> tuple[str, dict]:
    found = lambdas.get_alias(plane.lambda_name, "live")
    return found["FunctionVersion"], found.get("RoutingConfig")


def test_a_canary_completes_with_the_new_version_alone_and_no_routing(beat, released_function, released_plane,
                                                                      settings):
    deployment = begin(released_function, released_plane, settings)
    wait_done(deployment, 60)
    assert deployment.status == Status.SUCCEEDED, deployment.error_message
    two = released_plane.releases[1]["version"]
    assert alias_of(released_plane) in ((two, None), (two, {"AdditionalVersionWeights": {}}))
    assert actions(deployment) == ["start", "shift", "probe", "done"]
    probe = Rollout.objects.get(deployment=deployment).events.get(action="probe")
    assert "0 of 2 probe(s) of version 2 failed" in probe.note


def test_a_tick_killed_after_its_alias_write_is_adopted_by_the_next(beat, released_function, released_plane,
                                                                    settings, held):
    at, pid, _ = held
    at("after-rollout-update-alias", released_function)
    deployment = begin(released_function, released_plane, settings)
    os.kill(pid(), signal.SIGKILL)  # the pool process, between its UpdateAlias and its database write
    wait_done(deployment, 60)
    assert deployment.status == Status.SUCCEEDED, deployment.error_message
    assert actions(deployment) == ["start", "shift", "probe", "adopt", "done"]
    assert alias_of(released_plane)[0] == released_plane.releases[1]["version"]


def test_the_sweeper_leaves_a_healthy_rollout_alone(beat, released_function, released_plane, settings):
    settings.HEARTBEAT_STALE_SECONDS = 10  # SLIPWAY_HEARTBEAT_STALE=10
    deployment = begin(released_function, released_plane, settings, minutes=2)
    Deployment.objects.filter(pk=deployment.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    wait_for(lambda: Rollout.objects.get(deployment=deployment).events.count() == 2
             and Rollout.objects.filter(deployment=deployment, next_tick_at__gt=timezone.now()).exists(), 10,
             "a tick of the rollout")
    swept = sweeper.sweep()
    assert (swept["worker_lost"], swept["rollouts_aborted"], swept["aborts_performed"]) == ([], [], [])
    assert Deployment.objects.get(pk=deployment.pk).status == Status.ROLLING_OUT
    wait_done(deployment, 60)
    assert deployment.status == Status.SUCCEEDED, deployment.error_message


def test_a_rollback_mid_canary_puts_the_stable_version_back_in_one_alias_call(beat, released_function,
                                                                              released_plane, settings):
    deployment = begin(released_function, released_plane, settings, minutes=60)
    calls = aws_calls_file()
    before = len(calls.read_text().splitlines()) if calls.exists() else 0
    rollback = requesting.request_rollback(released_function, trigger="cli")
    one = released_plane.releases[0]["version"]
    assert rollback.target_version == one
    wait_done(rollback, 60)
    assert rollback.status == Status.SUCCEEDED, rollback.error_message
    assert alias_of(released_plane) in ((one, None), (one, {"AdditionalVersionWeights": {}}))
    moves = [line for line in calls.read_text().splitlines()[before:] if '"lambda:UpdateAlias"' in line]
    assert len(moves) == 1, moves
    deployment.refresh_from_db()
    assert (deployment.status, deployment.error_code) == (Status.FAILED, "canary-aborted")
    assert f"rollback #{rollback.pk}" in deployment.error_message


@pytest.mark.postgres
def test_a_tick_held_before_its_alias_write_while_a_rollback_lands_stops(beat, released_function, released_plane,
                                                                        settings, held):
    at, pid, release = held
    at("before-rollout-update-alias", released_function)
    deployment = begin(released_function, released_plane, settings)
    pid()  # the tick read the alias, probed, and waits before its UpdateAlias
    rollback = requesting.request_rollback(released_function, trigger="cli")
    wait_done(rollback, 60)
    assert rollback.status == Status.SUCCEEDED, rollback.error_message
    release()
    wait_for(lambda: Rollout.objects.filter(deployment=deployment, tick_task_id="").exists(), 20,
             "the held tick to let go")
    one = released_plane.releases[0]["version"]
    assert alias_of(released_plane) in ((one, None), (one, {"AdditionalVersionWeights": {}}))
    deployment.refresh_from_db()
    assert (deployment.status, deployment.error_code) == (Status.FAILED, "canary-aborted")
    assert actions(deployment) == ["start", "shift", "probe", "abort"], "no weight written after the rollback"
