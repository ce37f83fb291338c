"""Fixtures for pipeline tests: a real Celery worker, a fixture function in a
local git repository, and cleanup of everything they create in Docker and in
the local AWS plane."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy import aws
from tests.conftest import REPO_ROOT, TEST_LABEL, Private, create_function, stack_env, wait_for

DOCKERFILE = """\
ARG BASE_IMAGE=public.ecr.aws/lambda/python:3.12
FROM ${BASE_IMAGE}
COPY app.py ${LAMBDA_TASK_ROOT}/
CMD ["app.handler"]
"""
APP = """\
def handler(event, context):
    if event.get("fail"):
        return {{"error": {{"code": "smoke", "message": "asked to fail"}}}}
    return {{"release": "{release}", "echo": event}}
"""


def slow_dockerfile(marker: str, seconds: int) -> str:
    """The fixture Dockerfile with a RUN step that takes `seconds` (under QEMU for
    arm64); `marker` keeps BuildKit from answering it from an earlier run's cache
    and names its process."""
    return DOCKERFILE.replace("COPY", f"RUN echo {marker} && sleep {seconds}\nCOPY", 1)


def processes(*needles: str) -> list[int]:
    """Pids of live (not zombie) processes whose command line holds every needle."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and all(needle in cmdline for needle in needles):
            found.append(int(entry.name))
    return found


