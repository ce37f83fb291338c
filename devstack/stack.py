"""What runs in the embedded stack, and with which settings.

Two profiles on different ports, so the test suite can run beside a portal
someone is using: `run` (Redis 6379, AWS plane 4566, web 8000, state kept
across clean restarts) and `test` (Redis 6399, AWS plane 4599, Postgres 5499,
nothing kept). `bench` is like `test` on its own ports. Postgres always runs
for `test` and `bench` (see postgres.py); `run` stays on SQLite unless
SLIPWAY_LOCAL_POSTGRES=1 (then on SLIPWAY_PG_PORT, 5432, as DATABASE_URL).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from deploy import arch as arches
from devstack import base_images, postgres, system
from devstack.common import REPO_ROOT, StackError, port_is_open, run, say, state_dir
from devstack.runner import Runner, Service

PLANE_REQUIREMENTS = Path(__file__).with_name("ministack-requirements.txt")
# The local plane's fixed, documented dummy credentials: not secrets.
PLANE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    if not raw.isdigit() or not 1024 <= int(raw) <= 65535:
        raise StackError(f"{name}={raw!r} is not a port number between 1024 and 65535")
    return int(raw)


@dataclass(frozen=True)
class Profile:
    name: str
    redis_port: int
    aws_port: int
    web_port: int
    persist: bool
    pg_port: int = 5432
    with_postgres: bool = False  # start the private Postgres cluster (postgres.py)

    @classmethod
    def for_run(cls) -> Profile:
        local_pg = os.environ.get("SLIPWAY_LOCAL_POSTGRES", "").strip().lower() in ("1", "true", "yes", "on")
        return cls("run", _port("SLIPWAY_REDIS_PORT", 6379), _port("SLIPWAY_AWS_PORT", 4566),
                   _port("SLIPWAY_WEB_PORT", 8000), persist=True,
                   pg_port=_port("SLIPWAY_PG_PORT", 5432), with_postgres=local_pg)

    @classmethod
    def for_test(cls) -> Profile:
        return cls("test", _port("SLIPWAY_TEST_REDIS_PORT", 6399), _port("SLIPWAY_TEST_AWS_PORT", 4599),
                   _port("SLIPWAY_TEST_WEB_PORT", 8099), persist=False,
                   pg_port=_port("SLIPWAY_TEST_PG_PORT", 5499), with_postgres=True)

    @classmethod
    def for_bench(cls) -> Profile:
        return cls("bench", _port("SLIPWAY_BENCH_REDIS_PORT", 6398), _port("SLIPWAY_BENCH_AWS_PORT", 4598),
                   _port("SLIPWAY_BENCH_WEB_PORT", 8098), persist=False,
                   pg_port=_port("SLIPWAY_BENCH_PG_PORT", 5498), with_postgres=True)

    @property
    def env_prefix(self) -> str:
        return {"test": "SLIPWAY_TEST_", "bench": "SLIPWAY_BENCH_"}.get(self.name, "SLIPWAY_")

    @property
    def postgres_url(self) -> str:
        return postgres.url(self.pg_port)

    @property
    def aws_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.aws_port}"

    @property
    def instance(self) -> str:
        """ministack removes containers labelled with its own instance at boot:
        a name unique to this profile and port keeps it off everyone else's."""
        return f"slipway-{self.name}-{self.aws_port}"

    def dir(self, *parts: str) -> Path:
        path = state_dir().joinpath(self.name, *parts)
        path.mkdir(parents=True, exist_ok=True)
        return path


def portal_env(profile: Profile) -> dict[str, str]:
    """Environment for Django, Celery and tests on this profile."""
    env = {
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "SLIPWAY_LOCAL": "1",
        "SLIPWAY_STATE_DIR": str(profile.dir()),
        "REDIS_URL": f"redis://127.0.0.1:{profile.redis_port}/0",
        "AWS_ENDPOINT_URL": profile.aws_endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        **PLANE_CREDENTIALS,
        # The plane advertises a registry host nobody can reach; push here instead.
        "SLIPWAY_REGISTRY_HOST": f"127.0.0.1:{profile.aws_port}",
        "SLIPWAY_BASE_IMAGE_ARM64": base_images.image_tag(arches.ARM64.docker),
        "SLIPWAY_BASE_IMAGE_X86_64": base_images.image_tag(arches.X86_64.docker),
        "SLIPWAY_PYTHON_VERSION": base_images.PYTHON_VERSION,
        "SLIPWAY_BUILDER_IMAGE": base_images.image_tag(arches.host().docker),
        "SLIPWAY_MINISTACK_BIN": str(plane_venv() / "bin" / "ministack"),
        "SLIPWAY_BRIDGE_GATEWAY": _gateway_or_empty(),
        "SLIPWAY_AXE_JS": str(axe_script()),
    }
    if profile.with_postgres and profile.persist:
        env["DATABASE_URL"] = profile.postgres_url
    elif profile.with_postgres:
        # Not DATABASE_URL: the main test pass stays on SQLite; `make test`
        # runs the tests marked `postgres` again with DATABASE_URL set to this.
        env["SLIPWAY_TEST_POSTGRES_URL"] = profile.postgres_url
    return env


