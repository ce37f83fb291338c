"""Health of each part the portal depends on, each with a precise message.

Checks run in parallel with short timeouts so the page answers in about a
second even when several parts are down.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from django.conf import settings

from deploy import aws
from deploy import docker as docker_seam
from deploy.local import base_images
from portal.models import Architecture

BINFMT_AARCH64 = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")


@dataclass
class Check:
    name: str
    ok: bool
    message: str
    ms: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


class Down(Exception):
    """A check failed; the message says what and, where it helps, what to do."""


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
        redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        raise Down(f"cannot reach Redis at {_public_url(settings.REDIS_URL)}: {exc}") from exc
    return f"PONG from {_public_url(settings.REDIS_URL)}"


def check_docker() -> str:
    import docker.errors
    import requests

    try:
        info = docker_seam.client(timeout=3).version()
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise Down(f"Docker engine not answering: {exc}") from exc
    return f"engine {info.get('Version', '?')} ({info.get('Os', '?')}/{info.get('Arch', '?')})"


def check_qemu() -> str:
    remote = settings.SLIPWAY_DOCKER_HOSTS.get("arm64")
    if remote and remote != settings.SLIPWAY_DOCKER_HOSTS.get("x86_64"):
        return f"not needed: arm64 builds run on {remote}"
    try:
        state = BINFMT_AARCH64.read_text()
    except FileNotFoundError:
        raise Down("qemu-aarch64 is not registered in binfmt_misc: install qemu-user-static binfmt-support, "
                   "mount binfmt_misc and run `update-binfmts --enable qemu-aarch64`") from None
    except OSError as exc:
        raise Down(f"cannot read {BINFMT_AARCH64}: {exc}") from exc
    if not state.startswith("enabled"):
        raise Down("qemu-aarch64 is registered but disabled: run `update-binfmts --enable qemu-aarch64`")
    interpreter = next((line.split()[1] for line in state.splitlines() if line.startswith("interpreter")), "?")
    return f"arm64 binaries run through {interpreter}"


def check_aws() -> str:
    import botocore.exceptions

    where = settings.AWS_ENDPOINT_URL or f"AWS {settings.AWS_REGION}"
    try:
        aws.client("lambda", timeout=2, retries=1).list_functions(MaxItems=1)
    except botocore.exceptions.NoCredentialsError:
        raise Down(f"no AWS credentials found for {where} (environment, profile or instance role)") from None
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise Down(f"Lambda API at {where} not answering: {exc}") from exc
    return f"Lambda API answers at {where}"


def check_base_images() -> str:
    import docker.errors
    import requests

    wanted = {arch: image for arch, image in settings.SLIPWAY_BASE_IMAGES.items() if image}
    if not wanted:
        return "not used: functions build from their Dockerfile's default BASE_IMAGE"
    found = []
    try:
        engine = docker_seam.client(timeout=3)
        for arch, image in sorted(wanted.items()):
            try:
                attrs = engine.images.get(image).attrs
            except docker.errors.ImageNotFound:
                raise Down(f"{image} ({arch}) is missing: run `make run` to build the base images") from None
            docker_arch = Architecture.tag_suffix(arch)
            if attrs.get("Architecture") != docker_arch:
                raise Down(f"{image} is built for {attrs.get('Architecture')}, not {arch}")
            if image.startswith(base_images.REPOSITORY + ":"):
                label = (attrs.get("Config") or {}).get("Labels") or {}
                if label.get(base_images.LABEL_INPUTS) != base_images.inputs_digest(docker_arch):
                    raise Down(f"{image} is outdated (its inputs changed): `make run` rebuilds it")
            found.append(f"{image} {attrs.get('Size', 0) // 2**20} MB")
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise Down(f"cannot list images, Docker engine not answering: {exc}") from exc
    return ", ".join(found)


QUEUES = ("deploys", "rollbacks")


def check_worker() -> str:
    from workers.celery import app

    try:
        replies = app.control.ping(timeout=1.0)
        consumed = app.control.inspect(timeout=1.0).active_queues() or {} if replies else {}
    except Exception as exc:  # kombu raises a variety of connection errors
        raise Down(f"cannot ask workers through the broker: {exc}") from exc
    if not replies:
        raise Down("no Celery worker answered within 1 s: start one with "
                   "`celery -A workers worker -Q deploys,rollbacks`")
    served = {queue["name"] for queues in consumed.values() for queue in queues}
    missing = [queue for queue in QUEUES if queue not in served]
    if missing:
        raise Down(f"no worker consumes the {', '.join(missing)} queue: "
                   f"start one with `celery -A workers worker -Q {','.join(missing)}`")
    return f"{len(replies)} worker(s) answering: " + ", ".join(sorted(name for r in replies for name in r))


CHECKS = {
    "database": check_database,
    "redis": check_redis,
    "docker": check_docker,
    "qemu_arm64": check_qemu,
    "aws": check_aws,
    "base_images": check_base_images,
    "worker": check_worker,
}


def _run(name: str) -> Check:
    started = time.monotonic()
    try:
        ok, message = True, CHECKS[name]()
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
    with ThreadPoolExecutor(max_workers=len(CHECKS)) as pool:
        return list(pool.map(_run, CHECKS))


def _public_url(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}"
