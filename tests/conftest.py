"""Shared cast and stack fixtures.

alice owns the function, bob may deploy it, charlie may only look, dave has
no access. Integration tests run on the real local stack that
`python -m devstack test` (make test) starts on the test ports.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from devstack.common import REPO_ROOT

# tests/compose builds and runs the whole docker-compose stack: only `make compose-test`
# (which sets SLIPWAY_COMPOSE_TEST=1) collects it, never `make test`.
collect_ignore = [] if os.environ.get("SLIPWAY_COMPOSE_TEST") == "1" else ["compose"]

TEST_LABEL = "slipway.test"
pytest_plugins = ["tests.detector_fixtures", "tests.browser_fixtures"]

# The test-only hooks of deploy/testing.py (AWS call recorder, fault injection, pause
# points) work only under SLIPWAY_TESTING. Set at import, before anything builds a
# client: every test process, and the workers and servers it starts, inherit it.
os.environ["SLIPWAY_TESTING"] = "1"


def aws_calls_file() -> Path:
    """Where deploy/aws.py records the AWS operations this session's processes call
    (SLIPWAY_AWS_CALLS_FILE): one file per pytest process, under the test state dir."""
    state = Path(os.environ.get("SLIPWAY_STATE_DIR") or REPO_ROOT / "var" / "pytest")
    return state / f"aws-calls-{os.getpid()}.jsonl"


def pytest_configure(config):
    # Set before any client is built: this process, the test workers and servers it starts inherit it.
    path = aws_calls_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    os.environ["SLIPWAY_AWS_CALLS_FILE"] = str(path)


def pytest_unconfigure(config):
    aws_calls_file().unlink(missing_ok=True)


def pytest_collection_modifyitems(config, items):
    """Tests marked after_everything run after the rest: they check what the others recorded.
    Tests marked swaps_clients run after those: they point this process's broker and AWS
    clients at private parts they freeze and stop, and a test after them could inherit a
    client that no longer answers (a send that fails leaves its deployment queued)."""
    items.sort(key=lambda item: (item.get_closest_marker("swaps_clients") is not None,
                                 item.get_closest_marker("after_everything") is not None))


# The fields of a function's environment (its Lambda settings); `environment` is the
# API's and the form's name for the environment's `variables`.
ENVIRONMENT_FIELDS = ("lambda_name", "alias", "memory_mb", "timeout_s", "environment", "secret_keys",
                      "execution_role_arn", "paused_reason")


def create_function(**fields):
    """A function and its first environment, `production`, as registering one makes them:
    the Lambda settings among `fields` go to the environment."""
    from portal.models import Environment, Function

    settings = {("variables" if name == "environment" else name): fields.pop(name)
                for name in ENVIRONMENT_FIELDS if name in fields}
    function = Function.objects.create(**fields)
    Environment.objects.create(function=function, name="production", position=0, **settings)
    return function


def update_function(function, **fields):
    """Function.objects.filter(pk=...).update(...) for a function and its first environment:
    the Lambda settings among `fields` are updated on the environment."""
    from portal.models import Environment, Function

    settings = {("variables" if name == "environment" else name): fields.pop(name)
                for name in ENVIRONMENT_FIELDS if name in fields}
    if fields:
        Function.objects.filter(pk=function.pk).update(**fields)
    if settings:
        Environment.objects.filter(pk=function.first_environment.pk).update(**settings)


def set_environment(function, **fields):
    """Change the function's first environment (`environment`: its variables), saved."""
    environment = function.first_environment
    for name, value in fields.items():
        setattr(environment, "variables" if name == "environment" else name, value)
    environment.save()
    return environment


def add_environment(function, name: str, lambda_name: str, position: int, **fields):
    """Another environment of `function` at `position` in its promotion order (the Lambda
    settings among `fields` as for create_function; `environment`: its variables)."""
    from portal.models import Environment

    settings = {("variables" if key == "environment" else key): value for key, value in fields.items()}
    return Environment.objects.create(function=function, name=name, position=position, lambda_name=lambda_name,
                                      **settings)


def staged(function, *, promotion: str = "manual", soak_seconds: int = 0):
    """`function` as staging (position 0, a new Lambda `<lambda>-stg`) then its production
    environment (moved to position 1, promoted by `promotion`); returns (staging, production)."""
    from portal.models import Environment

    production = function.first_environment
    Environment.objects.filter(pk=production.pk).update(position=1, promotion=promotion, soak_seconds=soak_seconds)
    staging = add_environment(function, "staging", f"{production.lambda_name}-stg", 0)
    production.refresh_from_db()
    return staging, production


def refused(call, code: str):
    """Call `call`, which must be refused (RequestRefused) with `code`; the refusal."""
    from portal.core.errors import RequestRefused

    with pytest.raises(RequestRefused) as caught:
        call()
    assert caught.value.code == code, caught.value.message
    return caught.value


@pytest.fixture
def receiver():
    """A local HTTP server that records what it is sent (tests/http_receiver.py)."""
    from tests.http_receiver import Receiver

    made = Receiver().start()
    yield made
    made.stop()


