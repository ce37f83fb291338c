"""Health of each part the portal depends on, each with a precise message.

Checks run in parallel with short timeouts so the page answers in about a
second even when several parts are down, and never later than
SLIPWAY_HEALTH_TIMEOUT (3 s) whatever hangs: a check still running then is
reported as timed out, by name, and left to end on its own timeouts.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass

from django.conf import settings
from django.utils.module_loading import import_string

from deploy import aws, budgets
from deploy.health import Down


@dataclass
class Check:
    name: str
    ok: bool
    message: str
    ms: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def check_database() -> str:
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    plan = MigrationExecutor(connection).migration_plan(MigrationExecutor(connection).loader.graph.leaf_nodes())
    if plan:
        raise Down(f"{len(plan)} unapplied migration(s): run `python manage.py migrate`")
    return f"{connection.vendor} reachable, migrations applied"


def check_redis() -> str:
    import redis

    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_timeout=budgets.HEALTH_PROBE,
                             socket_connect_timeout=budgets.HEALTH_PROBE).ping()
    except redis.RedisError as exc:
        raise Down(f"cannot reach Redis at {_public_url(settings.REDIS_URL)}: {exc}") from exc
    return f"PONG from {_public_url(settings.REDIS_URL)}"


def check_aws() -> str:
    import botocore.exceptions

    where = settings.AWS_ENDPOINT_URL or f"AWS {settings.AWS_REGION}"
    try:
        aws.client("lambda", timeout=budgets.HEALTH_AWS).list_functions(MaxItems=1)
    except botocore.exceptions.NoCredentialsError:
        raise Down(f"no AWS credentials found for {where} (environment, profile or instance role)") from None
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise Down(f"Lambda API at {where} not answering: {exc}") from exc
    return f"Lambda API answers at {where}"


QUEUES = ("deploys", "rollbacks")
START_DEPLOYS = "celery -A workers worker -Q deploys"
START_ROLLBACKS = "celery -A workers worker -Q rollbacks -c 1"
START_FEEDBACK = "celery -A workers worker -Q feedback"


def check_worker() -> str:
    """Some worker answers, each queue has a consumer, and rollbacks (with the
    sweeper, routed to the same queue) have a worker of their own: one that also
    takes deploys can be busy building for many minutes while a rollback waits."""
    from portal.celery import app

    try:
        replies = app.control.ping(timeout=1.0)
        consumed = app.control.inspect(timeout=1.0).active_queues() or {} if replies else {}
    except Exception as exc:  # kombu raises a variety of connection errors
        raise Down(f"cannot ask workers through the broker: {exc}") from exc
    if not replies:
        raise Down(f"no Celery worker answered within 1 s: start `{START_DEPLOYS}` and, for rollbacks and the "
                   f"sweeper, `{START_ROLLBACKS}`")
    queues = {node: {queue["name"] for queue in listed} for node, listed in consumed.items()}
    served = set().union(*queues.values())
    missing = [queue for queue in QUEUES if queue not in served]
    if missing:
        starts = {"deploys": START_DEPLOYS, "rollbacks": START_ROLLBACKS}
        raise Down(f"no worker consumes the {', '.join(missing)} queue: "
                   + " and ".join(f"start `{starts[queue]}`" for queue in missing))
    if not any("rollbacks" in names and "deploys" not in names for names in queues.values()):
        shared = sorted(node for node, names in queues.items() if "rollbacks" in names)
        raise Down(f"rollbacks share a worker with deploys ({', '.join(shared)}), so a rollback can wait behind "
                   f"builds: give rollbacks and the sweeper their own worker, `{START_ROLLBACKS}`")
    answering = f"{len(replies)} worker(s) answering: " + ", ".join(sorted(name for r in replies for name in r))
    if "feedback" not in served:  # deploys go on; GitLab statuses, notifications and drift checks wait
        answering += f"; no worker consumes the feedback queue (commit statuses, notifications and drift checks " \
                     f"wait): start `{START_FEEDBACK}`"
    return answering


CHECKS = {
    "database": check_database,
    "redis": check_redis,
    "aws": check_aws,
    "worker": check_worker,
}


def checks() -> dict:
    """The portal's own checks, plus those settings add: in local mode, the Docker
    engine, QEMU and the base images of the embedded stack (in production the web
    process has no business with the builders' engine)."""
    extra = {name: import_string(path) for name, path in settings.SLIPWAY_EXTRA_HEALTH_CHECKS.items()}
    return {**CHECKS, **extra}


def _run(name: str, check) -> Check:
    started = time.monotonic()
    try:
        ok, message = True, check()
    except Down as exc:
        ok, message = False, str(exc)
    except Exception as exc:  # a check must report, never crash the page
        ok, message = False, f"check crashed: {type(exc).__name__}: {exc}"
    finally:
        # The pool thread's own database connection must not leak.
        from django.db import connection

        connection.close()
    return Check(name, ok, message, int((time.monotonic() - started) * 1000))


def run_all() -> list[Check]:
    todo = checks()
    limit = settings.SLIPWAY_HEALTH_TIMEOUT
    pool = ThreadPoolExecutor(max_workers=len(todo), thread_name_prefix="health")
    futures = {name: pool.submit(_run, name, check) for name, check in todo.items()}
    done, _ = wait(futures.values(), timeout=limit)
    pool.shutdown(wait=False)  # nobody waits for a check that hangs; it ends on its own timeouts
    return [future.result() if future in done else
            Check(name, False, f"timed out: no answer within {limit:g} s", int(limit * 1000))
            for name, future in futures.items()]


_probing = threading.Lock()
_last: tuple[float, list[Check]] | None = None  # (monotonic time it ended, its answer)


def cached() -> list[Check]:
    """run_all(), at most one run at a time in this process and at most once per
    SLIPWAY_HEALTH_CACHE_SECONDS. /healthz is open to anyone and each run pings the
    broker and calls AWS: a flood of callers must not become a flood of probes. Callers
    that come while a run is in flight wait for it and share its answer; nobody is
    refused (a 429 would make a load balancer take the instance out)."""
    global _last
    window = settings.SLIPWAY_HEALTH_CACHE_SECONDS
    with _probing:
        if _last is not None and time.monotonic() - _last[0] < window:
            return _last[1]
        checks = run_all()
        _last = (time.monotonic(), checks)
        return checks


def _public_url(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}"
