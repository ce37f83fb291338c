"""Rollout abort latency: a canary's alarm set to ALARM -> the alias back at 100 % on the
stable version, routing cleared. Goal: at most one tick + 2 s.

Run with `python -m devstack bench bench/rollout_abort.py` (a private Redis, Postgres and
AWS plane on the bench ports; the portal's database is SQLite as in `make run`, or
Postgres with `BENCH_POSTGRES=1`). A real Celery worker and a beat of this script's own
(the rollout tick every BENCH_TICK seconds, default 3 as in production; the beat's other
entries held off). One small amd64 function (a handler that echoes; no detector: the
version's own start-up is not what is measured) with two commits, deployed once each
all at once (not timed). Then BENCH_RUNS rounds (default 6), each:

- deploy the other commit with the environment's strategy canary 10 % / 1 min and an
  alarm template in a CloudWatch namespace nothing writes (the plane re-evaluates
  alarms on any PutMetricData of the metric name, whatever the dimensions): the
  pipeline's shift step starts the rollout (not timed);
- wait a random part of a tick (the alarm's change is not in phase with the beat),
  then set the rollout's own alarm to ALARM (SetAlarmState) and poll GetAlias without
  a pause until it shows the stable version with no weights: the abort latency;
- the baseline in the same round: the alias weighted again (not timed), then one bare
  UpdateAlias putting the stable version back with the routing cleared, polled the same
  way: the least anyone can do once they know.

Slipway's time is split, from the rows it recorded, into: until the tick decided (the
ABORT event: the wait for the next tick and its one DescribeAlarms), and the abort task
(queue hop, UpdateAlias). CloudWatch's own evaluation delay (a period) is not part of
it: the bound is Slipway's reaction to the state change. Nothing asserts on a time.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("SLIPWAY_ROLLOUT_TICK", os.environ.get("BENCH_TICK", "3"))  # the worker and beat inherit it
if os.environ.get("BENCH_POSTGRES") == "1" and os.environ.get("SLIPWAY_TEST_POSTGRES_URL"):
    os.environ["DATABASE_URL"] = os.environ["SLIPWAY_TEST_POSTGRES_URL"]

from django.conf import settings  # noqa: E402

from bench.pipeline_redeploy import git, wait_done, worker_and_workspace  # noqa: E402 (sets Django up)
from bench.rollback import _p95  # noqa: E402
from deploy import alarms, aws, lambdas  # noqa: E402
from portal.deployments.requesting import request_deploy  # noqa: E402
from portal.models import Deployment, Environment, Function, Rollout, RolloutEvent  # noqa: E402
from tests.integration.conftest import APP, DOCKERFILE  # noqa: E402 (the integration tests' echo handler)

RUNS = int(os.environ.get("BENCH_RUNS", "6"))
TICK = settings.SLIPWAY_ROLLOUT_TICK
# The beat's entries other than the rollout tick, held off for an hour (their settings).
HELD_OFF = ("SLIPWAY_PROMOTION_TICK", "SLIPWAY_GATE_TICK", "SLIPWAY_SWEEP_INTERVAL", "SLIPWAY_RECONCILE_INTERVAL",
            "SLIPWAY_DRIFT_INTERVAL")
med = statistics.median
SENT = re.compile(r"^\[([\d-]+ [\d:]+,\d{3}): INFO/MainProcess\] Scheduler: Sending due task rollout-tick")


@contextlib.contextmanager
def beat(work: Path):
    """A celery beat sending only the rollout tick (every SLIPWAY_ROLLOUT_TICK s)."""
    env = {**os.environ, **dict.fromkeys(HELD_OFF, "3600")}
    log = work / "beat.log"
    process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers", "beat", "-s", str(work / "schedule"),
                                "--loglevel", "INFO"], env=env, cwd=REPO_ROOT, stdout=log.open("wb"),
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "beat: Starting" not in log.read_text(errors="replace"):
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"the beat did not start: see {log}")
            time.sleep(0.1)
        yield process
    finally:
        os.killpg(process.pid, 15)
        process.wait(30)


class Setup:
    """One function with two commits deployed (alias on the second), then set to canary."""

    def __init__(self, work: Path, name: str):
        suffix = f"{int(time.time())}"
        self.repo = work / "echo"
        self.repo.mkdir()
        git(self.repo, "init", "-q", "--initial-branch=main")
        self.commits = [self._commit(release) for release in ("one", "two")]
        self.function = Function.objects.create(
            name=f"bench-{name}-{suffix}", repository_url=str(self.repo), ecr_repository=f"bench/{name}-{suffix}",
            architecture="x86_64", smoke_event={"smoke": True})
        self.environment = Environment.objects.create(
            function=self.function, lambda_name=f"bench-{name}-{suffix}", memory_mb=256, timeout_s=30,
            execution_role_arn="arn:aws:iam::000000000000:role/bench")
        print("setting up: two commits deployed all at once through the worker (not timed)", flush=True)
        for commit in self.commits:
            wait_done(request_deploy(self.function, trigger="cli", commit=commit))
        self.namespace = f"Slipway/Bench/{suffix}"
        Environment.objects.filter(pk=self.environment.pk).update(
            rollout_strategy="canary", rollout_percent=10, rollout_minutes=1, probe_count=1,
            rollout_alarm={"namespace": self.namespace, "metric": "Errors", "statistic": "Sum", "threshold": 1,
                           "comparison": "GreaterThanOrEqualToThreshold", "periods": 1, "period_s": 60})
        self.environment.refresh_from_db()
        self.name, self.alias = self.environment.lambda_name, self.environment.alias
        self.rounds = 0

    def _commit(self, release: str) -> str:
        (self.repo / "Dockerfile").write_text(DOCKERFILE)
        (self.repo / "app.py").write_text(APP.format(release=release))
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-qm", f"release {release}")
        return git(self.repo, "rev-parse", "HEAD")

    def start_rollout(self) -> Rollout:
        """Deploy the commit $LATEST does not hold (a new version each round) and wait until
        its canary is on the alias."""
        commit = self.commits[self.rounds % 2]
        self.rounds += 1
        deployment = request_deploy(self.function, trigger="cli", commit=commit)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            deployment.refresh_from_db()
            if deployment.status == Deployment.Status.ROLLING_OUT:
                rollout = Rollout.objects.get(deployment=deployment)
                assert lambdas.routing(lambdas.get_alias(self.name, self.alias)) == {rollout.new_version: 0.1}
                return rollout
            if deployment.is_terminal:
                raise SystemExit(f"deployment #{deployment.pk} {deployment.status}: {deployment.error_message}")
            time.sleep(0.05)
        raise SystemExit(f"deployment #{deployment.pk} did not start rolling out")


def alias_state(name: str, alias: str) -> tuple[str, dict]:
    found = aws.client("lambda").get_alias(FunctionName=name, Name=alias)
    return found["FunctionVersion"], lambdas.routing(found)


def until_stable(name: str, alias: str, version: str, started: float, timeout: float = 120) -> float:
    """Seconds from `started` (perf_counter) until GetAlias shows `version` alone, polled without a pause."""
    while time.perf_counter() - started < timeout:
        if alias_state(name, alias) == (version, {}):
            return time.perf_counter() - started
    raise SystemExit(f"{name}:{alias} not back on version {version} alone in {timeout:.0f} s")


def ended(deployment_pk: int, timeout: float = 60) -> Deployment:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployment = Deployment.objects.get(pk=deployment_pk)
        if deployment.is_terminal:
            return deployment
        time.sleep(0.05)
    raise SystemExit(f"deployment #{deployment_pk} did not end")


def beat_sends(log: Path, after: float, before: float) -> int:
    """How many rollout ticks the beat sent between two wall-clock times (its log's local times)."""
    sent = [datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            for found in map(SENT.match, log.read_text(errors="replace").splitlines()) if found]
    return sum(after <= at <= before for at in sent)


def bare_clear(name: str, alias: str, stable: str, new: str) -> float:
    """The baseline: weight the alias again (not timed), then one UpdateAlias back to `stable` alone."""
    client = aws.client("lambda")
    client.update_alias(FunctionName=name, Name=alias, FunctionVersion=stable,
                        RoutingConfig={"AdditionalVersionWeights": {new: 0.1}})
    started = time.perf_counter()
    client.update_alias(FunctionName=name, Name=alias, FunctionVersion=stable,
                        RoutingConfig={"AdditionalVersionWeights": {}})
    return until_stable(name, alias, stable, started)


def main() -> None:
    with worker_and_workspace("bench-rollout-abort") as work, beat(work):
        bench(Setup(work, "abort"), work / "beat.log")


def bench(setup: Setup, beat_log: Path) -> None:
    ours, decided, baseline = [], [], []
    for n in range(RUNS + 1):  # the first round warms every path and is not counted
        rollout = setup.start_rollout()
        (alarm,) = rollout.alarms_created
        time.sleep(random.uniform(0, TICK))  # noqa: S311 - a phase, not a secret
        wall, started = time.time(), time.perf_counter()
        alarms.set_state(alarm, "ALARM", "bench: the new version's errors")
        took = until_stable(setup.name, setup.alias, rollout.stable_version, started)
        done = ended(rollout.deployment_id)
        if (done.status, done.error_code) != (Deployment.Status.FAILED, "canary-aborted"):
            raise SystemExit(f"deployment #{done.pk} {done.status} {done.error_code}: {done.error_message}")
        abort = RolloutEvent.objects.filter(rollout=rollout, action=RolloutEvent.Action.ABORT).order_by("at").first()
        decision = abort.at.timestamp() - wall
        bare = bare_clear(setup.name, setup.alias, rollout.stable_version, rollout.new_version)
        label = "warm-up" if n == 0 else f"round {n}"
        sends = beat_sends(beat_log, wall, abort.at.timestamp())
        print(f"  {label}: alarm -> alias stable {took * 1000:.0f} ms (tick decided after {decision * 1000:.0f} ms, "
              f"beat sent {sends} tick(s) meanwhile), bare UpdateAlias {bare * 1000:.1f} ms", flush=True)
        if n:
            ours.append(took)
            decided.append(decision)
            baseline.append(bare)

    print(f"\n## Rollout abort: alarm set -> alias at 100 % stable (tick {TICK} s, {RUNS} aborts, database "
          f"{settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]})\n")
    print("| | p50 ms | p95 ms | max ms |\n|---|---|---|---|")
    task = [total - until for total, until in zip(ours, decided, strict=True)]
    for label, values in (("Slipway: alarm set -> alias stable, routing cleared", ours),
                          ("  of which: until the tick decided (ABORT event)", decided),
                          ("  of which: the abort task (queue hop, UpdateAlias)", task),
                          ("baseline: one bare UpdateAlias (stable, routing cleared)", baseline)):
        print(f"| {label} | {med(values) * 1000:.1f} | {_p95(values) * 1000:.1f} | {max(values) * 1000:.1f} |")
    goal = TICK + 2
    print(f"\nworst abort {max(ours):.2f} s against the goal tick + 2 s = {goal} s: {max(ours) / goal:.2f}x of it; "
          f"median {med(ours) / goal:.2f}x")
    print(f"ratio against the bare UpdateAlias: {med(ours) / med(baseline):.0f}x (median); Slipway's reaction "
          f"beyond the wait for a tick (median abort task): {med(task) * 1000:.0f} ms", flush=True)

if __name__ == "__main__":
    main()
