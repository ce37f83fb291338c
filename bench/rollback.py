"""Rollback, request -> alias live: Slipway against the two things a user would do instead.

Run with `python -m devstack bench bench/rollback.py` (a private Redis,
Postgres and AWS plane on the bench ports; the portal's database is SQLite as
in `make run`, or Postgres with `BENCH_POSTGRES=1`). One amd64 function
(the architecture is not the point: no image is built or run by a rollback
that finds its version) is deployed twice through a real Celery worker, so it
has two releases, A and B. Then, interleaved, BENCH_RUNS rounds (default 10)
of each side moving the alias B -> A and back A -> B, every move timed:

- Slipway: `request_rollback` (the API's and the UI's path) -> the rollback
  task on the `rollbacks` queue -> claim, check the release, move the alias,
  records. "Alias live" is taken by polling GetAlias in a tight loop (no
  sleep; one call takes a few ms on the local plane) from just before the
  request.
- (a) by hand, the old image put back without a rebuild: UpdateFunctionCode
  with the old digest, wait until the update is applied (the same short-poll
  wait Slipway uses, deploy/lambdas.wait_updated: faster than the SDK waiter's
  1 s polls, so the fairest such script), PublishVersion, UpdateAlias.
- (b) a bare UpdateAlias to the old version: the least anyone can do.

Slipway's time is split, from the rows it recorded, into: queue hop (request
committed -> a worker claimed the row), check (the release check step: ECR
and Lambda reads, the ownership check), alias move (the shift step), and the
rest (locks, records, the poll's resolution). Prints a table and the ratios;
nothing asserts on a time.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
if os.environ.get("BENCH_POSTGRES") == "1" and os.environ.get("SLIPWAY_TEST_POSTGRES_URL"):
    os.environ["DATABASE_URL"] = os.environ["SLIPWAY_TEST_POSTGRES_URL"]

from django.conf import settings  # noqa: E402

from bench.pipeline_redeploy import commit_code_change, git, wait_done, worker_and_workspace  # noqa: E402 (sets Django up)
from deploy import aws, ecr, lambdas  # noqa: E402
from portal.deployments.requesting import request_deploy, request_rollback  # noqa: E402
from portal.models import Environment, Function  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "10"))


def alias_version(name: str, alias: str) -> str:
    return aws.client("lambda").get_alias(FunctionName=name, Name=alias)["FunctionVersion"]


def until_alias(name: str, alias: str, version: str, started: float, timeout: float = 120) -> float:
    """Seconds from `started` until GetAlias names `version`, polled without a pause."""
    while time.perf_counter() - started < timeout:
        if alias_version(name, alias) == version:
            return time.perf_counter() - started
    raise SystemExit(f"{name}:{alias} did not reach version {version} in {timeout:.0f} s")


def slipway_rollback(function: Function) -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    rollback = request_rollback(function, trigger="api")
    environment = function.first_environment
    took = until_alias(environment.lambda_name, environment.alias, rollback.target_version, started)
    done = wait_done(rollback)
    steps = {s.name: s for s in done.steps.all()}
    split = {"queue hop": (done.started_at - done.enqueued_at if done.enqueued_at else
                           done.started_at - done.created_at).total_seconds()}
    for name, label in (("check", "check"), ("shift", "alias move")):
        step = steps.get(name)
        split[label] = (step.finished_at - step.started_at).total_seconds() if step and step.finished_at else 0.0
    split["rest"] = max(took - sum(split.values()), 0.0)
    return took, split


def by_hand(name: str, alias: str, image_uri: str) -> float:
    """(a): the old image back by digest, then what a careful script does after it."""
    client = aws.client("lambda")
    started = time.perf_counter()
    client.update_function_code(FunctionName=name, ImageUri=image_uri)
    lambdas.wait_updated(name)
    version = client.publish_version(FunctionName=name, Description="by hand")["Version"]
    client.update_alias(FunctionName=name, Name=alias, FunctionVersion=version)
    return until_alias(name, alias, version, started)


def bare_alias(name: str, alias: str, version: str) -> float:
    """(b): one UpdateAlias."""
    started = time.perf_counter()
    aws.client("lambda").update_alias(FunctionName=name, Name=alias, FunctionVersion=version)
    return until_alias(name, alias, version, started)


def main() -> None:
    with worker_and_workspace("bench-rollback") as work:
        bench(work)


def bench(work: Path) -> None:
    from portal.management.commands.bootstrap_local import detector_smoke_event

    suffix = f"{int(time.time())}"
    repo = work / "detector"
    shutil.copytree(REPO_ROOT / "function", repo)
    git(repo, "init", "-q", "--initial-branch=main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "detector")
    function = Function.objects.create(
        name=f"bench-rb-{suffix}", repository_url=str(repo), ecr_repository=f"bench/rollback-{suffix}",
        architecture="x86_64", smoke_event=detector_smoke_event())
    Environment.objects.create(function=function, lambda_name=f"bench-rollback-{suffix}", memory_mb=1024, timeout_s=30,
                               execution_role_arn="arn:aws:iam::000000000000:role/bench")
    print("setting up: two releases through the worker (not timed)", flush=True)
    first = wait_done(request_deploy(function, trigger="cli"))
    commit_code_change(repo, 1)
    second = wait_done(request_deploy(function, trigger="cli"))
    name, alias = function.first_environment.lambda_name, function.first_environment.alias
    repository_uri = ecr.ensure_repository(function.ecr_repository)
    images = {d.version: ecr.image_uri(repository_uri, d.build.digest, settings.SLIPWAY_REGISTRY_HOST)
              for d in (first, second)}
    # Warm every path once (the worker's clients, the plane's containers are not involved: no invoke).
    slipway_rollback(function)
    slipway_rollback(function)
    assert alias_version(name, alias) == second.version

    ours, splits, hand, bare = [], [], [], []
    for n in range(RUNS):
        for _ in (first, second):  # B -> A, then A -> B: every side makes the same two moves
            took, split = slipway_rollback(function)
            ours.append(took)
            splits.append(split)
        for target in (first, second):
            bare.append(bare_alias(name, alias, target.version))
        for target in (first, second):
            hand.append(by_hand(name, alias, images[target.version]))
        bare_alias(name, alias, second.version)  # untimed: back on B, where Slipway's records have it
        print(f"  round {n + 1}: slipway {ours[-2] * 1000:.0f}/{ours[-1] * 1000:.0f} ms, "
              f"(a) by hand {hand[-2] * 1000:.0f}/{hand[-1] * 1000:.0f} ms, "
              f"(b) bare UpdateAlias {bare[-2] * 1000:.1f}/{bare[-1] * 1000:.1f} ms", flush=True)

    med = statistics.median
    moves = 2 * RUNS
    print(f"\n## Rollback, request -> alias live (median of {moves} moves per side, "
          f"database {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]})\n")
    print("| side | p50 ms | p95 ms |\n|---|---|---|")
    for label, values in (("Slipway rollback", ours), ("(a) by hand: UpdateFunctionCode(old digest), wait, "
                                                       "PublishVersion, UpdateAlias", hand),
                          ("(b) bare UpdateAlias", bare)):
        print(f"| {label} | {med(values) * 1000:.1f} | {_p95(values) * 1000:.1f} |")
    print("\nWhere Slipway's time goes (median ms):\n")
    print("| part | ms |\n|---|---|")
    for part in splits[0]:
        print(f"| {part} | {med([s[part] for s in splits]) * 1000:.1f} |")
    overhead = (med(ours) - med(bare)) * 1000
    print(f"\nratio against (a) by hand: {med(ours) / med(hand):.3f}x (goal <= 0.2x)")
    print(f"ratio against (b) bare UpdateAlias: {med(ours) / med(bare):.1f}x; "
          f"Slipway adds {overhead:.0f} ms over (b) (goal <= 100 ms on the local plane)", flush=True)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


if __name__ == "__main__":
    main()
