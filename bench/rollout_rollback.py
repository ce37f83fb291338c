"""Rollback during a canary against a rollback with no canary running, request -> alias on
the target version alone. Goal: at most 2x.

Run with `python -m devstack bench bench/rollout_rollback.py` (a private Redis, Postgres
and AWS plane on the bench ports; SQLite for the portal, or Postgres with
`BENCH_POSTGRES=1`). The same worker, beat (rollout tick every BENCH_TICK s, default 3),
function and canary settings as bench/rollout_abort.py. Then BENCH_RUNS rounds
(default 6) of, interleaved:

- during a canary: deploy the other commit, wait until its canary (10 %) is on the alias
  (not timed), then `request_rollback` (the API's and the UI's path): it supersedes the
  rollout in the transaction that queues it and targets the rollout's stable version,
  moved in one UpdateAlias with the routing cleared. Timed from just before the request
  until GetAlias, polled without a pause, shows the stable version with no weights.
- no canary: `request_rollback` with the alias on one version alone, which targets the
  release before the live one; timed the same way until the alias shows it.

Both rollbacks run on the rollbacks queue beside the beat's ticks. Slipway's time is
split from the rows: queue hop (request committed -> a worker claimed it), check (the
release check: ECR and Lambda reads, the owner) and alias move (the shift step).
Nothing asserts on a time.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from django.conf import settings  # noqa: E402

from bench.rollback import _p95  # noqa: E402
from bench.rollout_abort import TICK, Setup, beat, ended, until_stable, worker_and_workspace  # noqa: E402 (Django set up)
from portal.deployments.requesting import request_rollback  # noqa: E402
from portal.models import Deployment  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "6"))
PARTS = (("queue hop", None), ("check", "check"), ("alias move", "shift"))
med = statistics.median


def timed_rollback(setup: Setup, expected: str = "") -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    rollback = request_rollback(setup.function, trigger="api")
    if expected and rollback.target_version != expected:
        raise SystemExit(f"rollback #{rollback.pk} targets {rollback.target_version}, not the stable {expected}")
    took = until_stable(setup.name, setup.alias, rollback.target_version, started)
    done = ended(rollback.pk)
    if done.status != Deployment.Status.SUCCEEDED:
        raise SystemExit(f"rollback #{done.pk} {done.status}: {done.error_message}")
    steps = {s.name: s for s in done.steps.all()}
    split = {"queue hop": (done.started_at - (done.enqueued_at or done.created_at)).total_seconds()}
    for label, name in PARTS[1:]:
        step = steps.get(name)
        split[label] = (step.finished_at - step.started_at).total_seconds() if step and step.finished_at else 0.0
    return took, split


def main() -> None:
    with worker_and_workspace("bench-rollout-rollback") as work, beat(work):
        bench(Setup(work, "rbcanary"))


def bench(setup: Setup) -> None:
    during, plain, during_split, plain_split = [], [], [], []
    for n in range(RUNS + 1):  # the first round warms every path and is not counted
        rollout = setup.start_rollout()
        took, split = timed_rollback(setup, expected=rollout.stable_version)
        superseded = ended(rollout.deployment_id)
        if (superseded.status, superseded.error_code) != (Deployment.Status.FAILED, "canary-aborted"):
            raise SystemExit(f"rollout #{superseded.pk} {superseded.status} {superseded.error_code}")
        alone, alone_split = timed_rollback(setup)
        label = "warm-up" if n == 0 else f"round {n}"
        print(f"  {label}: during a canary {took * 1000:.0f} ms, no canary {alone * 1000:.0f} ms", flush=True)
        if n:
            during.append(took)
            plain.append(alone)
            during_split.append(split)
            plain_split.append(alone_split)

    print(f"\n## Rollback during a canary vs no canary, request -> alias on the target alone (tick {TICK} s, "
          f"{RUNS} each, database {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]})\n")
    print("| | p50 ms | p95 ms | queue hop | check | alias move (median ms) |\n|---|---|---|---|---|---|")
    for label, values, splits in (("rollback during a canary (10 %)", during, during_split),
                                  ("rollback, no canary running", plain, plain_split)):
        parts = " | ".join(f"{med([s[part] for s in splits]) * 1000:.1f}" for part, _ in PARTS)
        print(f"| {label} | {med(values) * 1000:.1f} | {_p95(values) * 1000:.1f} | {parts} |")
    print(f"\nratio during a canary / no canary: {med(during) / med(plain):.2f}x median, "
          f"{_p95(during) / _p95(plain):.2f}x p95 (goal <= 2x)", flush=True)


if __name__ == "__main__":
    main()
