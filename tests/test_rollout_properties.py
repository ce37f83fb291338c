"""Property test of the planner driven through the real engine: for any valid strategy, P, M
and interruption point (an alarm, a failed probe, routing changed outside, a tick lost after its
UpdateAlias), the new version's share of the alias only grows until the rollout ends, and it
ends at 0 (aborted: the stable version alone) or 1 (done: the new version alone), never with
weights left on; a version that failed verify is never routed to. Counters assert every path ran."""

import itertools
from collections import Counter
from datetime import timedelta
from unittest import mock

from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.deployments import health, rollout, routing
from portal.deployments.models import Deployment, DeploymentStep, Rollout
from portal.deployments.recording import StepLog
from portal.functions import Environment
from tests.conftest import create_function, released
from tests.rollout_plane import Plane

Status = Deployment.Status
KINDS = ("none", "alarm", "probe", "drift", "lost")


def share(write: tuple[str, dict], new: str) -> float:
    primary, weights = write
    return 1.0 if primary == new else weights.get(new, 0.0)


def test_weights_grow_then_end_at_nothing_or_everything(db):
    seen, numbers = Counter(), itertools.count()

    @settings(max_examples=100, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(strategy=st.sampled_from([routing.CANARY, routing.LINEAR]), percent=st.integers(1, 50),
           minutes=st.integers(1, 60), at=st.integers(0, 100), kind=st.sampled_from(KINDS),
           verified=st.sampled_from([True, True, True, False]))
    def roll(strategy, percent, minutes, at, kind, verified):
        n = next(numbers)
        function = create_function(name=f"p{n}", repository_url="https://gitlab.example.com/t/p.git",
                                   ecr_repository=f"t/p{n}", lambda_name=f"p{n}")
        Environment.objects.filter(pk=function.first_environment.pk).update(
            rollout_strategy=strategy, rollout_percent=percent, rollout_minutes=minutes)
        released(function, "1", "a" * 40)
        plane = Plane()
        planned = routing.plan(strategy, percent, minutes)
        interrupt = at % (len(planned) - 1)  # one of the ticks that move it on (the last one ends it)
        deployment = Deployment.objects.create(function=function, trigger="cli", version="2", status=Status.SHIFTING)
        deployment = Deployment.objects.select_related("environment", "function").get(pk=deployment.pk)
        seen[strategy] += 1
        if not verified:  # the pipeline stops at verify: the shift step, and so start(), never runs
            seen["verify-failed"] += 1
            deployment.finish(Status.FAILED, "smoke-function-error", "verify failed")
            assert plane.writes == []
            seen["examples"] += 1
            return
        alarm = {}
        with plane.serving(), mock.patch.multiple(
                health, prepare=mock.DEFAULT, delete_alarms=mock.DEFAULT, delete_ended=mock.DEFAULT,
                alarm_failures=mock.Mock(side_effect=lambda due: {r.pk: alarm["name"] for r in due if alarm}),
                probe=mock.DEFAULT) as patched:
            patched["probe"].return_value = ""
            step = DeploymentStep.objects.create(deployment=deployment, name="shift", position=1)
            assert rollout.start(deployment, StepLog(step))
            row = Rollout.objects.get(deployment=deployment)
            for tick in itertools.count():
                assert tick <= len(planned) + 2, "a rollout ends within its plan's ticks"
                Rollout.objects.filter(pk=row.pk).update(step_started_at=timezone.now() - timedelta(days=1),
                                                         next_tick_at=timezone.now())
                if tick == interrupt and kind != "none":
                    seen[kind] += 1
                    if kind == "alarm":
                        alarm["name"] = "alarm:slipway-x"
                    elif kind == "probe":
                        patched["probe"].return_value = "3 of 3 probes failed"
                    elif kind == "drift":
                        plane.move("1", {"2": 0.999})
                    elif kind == "lost":  # the tick wrote the next weight, then died before its database write
                        current = Rollout.objects.get(pk=row.pk)
                        nxt = planned[min(current.step + 1, len(planned) - 1)]
                        plane.move(*rollout.shape(current, nxt.weight))
                outcome = rollout.tick(f"t{n}-{tick}").get(row.pk, "")
                seen["adopted" if outcome.startswith("adopted") else outcome.split(":")[0]] += 1
                if Deployment.objects.get(pk=deployment.pk).status == Status.ABORTING:
                    assert rollout.perform_abort(deployment.pk, f"a{n}") == "aborted"
                if Deployment.objects.get(pk=deployment.pk).is_terminal:
                    break
        deployment.refresh_from_db()
        shares = [share(write, "2") for write in plane.writes]
        final = (plane.primary, plane.weights)
        assert shares and all(0 < s <= 1 for s in shares[:-1]), shares
        growing = shares[:-1] if deployment.status == Status.FAILED else shares
        assert growing == sorted(growing), f"weights went down mid-rollout: {shares}"
        if deployment.status == Status.SUCCEEDED:
            seen["done"] += 1
            assert final == ("2", {}) and kind in ("none", "lost")
        else:
            seen["aborted"] += 1
            assert (deployment.error_code, final) == ("canary-aborted", ("1", {})), (deployment.error_message, final)
            assert kind in ("alarm", "probe", "drift")
        assert all(version in {"1", "2"} for write in plane.writes for version in (write[0], *write[1]))
        seen["examples"] += 1

    roll()
    assert seen["examples"] >= 100, seen
    for path in ("canary", "linear", "verify-failed", "done", "aborted", "adopted", "alarm", "probe", "drift",
                 "lost", "shift"):
        assert seen[path] > 0, (path, seen)