class Repo:
    """A git repository on disk, committed to with plain git."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True)
        self.git("init", "--quiet", "--initial-branch=main")

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=Slipway Tests", "-c", "user.email=tests@example.org",
                               *args], cwd=self.path, check=True, capture_output=True, text=True).stdout.strip()

    def commit(self, message: str, files: dict[str, str]) -> str:
        for name, text in files.items():
            (self.path / name).write_text(text)
        self.git("add", "-A")
        self.git("commit", "--quiet", "-m", message)
        return self.git("rev-parse", "HEAD")

    def release(self, release: str, dockerfile: str = DOCKERFILE) -> str:
        return self.commit(f"release {release}", {"Dockerfile": dockerfile, "app.py": APP.format(release=release)})


class Worker:
    """A real Celery worker process on the test stack, restartable and killable."""

    def __init__(self, log: Path, faults: Path, queues: str = "deploys,rollbacks", concurrency: int = 2,
                 env: dict | None = None):
        self.log, self.faults, self.proc, self.node = log, faults, None, ""
        self.queues, self.concurrency, self.env = queues, concurrency, env or {}

    def start(self) -> None:
        self.node = f"slipway-pytest-{os.getpid()}-{self.queues.replace(',', '-')}-{time.time_ns()}@localhost"
        # An hour of heartbeat window: no sweep runs in these workers anyway, and a test
        # about a lost process proves that its worker, not the sweeper, settled the row.
        # Rollouts: a "minute" is 3 s and the tick 1 s (a setting, never a mock: test_rollout.py).
        env = {**os.environ, "SLIPWAY_WORKER_FOR_TESTS": "1", "SLIPWAY_TESTING": "1", "SLIPWAY_HEARTBEAT_STALE": "3600",
               "SLIPWAY_AWS_CALLS_ROLE": "worker", "SLIPWAY_ROLLOUT_MINUTE": "3", "SLIPWAY_ROLLOUT_TICK": "1",
               "SLIPWAY_FAULTS_FILE": str(self.faults), "DJANGO_SETTINGS_MODULE": "tests.settings", **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", self.queues, "-c", str(self.concurrency),
             "-n", self.node, "--without-mingle", "--without-gossip", "--loglevel", "INFO"],
            env=env, cwd=REPO_ROOT, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        from workers.celery import app

        wait_for(lambda: app.control.ping(destination=[self.node], timeout=0.5), 60, "the test worker to start")

    def kill(self) -> None:
        """SIGKILL the whole worker: main process and pool children, as a host crash would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def faults(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "faults.json"
    path.write_text("[]")
    return path


@pytest.fixture(scope="session")
def worker(django_db_setup, django_db_blocker, faults, tmp_path_factory):
    stack_env("REDIS_URL")
    proc = Worker(tmp_path_factory.mktemp("worker") / "worker.log", faults)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def workers_apart(worker, faults, tmp_path):
    """The production layout, for one test: a deploys-only worker with one process
    and a rollbacks worker. The session's combined worker steps aside meanwhile."""
    worker.stop()
    deploys = Worker(tmp_path / "deploys.log", faults, queues="deploys", concurrency=1)
    rollbacks = Worker(tmp_path / "rollbacks.log", faults, queues="rollbacks", concurrency=1)
    try:
        deploys.start()
        rollbacks.start()
        yield deploys, rollbacks
    finally:
        deploys.kill()  # a build may still run: it dies with its process (PR_SET_PDEATHSIG)
        rollbacks.stop()
        worker.start()


@pytest.fixture
def inject(faults):
    """Write faults for the worker's boto3 seam; cleared after the test."""
    def write(*entries: dict) -> None:
        faults.write_text(json.dumps(list(entries)))
    yield write
    faults.write_text("[]")


@pytest.fixture
def repo(tmp_path) -> Repo:
    return Repo(tmp_path / "repo")


def remove_from_plane(lambda_name: str, repository: str) -> None:
    """Delete a test's Lambda and ECR repository from the plane, whatever state they are in."""
    aws.reset()
    for cleanup in (lambda: aws.client("lambda").delete_function(FunctionName=lambda_name),
                    lambda: aws.client("ecr").delete_repository(repositoryName=repository, force=True)):
        with contextlib.suppress(Exception):
            cleanup()


def _function_on_the_plane(repo, unique, docker_client, architecture: str):
    """A tiny function on the local base image, removed from the plane and Docker afterwards."""

    function = create_function(
        name=f"fx-{unique}", repository_url=str(repo.path), ecr_repository=f"slipway-test/fx-{unique}",
        lambda_name=f"slipway-test-fx-{unique}", memory_mb=256, timeout_s=30, smoke_event={"smoke": True},
        execution_role_arn="arn:aws:iam::000000000000:role/slipway-test", architecture=architecture,
    )
    yield function
    remove_from_plane(function.first_environment.lambda_name, function.ecr_repository)
    remove_images(docker_client, docker_client.images.list(filters={"label": f"slipway.function={function.name}"}),
                  ours=lambda tag: function.name in tag or function.ecr_repository in tag)


@pytest.fixture
def fixture_function(transactional_db, repo, unique, docker_client):
    """amd64: the pipeline tests are not about arm64, and run natively (no QEMU) this way."""
    yield from _function_on_the_plane(repo, unique, docker_client, "x86_64")


@pytest.fixture
def arm64_function(transactional_db, repo, unique, docker_client):
    """For the tests that are about arm64: QEMU builds and runs, architecture checks."""
    yield from _function_on_the_plane(repo, unique, docker_client, "arm64")


def wait_done(deployment, timeout: float = 240):
    def done():
        deployment.refresh_from_db()
        return deployment.is_terminal
    wait_for(done, timeout, f"deployment #{deployment.pk} to end", interval=0.5)
    return deployment


def invoke_live(function) -> dict:
    from deploy import lambdas

    invocation = lambdas.invoke(function.first_environment.lambda_name, function.first_environment.alias, {"probe": 1})
    assert not invocation.error, invocation.result
    return invocation.result


__all__ = ["Repo", "Worker", "wait_done", "invoke_live", "slow_dockerfile", "processes", "TEST_LABEL"]


# --- One released function per session ------------------------------------------------
# Pages, the API and the console need a function with history, not a pipeline run:
# its two releases are seeded once per session through the same deploy/ calls the
# pipeline makes (push, create, update, publish, alias), then each test gets rows
# that describe them. Tests that move the alias have it put back afterwards.

RELEASED_HANDLER = """\
def handler(event, context):
    return {{"release": "{release}", "echo": event}}
"""


class Released:
    """What the session's released function holds on the plane."""

    def __init__(self, name: str, lambda_name: str, repository: str):
        self.name, self.lambda_name, self.repository = name, lambda_name, repository
        self.releases: list[dict] = []  # {"release", "commit", "digest", "version", "inputs_digest"}


@pytest.fixture(scope="session")
def released_plane(docker_client, tmp_path_factory):
    """An amd64 Lambda with versions 1 ("one") and 2 ("two"), alias live -> 2, seeded once."""
    import hashlib

    from deploy import ecr, lambdas
    from tests.conftest import build_handler_image

    stack_env("AWS_ENDPOINT_URL")
    suffix = hashlib.sha256(str(tmp_path_factory.getbasetemp()).encode()).hexdigest()[:8]
    plane = Released(f"released-{suffix}", f"slipway-test-released-{suffix}", f"slipway-test/released-{suffix}")
    registry = os.environ["SLIPWAY_REGISTRY_HOST"]
    repository_uri = ecr.ensure_repository(plane.repository)
    docker = docker_seam_client()
    ecr.login(docker, ecr.registry_host(repository_uri, registry))
    config = lambdas.Settings(name=plane.lambda_name, architecture="x86_64", memory_mb=256, timeout_s=30,
                              environment={}, role_arn="arn:aws:iam::000000000000:role/slipway-test")
    try:
        for number, release in enumerate(("one", "two"), start=1):
            local = f"slipway-test/released-{suffix}:{release}"
            build_handler_image(docker_client, local, "amd64", RELEASED_HANDLER.format(release=release).encode())
            commit = hashlib.sha1(f"{suffix}{release}".encode()).hexdigest()  # noqa: S324 - a fake commit id
            tag = f"{commit[:12]}-{suffix}-amd64"
            image = ecr.push(docker, local, repository_uri, tag, host_override=registry, on_line=lambda _: None)
            uri = ecr.image_uri(repository_uri, image.digest, registry)
            if number == 1:
                lambdas.create(config, uri, f"{commit[:12]} {image.digest}")
            else:
                lambdas.update_code(config, uri)
            after = lambdas.wait_updated(plane.lambda_name)
            version = lambdas.publish(plane.lambda_name, f"{commit[:12]} {image.digest}", after=after, image_uri=uri)
            lambdas.point_alias(plane.lambda_name, "live", version)
            plane.releases.append({"release": release, "commit": commit, "digest": image.digest,
                                   "version": version, "tag": tag, "uri": uri})
        yield plane
    finally:
        remove_from_plane(plane.lambda_name, plane.repository)
        built = docker_client.images.list(name=f"slipway-test/released-{suffix}")
        remove_plane_containers(docker_client, {image.id for image in built})
        remove_images(docker_client, built, ours=lambda tag: f"released-{suffix}" in tag)
        remove_pulled(docker_client, f"{registry}/{plane.repository}")


def docker_seam_client():
    from deploy import docker as docker_seam

    return docker_seam.client()


@pytest.fixture
def released_function(transactional_db, released_plane):
    """The session's released function as rows: two succeeded deploys, version 2 live."""
    from deploy import lambdas
    from portal.models import Build, Deployment

    function = create_function(
        name=released_plane.name, repository_url="https://gitlab.example.com/team/released.git",
        ecr_repository=released_plane.repository, lambda_name=released_plane.lambda_name, architecture="x86_64",
        memory_mb=256, timeout_s=30, smoke_event={"smoke": True},
        execution_role_arn="arn:aws:iam::000000000000:role/slipway-test")
    previous = ""
    for release in released_plane.releases:
        build = Build.objects.create(function=function, commit_sha=release["commit"], architecture="x86_64",
                                     inputs_digest=release["tag"], status=Build.Status.SUCCEEDED,
                                     digest=release["digest"], image_uri=release["uri"], platform="linux/amd64")
        Deployment.objects.create(function=function, build=build, trigger="cli", ref="main",
                                  commit_sha=release["commit"], status=Deployment.Status.SUCCEEDED,
                                  version=release["version"], previous_version=previous)
        previous = release["version"]
    yield function
    live = released_plane.releases[-1]["version"]
    if lambdas.alias_version(released_plane.lambda_name, "live") != live:  # a test moved it: put it back
        lambdas.point_alias(released_plane.lambda_name, "live", live)


# --- The real detector, deployed once per session ----------------------------------------------
# The console's end-to-end tests need function/ itself behind an alias, not the echo handler
# above. It is built for amd64 (the console is not about arm64; natively it starts in well
# under a second) once per session, with the same cached build as tests/detector_fixtures,
# and seeded through the deploy/ calls the pipeline makes: version 1 is function/ as it is,
# version 2 the same code with every box moved 20 px right and down; live -> 1.

SHIFT = 20
# Where the image's handler string (detector.process_image) finds process_image: the tail rebinds it there.
SHIFTED_HANDLER_FILE = "src/detector/__init__.py"
SHIFTED_HANDLER_TAIL = f'''

# --- test only: every box moved {SHIFT} px right and down -------------------------------------
_unshifted_process_image = process_image


def process_image(event, context=None):
    answer = _unshifted_process_image(event, context)
    for box in answer.get("boxes", []) if isinstance(answer, dict) else []:
        box["x"] += {SHIFT}
        box["y"] += {SHIFT}
    return answer
'''


def shifted_function_dir(into: Path) -> Path:
    """A copy of function/ whose handler moves every box by SHIFT pixels."""
    import shutil

    from tests.detector_fixtures import FUNCTION_DIR

    shutil.copytree(FUNCTION_DIR, into, ignore=shutil.ignore_patterns("__pycache__", "samples"))
    handler = into / SHIFTED_HANDLER_FILE
    handler.write_text(handler.read_text() + SHIFTED_HANDLER_TAIL)
    return into


class DeployedDetector:
    def __init__(self, name: str, lambda_name: str, repository: str):
        self.name, self.lambda_name, self.repository = name, lambda_name, repository
        self.versions: dict[str, dict] = {}  # "real" / "shifted" -> {"version", "digest", "uri", "commit"}


def seed_detector(lambda_name: str, repository: str, releases: list[tuple[str, str]], architecture: str,
                  timeout_s: int = 30) -> dict[str, dict]:
    """Push each (release, local image tag) in order and publish it as a version of
    `lambda_name`, as the pipeline would (by digest, guarded publish); `live` -> the first.
    Returns release -> {"version", "digest", "uri", "commit"}. Also used by bench/console.py."""
    import hashlib

    from deploy import ecr, lambdas

    registry = os.environ["SLIPWAY_REGISTRY_HOST"]
    config = lambdas.Settings(name=lambda_name, architecture=architecture, memory_mb=1024, timeout_s=timeout_s,
                              environment={}, role_arn="arn:aws:iam::000000000000:role/slipway-test")
    repository_uri = ecr.ensure_repository(repository)
    docker = docker_seam_client()
    ecr.login(docker, ecr.registry_host(repository_uri, registry))
    seeded: dict[str, dict] = {}
    for number, (release, local) in enumerate(releases, start=1):
        commit = hashlib.sha1(f"{lambda_name}{release}".encode()).hexdigest()  # noqa: S324 - a fake commit id
        image = ecr.push(docker, local, repository_uri, f"{commit[:12]}-{release}-{architecture}",
                         host_override=registry, on_line=lambda _: None)
        uri = ecr.image_uri(repository_uri, image.digest, registry)
        if number == 1:
            lambdas.create(config, uri, f"{commit[:12]} {image.digest}")
        else:
            lambdas.update_code(config, uri)
        after = lambdas.wait_updated(lambda_name)
        version = lambdas.publish(lambda_name, f"{commit[:12]} {image.digest}", after=after, image_uri=uri)
        seeded[release] = {"version": version, "digest": image.digest, "uri": uri, "commit": commit}
    lambdas.point_alias(lambda_name, "live", seeded[releases[0][0]]["version"])
    return seeded


def remove_plane_containers(docker_client, image_ids: set[str]) -> None:
    """The plane keeps a warm container per version after a delete: remove those of this
    run's plane (its port) that run one of `image_ids`, and no other run's."""
    port = os.environ["AWS_ENDPOINT_URL"].rstrip("/").rsplit(":", 1)[1]
    for container in docker_client.containers.list(all=True, filters={"label": "ministack"}):
        if container.labels.get("ministack.instance", "").endswith(f":{port}") and container.image.id in image_ids:
            with contextlib.suppress(Exception):
                container.remove(force=True)


def remove_images(docker_client, images, ours) -> None:
    """Remove this run's tags of `images` (`ours(tag)` says which are), never an image by its
    ID: the same inputs build the same image, so one ID may carry another run's tags on this
    engine too, and a forced removal by ID takes them all. An image goes when its last tag
    does (force: untag it even if a warm container of this run's plane still runs it)."""
    for image in images:
        for tag in image.tags:
            if ours(tag):
                with contextlib.suppress(Exception):
                    docker_client.images.remove(tag, force=True)


def remove_pulled(docker_client, remote: str) -> None:
    """The plane pulls a function's image by digest: drop those references to `remote`
    (an image that another tag still holds stays)."""
    for image in docker_client.images.list(name=remote):
        for ref in image.attrs.get("RepoDigests", []):
            if ref.startswith(remote + "@"):
                with contextlib.suppress(Exception):
                    docker_client.images.remove(ref, force=True)


@pytest.fixture(scope="session")
def detector_plane(docker_client, detector_image, tmp_path_factory):
    """function/ on the local plane (x86_64): version 1 real, version 2 shifted, live -> 1. One per session."""
    import hashlib

    from tests.detector_fixtures import build_detector_image

    stack_env("AWS_ENDPOINT_URL")
    suffix = hashlib.sha256(str(tmp_path_factory.getbasetemp()).encode()).hexdigest()[:8]
    plane = DeployedDetector(f"detector-{suffix}", f"slipway-test-detector-{suffix}",
                             f"slipway-test/detector-{suffix}")
    shifted_tag, real_tag = f"slipway-test/detector-shifted:{suffix}", ""
    try:
        real_tag = detector_image("amd64")
        build_detector_image("amd64", shifted_tag, context=shifted_function_dir(tmp_path_factory.mktemp("shift") / "f"))
        plane.versions = seed_detector(plane.lambda_name, plane.repository,
                                       [("real", real_tag), ("shifted", shifted_tag)], "x86_64")
        yield plane
    finally:
        for cleanup in (lambda: aws.client("lambda").delete_function(FunctionName=plane.lambda_name),
                        lambda: aws.client("ecr").delete_repository(repositoryName=plane.repository, force=True)):
            with contextlib.suppress(Exception):
                cleanup()
        # The images of this function: the seeded ones and what tests' pipeline deploys built. The
        # plane keeps a warm container per version after the delete: this session's plane's only.
        built = docker_client.images.list(filters={"label": f"slipway.function={plane.name}"})
        ours = {image.id for image in built} | {
            docker_client.images.get(tag).id for tag in (shifted_tag, real_tag) if tag and _exists(tag)}
        remove_plane_containers(docker_client, ours)
        remove_images(docker_client, built, ours=lambda tag: plane.name in tag or plane.repository in tag)
        with contextlib.suppress(Exception):
            docker_client.images.remove(shifted_tag, force=True)
        remove_pulled(docker_client, f"{os.environ['SLIPWAY_REGISTRY_HOST']}/{plane.repository}")


def _exists(tag: str) -> bool:
    import docker

    try:
        docker_seam_client().images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


@pytest.fixture
def detector_function(transactional_db, detector_plane):
    """The session's detector as rows: two succeeded deploys (1 real, 2 shifted), version 1 live."""
    from deploy import lambdas
    from portal.management.commands.bootstrap_local import detector_smoke_event
    from portal.models import Build, Deployment

    function = create_function(
        name=detector_plane.name, repository_url="https://gitlab.example.com/team/detector.git",
        ecr_repository=detector_plane.repository, lambda_name=detector_plane.lambda_name, architecture="x86_64",
        memory_mb=1024, timeout_s=30, smoke_event=detector_smoke_event(),
        execution_role_arn="arn:aws:iam::000000000000:role/slipway-test")
    for release in ("shifted", "real"):  # the real one finished last: it is live
        seeded = detector_plane.versions[release]
        build = Build.objects.create(function=function, commit_sha=seeded["commit"], architecture="x86_64",
                                     inputs_digest=seeded["commit"], status=Build.Status.SUCCEEDED,
                                     digest=seeded["digest"], image_uri=seeded["uri"], platform="linux/amd64")
        Deployment.objects.create(function=function, build=build, trigger="cli", ref="main", version=seeded["version"],
                                  commit_sha=seeded["commit"], status=Deployment.Status.SUCCEEDED)
    yield function
    live = detector_plane.versions["real"]["version"]
    if lambdas.alias_version(detector_plane.lambda_name, "live") != live:  # a test moved it: put it back
        lambdas.point_alias(detector_plane.lambda_name, "live", live)


# The beat's entries a test's own beat holds off, unless it names them.
_BEAT_HELD_OFF = ("SLIPWAY_PROMOTION_TICK", "SLIPWAY_GATE_TICK", "SLIPWAY_SWEEP_INTERVAL",
                  "SLIPWAY_RECONCILE_INTERVAL", "SLIPWAY_DRIFT_INTERVAL", "SLIPWAY_ROLLOUT_TICK",
                  "SLIPWAY_PREVIEW_SWEEP_INTERVAL")


@contextlib.contextmanager
def own_beat(folder: Path, **every: int):
    """A celery beat of a test module's own, running the entries named in `every` (their
    settings, e.g. SLIPWAY_GATE_TICK=1) and holding every other entry off for an hour."""
    stack_env("REDIS_URL")
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings", **dict.fromkeys(_BEAT_HELD_OFF, "3600"),
           **{name: str(seconds) for name, seconds in every.items()}}
    process = Private([sys.executable, "-m", "celery", "-A", "workers", "beat", "-s", str(folder / "schedule"),
                       "--loglevel", "INFO"], env=env, log=folder / "beat.log")
    try:
        wait_for(lambda: "beat: Starting" in (folder / "beat.log").read_text(errors="replace"), 30,
                 "beat to start")
        yield process
    finally:
        process.stop()