def _gateway_or_empty() -> str:
    try:
        return system.bridge_gateway()
    except Exception:
        return ""


def plane_venv() -> Path:
    return state_dir() / "venvs" / "ministack"


def ensure_plane_venv() -> str:
    """ministack in its own virtualenv: it pins a botocore of its own."""
    venv = plane_venv()
    marker = venv / ".slipway-requirements"
    digest = hashlib.sha256(PLANE_REQUIREMENTS.read_bytes()).hexdigest()
    if marker.exists() and marker.read_text() == digest and (venv / "bin" / "ministack").exists():
        return "cached"
    say("creating the local AWS plane's virtualenv (ministack)")
    shutil.rmtree(venv, ignore_errors=True)
    run([sys.executable, "-m", "venv", str(venv)], what="creating the ministack virtualenv failed")
    run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
         "-r", str(PLANE_REQUIREMENTS)], what="installing ministack failed",
        fix="check that PyPI is reachable through pip's configured index", timeout=900)
    marker.write_text(digest)
    return "installed"


# axe-core, the accessibility rules the browser tests run in every page they visit (npm, MPL-2.0).
AXE_CORE = "axe-core@4.14.1"


def axe_script() -> Path:
    return state_dir() / "node" / "node_modules" / "axe-core" / "axe.min.js"


def ensure_axe() -> str:
    """axe-core from npm under var/node: a pinned version, installed once."""
    script = axe_script()
    marker = script.parents[2] / ".slipway-axe"
    if script.exists() and marker.exists() and marker.read_text() == AXE_CORE:
        return "cached"
    run(["npm", "install", "--prefix", str(script.parents[2]), "--no-audit", "--no-fund", "--no-save", AXE_CORE],
        what=f"npm install {AXE_CORE} failed", fix="check that the npm registry is reachable through npm's config",
        timeout=300)
    marker.write_text(AXE_CORE)
    return "installed"


def prepare() -> list[tuple[str, str, float]]:
    """Machine-level setup, idempotent. Returns (part, outcome, seconds) per part."""
    import docker

    timings = []

    def timed(part: str, fn, *args):
        started = time.monotonic()
        outcome = fn(*args)
        timings.append((part, outcome or "ok", time.monotonic() - started))
        say(f"{part}: {outcome or 'ok'} ({time.monotonic() - started:.1f} s)")

    timed("debian packages", lambda: system.ensure_packages() or "present")
    timed("docker engine", system.ensure_docker)
    timed("qemu arm64", system.ensure_qemu)
    # Independent and mostly waiting on downloads: the plane's virtualenv and
    # both base images are made side by side.
    engine = docker.from_env(timeout=600)
    jobs = [("aws plane venv", ensure_plane_venv), ("axe-core", ensure_axe)]
    jobs += [(f"base image {arch.docker}", functools.partial(base_images.ensure, engine, arch.docker))
             for arch in arches.ALL]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(timed, part, fn) for part, fn in jobs]
    for future in futures:
        future.result()  # the first StackError, if any, stops the run
    return timings


def _free(port: int, what: str, env_name: str, host: str = "127.0.0.1") -> None:
    if port_is_open(host, port):
        raise StackError(f"port {host}:{port} for {what} is already in use",
                         f"stop what listens there (ss -ltnp 'sport = :{port}') or set {env_name}")


def check_ports(profile: Profile) -> None:
    """Refuse before anything starts when a port of this profile is taken."""
    prefix = profile.env_prefix
    _free(profile.redis_port, "Redis", f"{prefix}REDIS_PORT")
    _free(profile.aws_port, "the local AWS plane", f"{prefix}AWS_PORT")
    _free(profile.web_port, "the web server", f"{prefix}WEB_PORT")
    if profile.with_postgres:
        _free(profile.pg_port, "Postgres", f"{prefix}PG_PORT")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status < 500
    except Exception:
        return False


