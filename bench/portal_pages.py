"""Server time and query counts of the portal's busiest pages at scale.

Seeds one SQLite database with 1,000 functions x 100 releases and another
with 10 functions x 100 releases (same shape), then requests the functions
list, a function page and a deployment page through Django's test client
(in-process: server time without the network), and prints p50/p95 and query
counts side by side with the ratio of p95s. Goal: equal query counts, p95 at
1,000 functions within 1.5x of p95 at 10.

    PYTHONPATH=. .venv/bin/python bench/portal_pages.py [--functions 1000] [--releases 100] [--requests 60]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAGES = ("functions list", "function page", "deployment page")


def seed(functions: int, releases: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from portal.models import Build, Deployment, DeploymentStep, Function, Membership

    user = get_user_model().objects.create_user("bench", "bench@example.org", "bench-password")
    now = timezone.now()
    made = Function.objects.bulk_create(
        Function(name=f"fn-{n:04}", repository_url=f"https://gitlab.example.com/team/fn-{n}.git",
                 ecr_repository=f"slipway/fn-{n}", lambda_name=f"slipway-fn-{n}") for n in range(functions))
    Membership.objects.bulk_create(Membership(function=f, user=user, role="owner") for f in made)
    steps = ["source", "build", "push", "update", "wait", "publish", "verify", "shift"]
    for function in made:
        builds = Build.objects.bulk_create(
            Build(function=function, commit_sha=f"{function.pk:08x}{r:032x}", architecture="arm64",
                  inputs_digest=f"{r:064x}", status="succeeded", digest=f"sha256:{r:064x}", size_bytes=2**27)
            for r in range(releases))
        deployments = Deployment.objects.bulk_create(
            Deployment(function=function, build=b, trigger="webhook", requested_by=user, ref="main",
                       commit_sha=b.commit_sha, commit_message=f"change {r}", commit_author="Dev",
                       status="succeeded", version=str(r + 1), started_at=now, finished_at=now, init_ms=300.0)
            for r, b in enumerate(builds))
        DeploymentStep.objects.bulk_create(
            DeploymentStep(deployment=d, name=name, position=i + 1, status="succeeded", output="ok",
                           started_at=now, finished_at=now)
            for d in deployments for i, name in enumerate(steps))
    middle = made[len(made) // 2]
    return {"function": middle.name, "deployment": middle.deployments.order_by("pk").last().pk}


def measure(functions: int, releases: int, requests: int) -> dict:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    where = seed(functions, releases)
    seeded = time.perf_counter() - started
    client = Client()
    client.login(username="bench", password="bench-password")
    urls = {"functions list": "/functions/", "function page": f"/functions/{where['function']}/",
            "deployment page": f"/deployments/{where['deployment']}/"}
    result = {"seed_s": seeded}
    for page, url in urls.items():
        times, queries = [], 0
        for n in range(requests + 5):
            with CaptureQueriesContext(connection) as captured:
                began = time.perf_counter()
                response = client.get(url)
                took = time.perf_counter() - began
            assert response.status_code == 200, (url, response.status_code)
            if n >= 5:  # warm-up excluded
                times.append(took * 1000)
                queries = len(captured.captured_queries)
        times.sort()
        result[page] = {"p50": statistics.median(times), "p95": times[int(len(times) * 0.95) - 1],
                        "queries": queries}
    return result


def run(size: int, releases: int, requests: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="slipway-bench-") as tmp:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", "SLIPWAY_LOCAL": "1",
               "SLIPWAY_STATE_DIR": tmp, "DATABASE_URL": f"sqlite:///{tmp}/bench.sqlite3",
               "SLIPWAY_LOG_LEVEL": "ERROR", "DJANGO_ALLOWED_HOSTS": "testserver",
               "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        done = subprocess.run([sys.executable, __file__, "--child", str(size), str(releases), str(requests)],
                              env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"the {size}-function run failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--functions", type=int, default=1000)
    parser.add_argument("--releases", type=int, default=100)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--child", nargs=3, type=int)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    small = run(10, args.releases, args.requests)
    large = run(args.functions, args.releases, args.requests)
    print(f"seeded 10 x {args.releases} in {small['seed_s']:.1f} s, "
          f"{args.functions} x {args.releases} in {large['seed_s']:.1f} s")
    print(f"{'page':<16} {'p50 10':>8} {'p95 10':>8} {'p50 big':>8} {'p95 big':>8} {'q 10':>5} {'q big':>5} "
          f"{'p95 ratio':>9}")
    for page in PAGES:
        a, b = small[page], large[page]
        print(f"{page:<16} {a['p50']:8.1f} {a['p95']:8.1f} {b['p50']:8.1f} {b['p95']:8.1f} {a['queries']:5} "
              f"{b['queries']:5} {b['p95'] / a['p95']:9.2f}")


if __name__ == "__main__":
    main()
