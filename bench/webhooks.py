"""Fifty concurrent GitLab deliveries against the portal served as in production,
beside the fairest baseline on the same server in the same run: a view that does
the least any durable receiver must — verifies the same token against the same
stored digest in constant time and inserts one row in one transaction
(bench/webhooks_urls.py).

`python -m devstack bench bench/webhooks.py [--rounds 8] [--workers 4]
[--database postgres|sqlite]` starts the bench stack (Redis, Postgres); this
script then migrates a fresh database (on that Postgres, or a new SQLite file),
registers one function with a secret token, and starts gunicorn
(sync workers, bound to 127.0.0.1, DEBUG off, production settings: no local mode,
a secret key and a Fernet key from the environment). Each round sends fifty
requests at once over fresh connections (as GitLab opens one per delivery):
twenty-five distinct pushes, each delivered twice with the same Idempotency-Key,
shuffled. Baseline rounds send the same requests to /bench/durable/<name>. Rounds
alternate (baseline, webhook, baseline, …) after one warm-up round of each. No Celery worker runs:
the deployments stay queued, their tasks wait in Redis.

Prints p50/p99 latency of each, the ratio of the p99s, the 5xx count and the
deployments created against the distinct pushes.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

from cryptography.fernet import Fernet

REPO = Path(__file__).resolve().parents[1]
FUNCTION = "bench-hook"  # bench-hook-0, bench-hook-1, …
TOKEN = "bench-" + secrets.token_urlsafe(24)
PER_ROUND, DISTINCT = 50, 25


def child(mode: str) -> None:
    """Runs inside the bench environment: set up the function, or count what happened."""
    import django

    django.setup()
    from portal.hooks import gitlab
    from portal.models import Deployment, Environment, Function, HookKeys, WebhookDelivery

    if mode.startswith("setup"):
        for n in range(int(mode.split(":")[1])):
            function = Function.objects.create(name=f"{FUNCTION}-{n}", ecr_repository=f"slipway/bench-{n}",
                                               repository_url="https://gitlab.example.com/team/b.git")
            Environment.objects.create(function=function, lambda_name=f"slipway-bench-{n}")
            HookKeys.objects.filter(function=function).update(
                webhook_secret_hash=gitlab.digest(os.environ["BENCH_TOKEN"]))
        return
    from bench.webhooks_urls import BASELINE_DETAIL

    received = WebhookDelivery.objects.exclude(detail=BASELINE_DETAIL)
    outcomes = {}
    for outcome in WebhookDelivery.Outcome.values:
        outcomes[outcome] = received.filter(outcome=outcome).count()
    took = sorted(received.exclude(took_ms=None).values_list("took_ms", flat=True))
    print(json.dumps({"deployments": Deployment.objects.count(), "outcomes": outcomes,
                      "server_p50": statistics.median(took) if took else None,
                      "server_p99": took[int(len(took) * 0.99) - 1] if took else None}))


def push_body(n: int, round_no: int) -> bytes:
    body = json.loads((REPO / "tests/fixtures/gitlab/push.json").read_text())
    after = uuid.uuid5(uuid.NAMESPACE_OID, f"{round_no}-{n}").hex + "deadbeef"
    body.update(after=after, checkout_sha=after, before="1" * 40)
    return json.dumps(body).encode()


def request(port: int, path: str, body: bytes, headers: dict) -> tuple[float, int]:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        # As the TLS-terminating proxy in front of a production portal forwards it.
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json",
                                                       "X-Forwarded-Proto": "https", **headers})
        response = conn.getresponse()
        response.read()
        return (time.perf_counter() - started) * 1000, response.status
    except OSError:
        return (time.perf_counter() - started) * 1000, 599
    finally:
        conn.close()


def fire(port: int, deliveries: list[tuple[str, bytes, dict]]) -> list[tuple[float, int]]:
    """All at once: every thread waits at the gate, then sends."""
    gate, results, lock = threading.Barrier(len(deliveries)), [], threading.Lock()

    def send(path, body, headers):
        gate.wait()
        result = request(port, path, body, headers)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=send, args=d) for d in deliveries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def round_deliveries(round_no: int, functions: int) -> list[tuple[str, bytes, dict]]:
    """Twenty-five pushes (push n to function n mod `functions`), each delivered twice, shuffled."""
    deliveries = []
    for n in range(DISTINCT):
        body, key = push_body(n, round_no), str(uuid.uuid4())
        for _ in range(PER_ROUND // DISTINCT):
            headers = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": TOKEN, "Idempotency-Key": key,
                       "X-Gitlab-Event-UUID": key, "X-Gitlab-Webhook-UUID": str(uuid.uuid4()),
                       "User-Agent": "GitLab/18.6.0"}
            deliveries.append((f"/hooks/gitlab/{FUNCTION}-{n % functions}", body, headers))
    random.Random(round_no).shuffle(deliveries)
    return deliveries


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * q + 0.5) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--functions", type=int, default=1, help="spread the pushes over this many functions")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    pg = os.environ.get("SLIPWAY_TEST_POSTGRES_URL")
    if not pg:
        raise SystemExit("run it as `python -m devstack bench bench/webhooks.py` (it needs the bench Postgres)")
    port = int(os.environ.get("SLIPWAY_BENCH_WEB_PORT", "8098"))
    database = f"bench_webhooks_{int(time.time())}"
    if args.database == "postgres":
        create_database(pg, database)
        database_url = pg.rsplit("/", 1)[0] + "/" + database
    else:  # as `make run` keeps it: one file, WAL (portal/core/env.py's SQLite options)
        sqlite = REPO / "var" / "bench" / f"{database}.sqlite3"
        sqlite.parent.mkdir(parents=True, exist_ok=True)
        database_url = f"sqlite:///{sqlite}"
    env = {**{k: v for k, v in os.environ.items() if k != "SLIPWAY_LOCAL"},
           "DJANGO_SETTINGS_MODULE": "bench.webhooks_settings", "DJANGO_DEBUG": "0",
           "DATABASE_URL": database_url, "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
           "SLIPWAY_FERNET_KEY": Fernet.generate_key().decode(), "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
           "SLIPWAY_LOG_LEVEL": "WARNING", "SLIPWAY_BEHIND_TLS_PROXY": "1",
           "SLIPWAY_STATE_DIR": str(REPO / "var" / "bench" / "webhooks"),
           "BENCH_TOKEN": TOKEN, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, cwd=REPO, check=True)
    subprocess.run([sys.executable, __file__, "--child", f"setup:{args.functions}"], env=env, cwd=REPO, check=True)
    log_path = REPO / "var" / "bench" / "webhooks-gunicorn.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        samples = serve_and_measure(env, port, log, args)
    counted = json.loads(subprocess.run([sys.executable, __file__, "--child", "count"], env=env, cwd=REPO, check=True,
                                        capture_output=True, text=True).stdout.strip().splitlines()[-1])
    report(samples, counted, args)
    return 0


def serve_and_measure(env: dict, port: int, log, args) -> dict:
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "portal.wsgi:application", "--workers",
                               str(args.workers), "--bind", f"127.0.0.1:{port}", "--timeout", "60"],
                              env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_up(port)
        samples = {"baseline": [], "hook": []}
        for round_no in range(args.rounds + 1):
            deliveries = round_deliveries(round_no, args.functions)
            for kind in ("baseline", "hook"):
                sent = [(baseline_path(path), body, headers) if kind == "baseline" else (path, body, headers)
                        for path, body, headers in deliveries]
                results = fire(port, sent)
                if round_no:  # round 0 warms both up
                    samples[kind] += results
                else:
                    samples[kind + "_warmup"] = results
        # One at a time: the service time of each, without queueing.
        alone = round_deliveries(args.rounds + 1, args.functions)
        samples["baseline_alone"] = [request(port, baseline_path(path), body, headers) for path, body, headers in alone]
        samples["hook_alone"] = [request(port, path, body, headers) for path, body, headers in alone]
        return samples
    finally:
        server.terminate()
        server.wait(30)


def baseline_path(hook_path: str) -> str:
    """The durable baseline's URL for the same function as a delivery's."""
    return "/bench/durable/" + hook_path.rsplit("/", 1)[-1]


def create_database(url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    parts = urllib.parse.urlsplit(url)
    with psycopg.connect(host=parts.hostname, port=parts.port, user=parts.username, password=parts.password,
                         dbname=parts.path.lstrip("/"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def wait_up(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if request(port, "/bench/durable/-", b"{}", {})[1] == 401:
                return
        except Exception:
            pass
        time.sleep(0.3)
    raise SystemExit("gunicorn did not answer within 60 s; see var/bench/webhooks-gunicorn.log")


def report(samples: dict, counted: dict, args) -> None:
    rounds = args.rounds + 2  # the warm-up round and the one-at-a-time round count too
    print(f"gunicorn {args.workers} sync workers, {args.database}, DEBUG off; {args.rounds} measured rounds "
          f"of {PER_ROUND} concurrent requests each (+1 warm-up round); pushes spread over "
          f"{args.functions} function(s)")
    print(f"{'':<22} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'5xx':>5} {'n':>5}")
    for kind, label in (("baseline", "durable baseline"), ("hook", "webhook deliveries")):
        times = [t for t, _ in samples[kind]]
        errors = sum(1 for _, status in samples[kind] + samples[kind + "_warmup"] if status >= 500)
        print(f"{label:<22} {statistics.median(times):8.1f} {pct(times, 0.99):8.1f} {max(times):8.1f} "
              f"{errors:5} {len(times):5}")
    for kind, label in (("baseline_alone", "baseline, one at a time"), ("hook_alone", "webhook, one at a time")):
        times = [t for t, _ in samples[kind]]
        print(f"{label:<22} {statistics.median(times):8.1f} {pct(times, 0.99):8.1f} {max(times):8.1f} "
              f"{sum(1 for _, status in samples[kind] if status >= 500):5} {len(times):5}")
    ratio = pct([t for t, _ in samples["hook"]], 0.99) / pct([t for t, _ in samples["baseline"]], 0.99)
    statuses = sorted({status for _, status in samples["hook"] + samples["hook_warmup"] + samples["hook_alone"]})
    print(f"p99 webhook / p99 durable baseline (token check + one row, one transaction): {ratio:.2f}x "
          f"(goal <= 2x); webhook statuses: {statuses}")
    print(f"server-side time per delivery (took_ms, to the answer before commit): "
          f"p50 {counted['server_p50']:.1f} ms, p99 {counted['server_p99']:.1f} ms")
    print(f"deployments created: {counted['deployments']} for {rounds * DISTINCT} distinct pushes "
          f"({rounds * PER_ROUND} deliveries; outcomes {counted['outcomes']})")


if __name__ == "__main__":
    sys.exit(main())
