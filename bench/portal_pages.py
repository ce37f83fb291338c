"""Server time and query counts of the portal's busiest pages at scale, on SQLite and Postgres.

Seeds one database with 1,000 functions x 100 releases and another with 10
functions x 100 releases (same shape), each served by its own long-lived
process; then, in rounds that alternate between the two sizes (small, large,
small, …, `--rounds` of each), requests the functions list, a function page and
a deployment page through Django's test client (in-process: server time
without the network). Prints p50/p95 over all rounds and the query counts side
by side with the ratio of p95s. Goal: equal query counts, p95 at 1,000
functions within 1.5x of p95 at 10.

    PYTHONPATH=. .venv/bin/python bench/portal_pages.py --database sqlite [--functions 1000] [--releases 100]
    python -m devstack bench bench/portal_pages.py --database postgres   # the bench stack's Postgres
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
import urllib.parse
from pathlib import Path

PAGES = ("functions list", "function page", "deployment page")


def seed(functions: int, releases: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from portal.deployments import plan
    from portal.models import (
        Build,
        Deployment,
        DeploymentStep,
        Environment,
        Function,
        Membership,
        create_environment_side_rows,
        create_side_rows,
    )

    user = get_user_model().objects.create_user("bench", "bench@example.org", "bench-password")
    now = timezone.now()
    made = Function.objects.bulk_create(
        Function(name=f"fn-{n:04}", repository_url=f"https://gitlab.example.com/team/fn-{n}.git",
                 ecr_repository=f"slipway/fn-{n}") for n in range(functions))
    create_side_rows(made)  # bulk_create skips save(), which makes them
    environments = Environment.objects.bulk_create(
        Environment(function=f, lambda_name=f"slipway-{f.name}") for f in made)
    create_environment_side_rows(environments)
    environment_of = {e.function_id: e for e in environments}
    Membership.objects.bulk_create(Membership(function=f, user=user, role="owner") for f in made)
    steps = plan.names(Deployment.Kind.DEPLOY)
    for function in made:
        builds = Build.objects.bulk_create(
            Build(function=function, commit_sha=f"{function.pk:08x}{r:032x}", architecture="arm64",
                  inputs_digest=f"{r:064x}", status="succeeded", digest=f"sha256:{r:064x}", size_bytes=2**27)
            for r in range(releases))
        deployments = Deployment.objects.bulk_create(
            Deployment(function=function, environment=environment_of[function.pk], build=b, trigger="webhook",
                       requested_by=user, ref="main",
                       commit_sha=b.commit_sha, commit_message=f"change {r}", commit_author="Dev",
                       status="succeeded", version=str(r + 1), started_at=now, finished_at=now, init_ms=300.0)
            for r, b in enumerate(builds))
        DeploymentStep.objects.bulk_create(
            DeploymentStep(deployment=d, name=name, position=i + 1, status="succeeded", output="ok",
                           started_at=now, finished_at=now)
            for d in deployments for i, name in enumerate(steps))
    middle = made[len(made) // 2]
    return {"function": middle.name, "deployment": middle.deployments.order_by("pk").last().pk}


def serve(functions: int, releases: int) -> None:
    """The child: seed, then answer `round N` lines on stdin with one JSON line of times."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    where = seed(functions, releases)
    client = Client()
    client.login(username="bench", password="bench-password")
    urls = {"functions list": "/functions/", "function page": f"/functions/{where['function']}/",
            "deployment page": f"/deployments/{where['deployment']}/"}
    for url in urls.values():  # warm-up, not counted
        for _ in range(5):
            assert client.get(url).status_code == 200, url
    print(json.dumps({"seed_s": time.perf_counter() - started}), flush=True)
    for line in sys.stdin:
        requests = int(line.split()[1])
        result = {}
        for page, url in urls.items():
            times, queries = [], 0
            for _ in range(requests):
                with CaptureQueriesContext(connection) as captured:
                    began = time.perf_counter()
                    response = client.get(url)
                    took = time.perf_counter() - began
                assert response.status_code == 200, (url, response.status_code)
                times.append(took * 1000)
                queries = len(captured.captured_queries)
            result[page] = {"times": times, "queries": queries}
        print(json.dumps(result), flush=True)


class Child:
    """One seeded database and the process that serves its pages."""

    def __init__(self, size: int, releases: int, database: str, tmp: str):
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", "SLIPWAY_LOCAL": "1",
               "SLIPWAY_STATE_DIR": tmp, "SLIPWAY_LOG_LEVEL": "ERROR", "DJANGO_ALLOWED_HOSTS": "testserver",
               "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
               "DATABASE_URL": _database_url(database, size, tmp)}
        self.size = size
        self.process = subprocess.Popen([sys.executable, __file__, "--child", str(size), str(releases)], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.seed_s = self._read()["seed_s"]

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.size}-function process ended (exit {self.process.wait()})")
        return json.loads(line)

    def round(self, requests: int) -> dict:
        self.process.stdin.write(f"round {requests}\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(60)


def _database_url(database: str, size: int, tmp: str) -> str:
    if database == "sqlite":
        return f"sqlite:///{tmp}/bench-{size}.sqlite3"
    pg = os.environ.get("SLIPWAY_TEST_POSTGRES_URL")
    if not pg:
        raise SystemExit("--database postgres: run it as `python -m devstack bench bench/portal_pages.py "
                         "--database postgres` (it needs the bench Postgres)")
    import psycopg
    from psycopg import sql

    name = f"bench_pages_{size}_{int(time.time())}"
    parts = urllib.parse.urlsplit(pg)
    with psycopg.connect(host=parts.hostname, port=parts.port, user=parts.username, password=parts.password,
                         dbname=parts.path.lstrip("/"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return pg.rsplit("/", 1)[0] + "/" + name


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--functions", type=int, default=1000)
    parser.add_argument("--releases", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=6, help="rounds per size, alternating small and large")
    parser.add_argument("--requests", type=int, default=10, help="requests per page in each round")
    parser.add_argument("--child", nargs=2, type=int)
    args = parser.parse_args()
    if args.child:
        serve(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="slipway-bench-") as tmp:
        small = Child(10, args.releases, args.database, tmp)
        large = Child(args.functions, args.releases, args.database, tmp)
        times = {size: {page: [] for page in PAGES} for size in ("small", "large")}
        queries = {size: {} for size in ("small", "large")}
        try:
            for _ in range(args.rounds):  # interleaved: both sizes see the same machine load
                for size, child in (("small", small), ("large", large)):
                    for page, got in child.round(args.requests).items():
                        times[size][page] += got["times"]
                        queries[size][page] = got["queries"]
        finally:
            small.close()
            large.close()
    print(f"{args.database}: seeded 10 x {args.releases} in {small.seed_s:.1f} s, "
          f"{args.functions} x {args.releases} in {large.seed_s:.1f} s; {args.rounds} interleaved rounds of "
          f"{args.requests} requests per page and size")
    print(f"{'page':<16} {'p50 10':>8} {'p95 10':>8} {'p50 big':>8} {'p95 big':>8} {'q 10':>5} {'q big':>5} "
          f"{'p95 ratio':>9}")
    for page in PAGES:
        a, b = _stats(times["small"][page]), _stats(times["large"][page])
        print(f"{page:<16} {a[0]:8.1f} {a[1]:8.1f} {b[0]:8.1f} {b[1]:8.1f} {queries['small'][page]:5} "
              f"{queries['large'][page]:5} {b[1] / a[1]:9.2f}")
    print("goal: equal query counts, p95 ratio <= 1.5x")


def _stats(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.95 + 0.5) - 1)]


if __name__ == "__main__":
    main()
