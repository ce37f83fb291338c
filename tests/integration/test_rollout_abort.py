"""A canary whose alarm goes into ALARM mid-step aborts, end to end: the session's real
Celery worker, a beat of this module's own (SLIPWAY_ROLLOUT_TICK=1), Redis and the local
plane's Lambda and CloudWatch. No image is built: the session's released Lambda is
staging, a production Lambda is made here from its first release's image (live -> 1),
and promoting staging's release (image two) into production starts the canary.

The alarm lives in a namespace nothing writes: the plane re-evaluates every alarm on a
metric name at each PutMetricData, whatever its dimensions, so an AWS/Lambda alarm set
to ALARM would be reset by the next invoke of any function."""

from __future__ import annotations

import contextlib
import time

import pytest

from deploy import alarms, aws, lambdas
from portal.deployments import request_promotion
from portal.models import Build, Deployment, Environment, Rollout, RolloutEvent
from tests.conftest import wait_for
from tests.integration.conftest import own_beat, wait_done

pytestmark = pytest.mark.integration
Status = Deployment.Status
Action = RolloutEvent.Action


@pytest.fixture(scope="module")
def beat(tmp_path_factory):
    """Rollout ticks every second; the beat's other entries held off."""
    with own_beat(tmp_path_factory.mktemp("beat"), SLIPWAY_ROLLOUT_TICK=1) as process:
        yield process


def alarm_template(namespace: str) -> dict:
    return {"namespace": namespace, "metric": "Errors", "statistic": "Sum", "threshold": 1,
            "comparison": "GreaterThanOrEqualToThreshold", "periods": 1, "period_s": 60}


def make_production(function, released_plane, unique: str) -> Environment:
    """The released function's environment becomes staging (its Lambda serves release two);
    production is a new Lambda from release one's image, version 1 live, recorded as released."""
    staging = function.first_environment
    Environment.objects.filter(pk=staging.pk).update(name="staging")
    name = f"{released_plane.lambda_name}-prd-{unique}"[:64]
    one = released_plane.releases[0]
    config = lambdas.Settings(name=name, architecture="x86_64", memory_mb=256, timeout_s=30, environment={},
                              role_arn=staging.execution_role_arn)
    created = lambdas.create(config, one["uri"], f"{one['commit'][:12]} {one['digest']}")
    lambdas.tag(created["FunctionArn"], {lambdas.OWNER_TAG: function.name})
    version = lambdas.publish(name, "one", after=lambdas.wait_updated(name), image_uri=one["uri"])
    lambdas.point_alias(name, "live", version)
    production = Environment.objects.create(
        function=function, name="production", position=1, lambda_name=name, memory_mb=256, timeout_s=30,
        execution_role_arn=staging.execution_role_arn, rollout_strategy="canary", rollout_percent=10,
        rollout_minutes=1, rollout_alarm=alarm_template(f"Slipway/Test/{unique}"), probe_count=2)
    Deployment.objects.create(function=function, environment=production, trigger="cli", ref="main",
                              build=Build.objects.get(function=function, digest=one["digest"]),
                              commit_sha=one["commit"], status=Status.SUCCEEDED, version=version)
    return production


@pytest.fixture
def production(released_function, released_plane, unique):
    made = make_production(released_function, released_plane, unique)
    yield made
    aws.reset()
    with contextlib.suppress(Exception):
        aws.client("lambda").delete_function(FunctionName=made.lambda_name)
    with contextlib.suppress(Exception):  # what a failing test left behind
        alarms.delete(name for rollout in Rollout.objects.filter(deployment__environment=made)
                      for name in rollout.alarms_created)


def rolling_out(deployment: Deployment) -> Rollout:
    def started():
        deployment.refresh_from_db()
        assert deployment.status not in Deployment.TERMINAL, f"{deployment.error_code}: {deployment.error_message}"
        return deployment.status == Status.ROLLING_OUT
    wait_for(started, 120, f"promotion #{deployment.pk} to start rolling out", interval=0.2)
    return Rollout.objects.get(deployment=deployment)


def test_an_alarm_set_to_alarm_mid_step_aborts_the_canary_back_to_the_stable_version(
        worker, beat, released_function, production):
    promotion = request_promotion(released_function, production, trigger="api")
    rollout = rolling_out(promotion)
    name, alias = production.lambda_name, production.alias
    seen = lambdas.get_alias(name, alias)
    stable, new = rollout.stable_version, rollout.new_version
    assert (seen["FunctionVersion"], lambdas.routing(seen)) == (stable, {new: 0.1})  # mid-step: 10 % on the new
    (created,) = rollout.alarms_created
    assert created == f"slipway-{released_function.name}-production-v{new}-errors"

    alarms.set_state(created, "ALARM", "test: the new version's errors")
    set_at = time.monotonic()
    done = wait_done(promotion, timeout=60)
    took = time.monotonic() - set_at

    assert (done.status, done.error_code) == (Status.FAILED, "canary-aborted"), done.error_message
    assert f"alarm:{created}" in done.error_message
    back = lambdas.get_alias(name, alias)
    assert back["FunctionVersion"] == stable  # 100 % on the stable version, the routing cleared:
    assert back.get("RoutingConfig") in (None, {}, {"AdditionalVersionWeights": {}}), back.get("RoutingConfig")
    rollout.refresh_from_db()
    assert rollout.abort_signal == f"alarm:{created}"
    actions = list(rollout.events.values_list("action", flat=True))
    assert actions[:2] == [Action.START, Action.SHIFT] and Action.ABORT in actions, actions
    assert Action.DONE not in actions
    assert alarms.describe([created]) == {}  # the rollout's own alarm deleted once it ended
    production.refresh_from_db()
    assert "aborted (alarm:" in production.paused_reason  # auto-deploy paused, as after a rollback
    print(f"alarm set -> deployment failed canary-aborted in {took:.2f} s (tick 1 s)")
