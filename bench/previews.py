"""Merge requests' previews: what a preview costs against a deploy, and what it costs a rollback.

Run with `python -m devstack bench bench/previews.py` (a private Redis, Postgres and AWS plane
on the bench ports; SQLite for the portal, or Postgres with `BENCH_POSTGRES=1`). One amd64
detector function (function/, as bench/pipeline_redeploy.py) through a real Celery worker
(deploys and rollbacks, two processes), with its preview environment. BENCH_RUNS rounds
(default 5) of each measure, interleaved, every side timed in the same run:

1. MR update -> preview alias moved, against a deploy of the same change to the first
   environment -> its alias moved. Each side ships a code-only change of its own (the same
   edit, another version string: a preview of the very commit production just built would
   adopt its image and build nothing), from the request until GetAlias names the new
   version, polled without a pause. The order alternates each round. Goal <= 1.1x.
2. A production rollback (request -> alias live) while a preview builds (a fresh code
   change, the rollback requested once the preview's row is in its build step), against one
   with nothing else running. Goal <= 1.2x.

Prints the tables and the ratios; nothing asserts on a time.
"""

from __future__ import annotations

import datetime
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
from bench.rollback import alias_version, slipway_rollback  # noqa: E402
from deploy import aws  # noqa: E402
from portal.deployments import previews  # noqa: E402
from portal.deployments.requesting import request_deploy  # noqa: E402
from portal.functions.models import PREVIEW_POSITION  # noqa: E402
from portal.models import Deployment, Environment, Function, PreviewPolicy  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
IID = 1
T0 = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)


def until_moved(name: str, alias: str, before: str | None, started: float, timeout: float = 900) -> float:
    """Seconds from `started` until GetAlias names a version other than `before`, polled without a pause."""
    client = aws.client("lambda")
    while time.perf_counter() - started < timeout:
        try:
            now = client.get_alias(FunctionName=name, Name=alias)["FunctionVersion"]
        except client.exceptions.ResourceNotFoundException:
            now = None
        if now is not None and now != before:
            return time.perf_counter() - started
    raise SystemExit(f"{name}:{alias} did not move from {before} in {timeout:.0f} s")


class Bench:
    def __init__(self, work: Path):
        from portal.management.commands.bootstrap_local import detector_smoke_event

        suffix = f"{int(time.time())}"
        self.repo = work / "detector"
        shutil.copytree(REPO_ROOT / "function", self.repo)
        git(self.repo, "init", "-q", "--initial-branch=main")
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-qm", "detector")
        self.function = Function.objects.create(
            name=f"bench-pv-{suffix}", repository_url=str(self.repo), ecr_repository=f"bench/previews-{suffix}",
            architecture="x86_64", smoke_event=detector_smoke_event())
        role = "arn:aws:iam::000000000000:role/bench"
        Environment.objects.create(function=self.function, lambda_name=f"bench-previews-{suffix}", memory_mb=1024,
                                   timeout_s=30, execution_role_arn=role)
        self.preview_environment = Environment.objects.create(
            function=self.function, name="preview", position=PREVIEW_POSITION, preview=True,
            lambda_name=f"bench-previews-{suffix}-preview", memory_mb=1024, timeout_s=30, execution_role_arn=role)
        PreviewPolicy.objects.create(environment=self.preview_environment)
        self.production = self.function.first_environment
        self.changes = 0
        self.minute = 0

    def change(self) -> str:
        self.changes += 1
        return commit_code_change(self.repo, self.changes)

    def deploy(self) -> float:
        """A code change deployed to the first environment: request -> its alias moved."""
        self.change()
        before = _alias(self.production.lambda_name, self.production.alias)
        started = time.perf_counter()
        deployment = request_deploy(self.function, trigger="cli")
        took = until_moved(self.production.lambda_name, self.production.alias, before, started)
        _succeeded(wait_done(deployment))
        return took

    def preview(self, *, wait: bool = True) -> tuple[float, Deployment]:
        """A code change as the merge request's new head: the update event -> alias mr-<iid> moved."""
        sha = self.change()
        git(self.repo, "update-ref", f"refs/merge-requests/{IID}/head", sha)
        self.minute += 1
        mr = previews.MergeRequest(iid=IID, action="update" if self.minute > 1 else "open",
                                   updated_at=T0 + datetime.timedelta(minutes=self.minute), author="bench",
                                   source_project_id=1, target_project_id=1, source_branch="feature",
                                   target_branch="main", head_sha=sha)
        alias = f"mr-{IID}"
        before = _alias(self.preview_environment.lambda_name, alias)
        started = time.perf_counter()
        deployment = previews.receive(self.function, mr).deployment
        if not wait:
            return 0.0, deployment
        took = until_moved(self.preview_environment.lambda_name, alias, before, started)
        _succeeded(wait_done(deployment))
        return took, deployment

    def rollback(self) -> tuple[float, dict[str, float]]:
        """bench/rollback.py's Slipway side: request -> alias live, and where the time went."""
        return slipway_rollback(self.function)


