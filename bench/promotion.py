"""Promotion, request -> production alias live: Slipway against the same AWS calls made by hand.

Run with `python -m devstack bench bench/promotion.py` (a private Redis, Postgres
and AWS plane on the bench ports; the portal's database is SQLite as in `make
run`, or Postgres with `BENCH_POSTGRES=1`). One amd64 function (the architecture
is not the point: a promotion builds nothing) with two environments, staging
(where pushes deploy) and production (manual promotion), each its own Lambda.
Staging is deployed once through a real Celery worker; then, interleaved,
BENCH_RUNS rounds (default 5) of:

- Slipway: `request_promotion` into production (the API's and the UI's path) ->
  the deploy task -> claim, check (staging's alias still serves the digest; ECR
  holds it), update with the pinned digest, wait, publish, verify (the smoke
  event and the golden cases against production's Lambda), shift. "Alias live"
  is taken by polling GetAlias without a pause from just before the request.
- By hand, the same AWS calls a careful script makes: UpdateFunctionCode with
  the digest, wait until applied (deploy/lambdas.wait_updated, the short-poll
  wait Slipway uses: faster than the SDK waiter's 1 s polls, so the fairest such
  script), PublishVersion, UpdateAlias. It verifies nothing.

Slipway's time is split from the rows it recorded: queue hop (request committed
-> a worker claimed the row), check, update + wait, publish, verify, shift, and
the rest (locks, records, the poll's resolution). The goal compares Slipway
without its verify step (which the script does not do) with the script.
Nothing asserts on a time.
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

from bench.pipeline_redeploy import git, wait_done, worker_and_workspace  # noqa: E402 (sets Django up)
from bench.rollback import _p95, until_alias  # noqa: E402
from deploy import aws, ecr, lambdas  # noqa: E402
from portal.deployments import request_deploy, request_promotion  # noqa: E402
from portal.models import Environment, Function  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
PARTS = (("check", ("check",)), ("update + wait", ("update", "wait")), ("publish", ("publish",)),
         ("verify", ("verify",)), ("shift", ("shift",)))


def slipway_promotion(function: Function, production: Environment) -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    promotion = request_promotion(function, production, trigger="api")
    done = None
    deadline = time.perf_counter() + 600
    while done is None and time.perf_counter() < deadline:  # the version is known once published
        promotion.refresh_from_db()
        if promotion.version:
            done = promotion
        elif promotion.is_terminal:
            raise SystemExit(f"promotion #{promotion.pk} {promotion.status}: {promotion.error_message}")
    took = until_alias(production.lambda_name, production.alias, promotion.version, started)
    done = wait_done(promotion)
    steps = {s.name: s for s in done.steps.all()}
    split = {"queue hop": (done.started_at - (done.enqueued_at or done.created_at)).total_seconds()}
    for label, names in PARTS:
        split[label] = sum((steps[n].finished_at - steps[n].started_at).total_seconds()
                           for n in names if n in steps and steps[n].finished_at)
    split["rest"] = max(took - sum(split.values()), 0.0)
    return took, split


def by_hand(name: str, alias: str, image_uri: str) -> float:
    client = aws.client("lambda")
    started = time.perf_counter()
    client.update_function_code(FunctionName=name, ImageUri=image_uri)
    lambdas.wait_updated(name)
    version = client.publish_version(FunctionName=name, Description="by hand")["Version"]
    client.update_alias(FunctionName=name, Name=alias, FunctionVersion=version)
    return until_alias(name, alias, version, started)


def main() -> None:
    with worker_and_workspace("bench-promotion") as work:
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
        name=f"bench-pr-{suffix}", repository_url=str(repo), ecr_repository=f"bench/promotion-{suffix}",
        architecture="x86_64", smoke_event=detector_smoke_event())
    role = "arn:aws:iam::000000000000:role/bench"
    Environment.objects.create(function=function, name="staging", position=0, lambda_name=f"bench-pr-stg-{suffix}",
                               execution_role_arn=role)
    production = Environment.objects.create(function=function, name="production", position=1,
                                            lambda_name=f"bench-pr-prd-{suffix}", execution_role_arn=role)
    print("setting up: staging deployed through the worker, production created by a first promotion "
          "(not timed)", flush=True)
    staged = wait_done(request_deploy(function, trigger="cli"))
    first = request_promotion(function, production, trigger="cli")
    wait_done(first)
    image = ecr.image_uri(ecr.ensure_repository(function.ecr_repository), staged.build.digest,
                          settings.SLIPWAY_REGISTRY_HOST)
    by_hand(production.lambda_name, production.alias, image)  # warm the script's client too

    ours, splits, hand = [], [], []
    for n in range(RUNS):
        took, split = slipway_promotion(function, production)
        ours.append(took)
        splits.append(split)
        hand.append(by_hand(production.lambda_name, production.alias, image))
        print(f"  round {n + 1}: slipway {took * 1000:.0f} ms (verify {split['verify'] * 1000:.0f} ms), "
              f"by hand {hand[-1] * 1000:.0f} ms", flush=True)

    med = statistics.median
    print(f"\n## Promotion, request -> production alias live (median of {RUNS} per side, "
          f"database {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]})\n")
    print("| side | p50 ms | p95 ms |\n|---|---|---|")
    for label, values in (("Slipway promotion", ours),
                          ("by hand: UpdateFunctionCode(digest), wait, PublishVersion, UpdateAlias", hand)):
        print(f"| {label} | {med(values) * 1000:.1f} | {_p95(values) * 1000:.1f} |")
    print("\nWhere Slipway's time goes (median ms):\n")
    print("| part | ms |\n|---|---|")
    for part in splits[0]:
        print(f"| {part} | {med([s[part] for s in splits]) * 1000:.1f} |")
    without_verify = [took - split["verify"] for took, split in zip(ours, splits, strict=True)]
    print(f"\nratio against by hand: {med(ours) / med(hand):.2f}x; Slipway's absolute overhead "
          f"{(med(ours) - med(hand)) * 1000:.0f} ms; verify's share of Slipway's time "
          f"{med([s['verify'] for s in splits]) / med(ours) * 100:.0f} %")
    print(f"ratio excluding verify: {med(without_verify) / med(hand):.2f}x (goal <= 1.3x)", flush=True)


if __name__ == "__main__":
    main()