def start_infrastructure(runner: Runner, profile: Profile) -> None:
    """Redis, Postgres (when the profile wants it), the AWS plane and its relay onto the Docker bridge."""
    prefix = profile.env_prefix
    _free(profile.redis_port, "Redis", f"{prefix}REDIS_PORT")
    runner.start(Service(
        "redis",
        ["redis-server", "--bind", "127.0.0.1", "--port", str(profile.redis_port), "--save", "",
         "--appendonly", "no", "--dir", str(profile.dir("redis")), "--protected-mode", "yes"],
        ready=lambda: port_is_open("127.0.0.1", profile.redis_port),
        fix="see the redis lines above",
    ))
    if profile.with_postgres:
        _free(profile.pg_port, "Postgres", f"{prefix}PG_PORT")
        postgres.start(runner, profile.dir(), profile.pg_port, throwaway=not profile.persist)
    _free(profile.aws_port, "the local AWS plane", f"{prefix}AWS_PORT")
    plane_env = {
        "BIND_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(profile.aws_port),
        "MINISTACK_HOSTNAME": profile.instance,
        "MINISTACK_REGION": "us-east-1",
        "PERSIST_STATE": "1" if profile.persist else "0",
        "STATE_DIR": str(profile.dir("aws")),
        "TMPDIR": str(profile.dir("tmp")),
    }
    runner.start(Service(
        "aws", [str(plane_venv() / "bin" / "ministack")], env=plane_env,
        ready=lambda: _http_ok(f"{profile.aws_endpoint}/_ministack/health"),
        ready_timeout=90, stop_timeout=20, fix="see the aws lines above",
    ))
    # Lambda containers reach the plane at host.docker.internal (the bridge's
    # gateway); the plane listens on loopback only, so relay that one address.
    gateway = system.bridge_gateway()
    _free(profile.aws_port, "the AWS plane relay on the Docker bridge", f"{prefix}AWS_PORT", host=gateway)
    runner.start(Service(
        "relay",
        ["socat", f"TCP-LISTEN:{profile.aws_port},bind={gateway},fork,reuseaddr",
         f"TCP:127.0.0.1:{profile.aws_port}"],
        ready=lambda: port_is_open(gateway, profile.aws_port),
        fix="is socat installed and the Docker bridge up?",
    ))


def _worker(profile: Profile, env: dict[str, str], name: str, *, queue: str, concurrency: int) -> Service:
    """A Celery worker process for one queue; its node name carries the profile and the queue, so none clash."""
    return Service(
        name,
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queue, "-c", str(concurrency),
         "--loglevel", "INFO", "-n", f"slipway-{profile.name}-{queue}@%h"],
        env=env, cwd=REPO_ROOT, fix=f"see the {name} lines above",
    )


def start_portal(runner: Runner, profile: Profile) -> None:
    """Migrations, first-run data, then the Celery worker, beat and the web server."""
    env = {**os.environ, **portal_env(profile)}
    py = sys.executable
    run([py, "manage.py", "migrate", "--noinput"], what="database migrations failed", env=env, cwd=REPO_ROOT)
    out = run([py, "manage.py", "bootstrap_local"], what="creating the admin user and the detector function failed",
              env=env, cwd=REPO_ROOT)
    if out.strip():
        print(out.rstrip(), flush=True)
    portal = portal_env(profile)
    runner.start(_worker(profile, portal, "worker", queue="deploys", concurrency=2))
    # Rollbacks never wait behind builds: their own queue, their own process.
    runner.start(_worker(profile, portal, "rollback", queue="rollbacks", concurrency=1))
    # Commit statuses, notifications and drift checks: a slow receiver never holds up the others.
    runner.start(_worker(profile, portal, "feedback", queue="feedback", concurrency=2))
    runner.start(Service(
        "beat",
        [py, "-m", "celery", "-A", "workers", "beat", "--loglevel", "INFO",
         "--schedule", str(profile.dir() / "celerybeat-schedule")],
        env=portal, cwd=REPO_ROOT, fix="see the beat lines above",
    ))
    _free(profile.web_port, "the web server", "SLIPWAY_WEB_PORT")
    runner.start(Service(
        "web", [py, "manage.py", "runserver", f"127.0.0.1:{profile.web_port}", "--noreload"],
        env=portal, cwd=REPO_ROOT,
        ready=lambda: _http_ok(f"http://127.0.0.1:{profile.web_port}/healthz") or
        port_is_open("127.0.0.1", profile.web_port),
        fix="see the web lines above",
    ))