def _alias(name: str, alias: str) -> str | None:
    try:
        return alias_version(name, alias)
    except Exception:  # no such alias (or function) yet
        return None


def _succeeded(deployment: Deployment) -> Deployment:
    if deployment.status != Deployment.Status.SUCCEEDED:
        raise SystemExit(f"deployment #{deployment.pk} ({deployment.kind}) ended {deployment.status}: "
                         f"{deployment.error_code} {deployment.error_message}")
    return deployment


def main() -> None:
    with worker_and_workspace("bench-previews") as work:
        bench(Bench(work))


def bench(b: Bench) -> None:
    print("setting up: two production releases and a first preview through the worker (not timed)", flush=True)
    b.deploy()
    b.deploy()
    b.preview()
    b.rollback()  # warm the rollback path, then put B back
    b.deploy()

    deploys, previewed = [], []
    for n in range(RUNS):
        order = (("preview", b.preview), ("deploy", b.deploy)) if n % 2 == 0 else (("deploy", b.deploy),
                                                                                   ("preview", b.preview))
        for label, side in order:
            took = side()
            (previewed if label == "preview" else deploys).append(took[0] if isinstance(took, tuple) else took)
        print(f"  round {n + 1}: preview {previewed[-1]:.2f} s, deploy {deploys[-1]:.2f} s", flush=True)

    alone, beside, alone_split, beside_split = [], [], [], []
    for n in range(RUNS):
        took, split = b.rollback()
        alone.append(took)
        alone_split.append(split)
        b.deploy()  # untimed: a new release to roll back from
        _, building = b.preview(wait=False)
        _wait_building(building)
        took, split = b.rollback()
        beside.append(took)
        beside_split.append(split)
        _succeeded(wait_done(building))
        b.deploy()
        print(f"  round {n + 1}: rollback alone {alone[-1] * 1000:.0f} ms, while a preview builds "
              f"{beside[-1] * 1000:.0f} ms", flush=True)

    med = statistics.median
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    print(f"\n## Previews (median of {RUNS} per side, amd64 detector, database {engine})\n")
    print("| measure | p50 | max |\n|---|---|---|")
    print(f"| MR update -> preview alias moved | {med(previewed):.2f} s | {max(previewed):.2f} s |")
    print(f"| deploy of a same-size change -> first environment's alias moved | {med(deploys):.2f} s | "
          f"{max(deploys):.2f} s |")
    print(f"| production rollback, nothing else running | {med(alone) * 1000:.0f} ms | {max(alone) * 1000:.0f} ms |")
    print(f"| production rollback while a preview builds | {med(beside) * 1000:.0f} ms | "
          f"{max(beside) * 1000:.0f} ms |")
    print("\nWhere the rollback's time goes (median ms):\n")
    print("| part | alone | while a preview builds |\n|---|---|---|")
    for part in alone_split[0]:
        print(f"| {part} | {med([s[part] for s in alone_split]) * 1000:.1f} | "
              f"{med([s[part] for s in beside_split]) * 1000:.1f} |")
    print(f"\npreview against deploy: {med(previewed) / med(deploys):.2f}x (goal <= 1.1x)")
    print(f"rollback while a preview builds against alone: {med(beside) / med(alone):.2f}x (goal <= 1.2x)", flush=True)


def _wait_building(deployment: Deployment, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployment.refresh_from_db()
        if deployment.status == Deployment.Status.BUILDING:
            return
        if deployment.is_terminal:
            raise SystemExit(f"preview #{deployment.pk} ended {deployment.status} before it built")
        time.sleep(0.05)
    raise SystemExit(f"preview #{deployment.pk} did not start building in {timeout:.0f} s")


if __name__ == "__main__":
    main()