@pytest.fixture
def fake():
    """A fake GitLab on 127.0.0.1 (tests/fake_gitlab.py): commit statuses, deployments, MR notes."""
    from tests.fake_gitlab import FakeGitLab

    made = FakeGitLab().start()
    yield made
    made.stop()


@pytest.fixture
def function(db):
    return create_function(name="hello", repository_url="https://gitlab.example.com/team/hello.git",
                           ecr_repository="team/hello", lambda_name="team-hello")


@pytest.fixture
def cast(db, function):
    """Users by name, with their roles on `function`."""
    from django.contrib.auth import get_user_model

    from portal.models import Membership

    users = {}
    for name, role in [("alice", "owner"), ("bob", "deployer"), ("charlie", "viewer"), ("dave", None)]:
        users[name] = get_user_model().objects.create_user(name, f"{name}@example.org", "password-" + name)
        if role:
            Membership.objects.create(function=function, user=users[name], role=role)
    return users


@pytest.fixture
def sent():
    """Celery's send_task, the one seam of the web side's queue, patched: no broker needed."""
    from unittest import mock

    with mock.patch("portal.core.sending.app.send_task", autospec=True) as send_task:
        send_task.return_value.id = "task-1"
        yield send_task


def released(function, version: str, sha: str, **fields):
    """A successful release row (and its build) as the pipeline leaves it, without running it."""
    from portal.models import Build, Deployment

    build = Build.objects.create(function=function, commit_sha=sha, architecture="arm64", inputs_digest=sha,
                                 status=Build.Status.SUCCEEDED, digest="sha256:" + sha[:2] * 32, size_bytes=2**20)
    return Deployment.objects.create(function=function, trigger="cli", status=Deployment.Status.SUCCEEDED,
                                     version=version, build=build, commit_sha=sha,
                                     commit_message=f"release {version}", **fields)


def stack_env(name: str) -> str:
    """A variable the test stack exports; missing means pytest ran outside `make test`."""
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: integration tests need the local stack; run them with `make test` "
                    "(or `python -m devstack test -- ARGS`)", pytrace=False)
    return value


@pytest.fixture(scope="session")
def docker_client():
    import docker

    return docker.from_env(timeout=300)


@pytest.fixture(scope="session")
def aws_endpoint() -> str:
    """The local AWS plane as the host sees it."""
    return stack_env("AWS_ENDPOINT_URL")


@pytest.fixture(scope="session")
def container_aws_endpoint(aws_endpoint) -> str:
    """The same plane as a container sees it (relayed on the Docker bridge)."""
    stack_env("SLIPWAY_BRIDGE_GATEWAY")
    return aws_endpoint.replace("127.0.0.1", "host.docker.internal")


def build_handler_image(docker_client, tag: str, arch: str, handler: bytes) -> None:
    """A labelled image FROM the local base with `handler` as app.py (no RUN step: no QEMU)."""
    import io
    import tarfile

    from devstack import base_images

    dockerfile = f'FROM {base_images.image_tag(arch)}\nCOPY app.py /var/task/\nCMD ["app.handler"]\n'.encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Dockerfile", dockerfile), ("app.py", handler)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    docker_client.images.build(fileobj=buf, custom_context=True, tag=tag, platform=f"linux/{arch}",
                               labels={TEST_LABEL: "1"}, rm=True)


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float, what: str, interval: float = 0.2):
    """Poll `condition` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


class Private:
    """A process the test starts for itself and always stops."""

    def __init__(self, args: list[str], env: dict | None = None, log: Path | None = None):
        self.log = log
        out = log.open("wb") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=out,
                                     stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def private_plane(tmp_path):
    """A second AWS plane on its own port, never the shared one."""
    port = free_port()
    plane = Private(
        [stack_env("SLIPWAY_MINISTACK_BIN")],
        env={"BIND_HOST": "127.0.0.1", "GATEWAY_PORT": str(port), "MINISTACK_HOSTNAME": f"slipway-pytest-{port}",
             "PERSIST_STATE": "0", "TMPDIR": str(tmp_path)},
        log=tmp_path / "plane.log",
    )
    plane.url = f"http://127.0.0.1:{port}"
    try:
        from devstack.stack import _http_ok

        wait_for(lambda: _http_ok(f"{plane.url}/_ministack/health"), 60, "the private AWS plane")
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def sshd(tmp_path):
    """A private sshd on 127.0.0.1 with a throwaway key pair (tests/sshd.py)."""
    from tests.sshd import Sshd

    with Sshd(tmp_path / "sshd") as server:
        yield server


def migrate(*targets):
    """Migrate the test database to `targets` (the latest when none); the models as they
    are at that point."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    targets = list(targets) or executor.loader.graph.leaf_nodes()
    executor.migrate(targets)
    return MigrationExecutor(connection).loader.project_state(targets).apps


@pytest.fixture
def migrations():
    """`migrate` for a migration test; the database is left at the latest migration, pass or fail."""
    yield migrate
    migrate()
