"""Dependencies that fail under a running portal: every request answers within its
budget, a rollback works without the queue, and nothing is lost once the dependency
is back. Each test starts its own Redis (and worker on it), never freezing the
shared stack's parts, with budgets lowered to about 2 s."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from datetime import timedelta

import pytest

from deploy import lambdas
from portal.models import ApiToken, Deployment, Membership
from tests.api_client import Api, openapi
from tests.conftest import Private, create_function, free_port, wait_for
from tests.integration.conftest import Worker, wait_done

pytestmark = [pytest.mark.integration, pytest.mark.swaps_clients]
Status = Deployment.Status
BUDGET = 2.0  # seconds: the Redis socket timeouts and the request's budget
ANSWER_LIMIT = 30  # generous: a request that has not answered by then hangs


class Redis:
    """A private redis-server on its own port: frozen, resumed, stopped, started."""

    def __init__(self, directory):
        self.directory, self.port = directory, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Private | None = None
        self.start()

    def start(self) -> None:
        self.proc = Private(["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                             "--appendonly", "no", "--dir", str(self.directory)])
        import redis

        wait_for(lambda: _pings(redis, self.url), 20, "the private Redis to answer")

    def freeze(self) -> None:
        os.kill(self.proc.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc:
            self.resume()  # a stopped process cannot take SIGTERM's handler
            self.proc.stop()


def _pings(redis, url: str) -> bool:
    try:
        return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        return False


@pytest.fixture
def private_redis(tmp_path, settings):
    """A Redis of this test's own, which the portal in this process and a worker use as broker."""
    from portal.celery import app

    redis = Redis(tmp_path)
    # Celery reads Django's settings under the CELERY_ namespace: the keys are prefixed.
    before = (app.conf.CELERY_BROKER_URL, app.conf.CELERY_BROKER_TRANSPORT_OPTIONS)
    options = {**settings.CELERY_BROKER_TRANSPORT_OPTIONS, "socket_timeout": BUDGET,
               "socket_connect_timeout": BUDGET}

    def use(url, transport_options):
        if app._pool is not None:
            app._pool.force_close_all()
        app.conf.update(CELERY_BROKER_URL=url, CELERY_BROKER_TRANSPORT_OPTIONS=transport_options)
        app._after_fork()  # forget the pooled connections to the shared broker

    use(redis.url, options)
    settings.REDIS_URL = redis.url
    settings.SLIPWAY_REQUEST_BUDGET = BUDGET
    try:
        yield redis
    finally:
        use(*before)
        redis.stop()


@pytest.fixture
def worker_env() -> dict:
    return {}


@pytest.fixture
def broker_worker(private_redis, faults, tmp_path, worker_env):
    """A deploys-and-rollbacks worker on the private Redis, with the same lowered budgets."""
    worker = Worker(tmp_path / "worker.log", faults, env={"REDIS_URL": private_redis.url,
                                                          "SLIPWAY_REDIS_TIMEOUT": str(BUDGET), **worker_env})
    worker.start()
    yield worker
    worker.stop()


def answered(call, what: str):
    """The response of `call()`, run in a thread: the test fails (rather than hangs) when it
    has not answered within ANSWER_LIMIT."""
    result: dict = {}

    def run():
        try:
            result["response"] = call()
        except BaseException as exc:  # noqa: BLE001 - reported below
            result["error"] = exc
        finally:
            from django.db import connection

            connection.close()  # this thread's own

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(ANSWER_LIMIT)
    assert not thread.is_alive(), f"{what}: no answer within {ANSWER_LIMIT} s"
    if "error" in result:
        raise result["error"]
    result["response"].seconds = time.monotonic() - started
    return result["response"]


@pytest.mark.parametrize("fault", ["frozen", "stopped"])
def test_a_broken_redis_costs_each_request_its_budget_a_rollback_runs_without_it_and_nothing_is_lost(
        fault, private_redis, broker_worker, released_function, released_plane, client, django_user_model, repo,
        monkeypatch):
    from portal.deployments import sweeper

    one, two = (release["version"] for release in released_plane.releases)
    repo.release("unused")  # a local repository: the deploy below fails at its source step, quickly and offline
    released_function.repository_url = str(repo.path)
    released_function.save(update_fields=["repository_url"])
    user = django_user_model.objects.create_user("erin", "erin@example.org", "erin-password-1")
    Membership.objects.create(function=released_function, user=user, role=Membership.Role.DEPLOYER)
    api = Api(client, openapi(client), token=ApiToken.issue(user, "erin's")[1])
    name = released_function.name

    if fault == "frozen":
        private_redis.freeze()
    else:
        private_redis.proc.stop()
    try:
        deploy = answered(lambda: api.call("post", "/functions/{name}/deployments", {"ref": "main"}, name=name),
                          "a deploy while Redis is " + fault)
        rollback = answered(lambda: api.call("post", "/functions/{name}/rollback", {"to": one}, name=name),
                            "a rollback while Redis is " + fault)
        later = answered(lambda: api.call("post", "/functions/{name}/deployments", {"ref": "no-such-branch"},
                                          name=name), "a deploy after the rollback while Redis is " + fault)
        health = answered(lambda: client.get("/healthz"), "/healthz while Redis is " + fault)
    finally:
        if fault == "frozen":
            private_redis.resume()
        else:
            private_redis.start()

    assert deploy.status_code == 202, deploy.content
    assert deploy.json()["status"] == Status.QUEUED
    assert "the queue is not answering" in deploy.json()["notice"]
    assert rollback.status_code == 202, rollback.content
    body = rollback.json()
    assert (body["status"], body["version"]) == (Status.SUCCEEDED, one), body
    assert body["notice"].startswith(f"the queue is not answering: the web process ran rollback #{body['id']}")
    assert [step["name"] for step in body["steps"]] == ["without-queue", "check", "shift"]
    # moved without the queue
    assert lambdas.alias_version(released_function.first_environment.lambda_name, "live") == one
    assert later.status_code == 202 and "stays queued" in later.json()["notice"], later.content
    assert health.status_code == 503 and not health.json()["checks"]["redis"]["ok"], health.content
    print(f"redis {fault}: answers in {deploy.seconds:.1f} s (deploy), {rollback.seconds:.1f} s (rollback "
          f"without the queue), {later.seconds:.1f} s (deploy), {health.seconds:.1f} s (/healthz)")

    # Back: the sweeper sends what stayed queued; every row ends, and the alias stays where the
    # last successful action (the rollback) put it: the deploy after it fails at its source step.
    monkeypatch.setattr(sweeper, "UNSENT_GRACE", timedelta(0))
    started = time.monotonic()
    rows = Deployment.objects.filter(pk__in=[deploy.json()["id"], body["id"], later.json()["id"]])

    def settled():
        sweeper.sweep()
        return all(row.is_terminal for row in rows.all())

    wait_for(settled, 120, "every deployment to end once Redis is back", interval=1)
    print(f"redis {fault}: settled {time.monotonic() - started:.1f} s after it came back")
    ended = {row.pk: (row.status, row.error_code) for row in rows.all()}
    assert ended == {deploy.json()["id"]: (Status.SUPERSEDED, "superseded"), body["id"]: (Status.SUCCEEDED, ""),
                     later.json()["id"]: (Status.FAILED, ended[later.json()["id"]][1])}
    assert ended[later.json()["id"]][1].startswith(("git-", "source-", "ref-")), ended
    assert lambdas.alias_version(released_function.first_environment.lambda_name, "live") == one
    assert two != one


# --- The AWS plane frozen ---------------------------------------------------------------------


@pytest.fixture
def frozen_plane_budgets(private_plane) -> dict:
    return {"AWS_ENDPOINT_URL": private_plane.url, "SLIPWAY_AWS_URGENT_CONNECT_TIMEOUT": "0.5",
            "SLIPWAY_AWS_URGENT_READ_TIMEOUT": "0.5", "SLIPWAY_ROLLBACK_AWS_DEADLINE": str(2 * BUDGET)}


@pytest.fixture
def plane_function(private_plane, frozen_plane_budgets, released_plane, docker_client, transactional_db, settings,
                   monkeypatch, unique):
    """A function with versions 1 and 2 (live -> 2) on the private plane, from the session's
    released images: the rows the pipeline would have left, and the plane to match."""
    from deploy import aws, ecr
    from portal.models import Build
    from tests.integration.conftest import docker_seam_client

    monkeypatch.setenv("AWS_ENDPOINT_URL", private_plane.url)
    settings.AWS_ENDPOINT_URL = private_plane.url
    aws.reset()
    registry = private_plane.url.removeprefix("http://")
    repository = f"slipway-test/frozen-{unique}"
    repository_uri = ecr.ensure_repository(repository)
    docker = docker_seam_client()
    ecr.login(docker, registry)
    function = create_function(
        name=f"frozen-{unique}", repository_url="https://gitlab.example.com/team/frozen.git", architecture="x86_64",
        ecr_repository=repository, lambda_name=f"slipway-test-frozen-{unique}", memory_mb=256, timeout_s=30,
        execution_role_arn="arn:aws:iam::000000000000:role/slipway-test")
    config = lambdas.Settings(name=function.first_environment.lambda_name, architecture="x86_64", memory_mb=256,
                              timeout_s=30,
                              environment={}, role_arn=function.first_environment.execution_role_arn)
    pushed = []
    try:
        for number, release in enumerate(released_plane.releases, start=1):
            local = f"slipway-test/{released_plane.name}:{release['release']}"
            image = ecr.push(docker, local, repository_uri, release["tag"], host_override=registry,
                             on_line=lambda _: None)
            pushed.append(f"{registry}/{repository}:{release['tag']}")
            uri = ecr.image_uri(repository_uri, image.digest, registry)
            if number == 1:
                lambdas.create(config, uri, release["commit"][:12])
            else:
                lambdas.update_code(config, uri)
            version = lambdas.publish(function.first_environment.lambda_name, release["commit"][:12],
                                      after=lambdas.wait_updated(function.first_environment.lambda_name), image_uri=uri)
            lambdas.point_alias(function.first_environment.lambda_name, "live", version)
            lambdas.tag(lambdas.get_configuration(function.first_environment.lambda_name)["FunctionArn"],
                        {lambdas.OWNER_TAG: function.name})
            build = Build.objects.create(function=function, commit_sha=release["commit"], architecture="x86_64",
                                         inputs_digest=release["tag"], status=Build.Status.SUCCEEDED,
                                         digest=image.digest, image_uri=uri, platform="linux/amd64")
            Deployment.objects.create(function=function, build=build, trigger="cli", ref="main",
                                      commit_sha=release["commit"], status=Status.SUCCEEDED, version=version)
        yield function
    finally:
        for tag in pushed:
            with contextlib.suppress(Exception):
                docker_client.images.remove(tag)
        aws.reset()


@pytest.fixture
def aws_fault_env(frozen_plane_budgets, worker_env):
    worker_env.update(frozen_plane_budgets)
    return worker_env


def test_a_frozen_aws_plane_fails_a_rollback_fast_attempt_by_attempt_and_the_next_one_works(
        private_plane, aws_fault_env, plane_function, private_redis, broker_worker, client, django_user_model):
    user = django_user_model.objects.create_user("frank", "frank@example.org", "frank-password-1")
    Membership.objects.create(function=plane_function, user=user, role=Membership.Role.DEPLOYER)
    api = Api(client, openapi(client), token=ApiToken.issue(user, "frank's")[1])
    name, one = plane_function.name, plane_function.deployments.order_by("pk").first().version

    os.killpg(private_plane.proc.pid, signal.SIGSTOP)
    try:
        health = answered(lambda: client.get("/healthz"), "/healthz while AWS is frozen")
        asked = answered(lambda: api.call("post", "/functions/{name}/rollback", {"to": one}, name=name),
                         "a rollback while AWS is frozen")
        assert asked.status_code == 202 and asked.json()["notice"] == "", asked.content
        failed = wait_done(Deployment.objects.get(pk=asked.json()["id"]), timeout=60)
    finally:
        os.killpg(private_plane.proc.pid, signal.SIGCONT)
    assert health.status_code == 503
    assert not health.json()["checks"]["aws"]["ok"], health.json()["checks"]["aws"]
    assert (failed.status, failed.error_code) == (Status.FAILED, "aws-unreachable"), failed.error_message
    check = failed.steps.get(name="check")
    assert "attempt 1 of 5 failed (aws-unreachable)" in check.output, check.output
    print(f"aws frozen: /healthz in {health.seconds:.1f} s, rollback accepted in {asked.seconds:.1f} s, failed "
          f"{(failed.finished_at - failed.created_at).total_seconds():.1f} s after it was asked for")

    again = answered(lambda: api.call("post", "/functions/{name}/rollback", {"to": one}, name=name),
                     "a rollback once AWS is back")
    done = wait_done(Deployment.objects.get(pk=again.json()["id"]), timeout=60)
    assert (done.status, done.version) == (Status.SUCCEEDED, one), done.error_message
    assert lambdas.alias_version(plane_function.first_environment.lambda_name, "live") == one
    assert not plane_function.deployments.exclude(status__in=Deployment.TERMINAL).exists()


# --- Postgres cuts the worker's connections during a deploy --------------------------------------


@pytest.mark.postgres
def test_a_deploy_whose_database_connections_were_cut_mid_build_still_goes_live(worker, fixture_function, repo,
                                                                                  unique):
    """A Postgres restart, as its clients see it: every connection of the worker is
    terminated by the server while a build runs (the shared server itself stays up for the
    rest of the suite). The recorder and the heartbeat reconnect; the deploy ends, live."""
    from django.db import connection

    from portal.deployments.requesting import request_deploy
    from tests.integration.conftest import invoke_live, slow_dockerfile

    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no server to drop a worker's connections")
    repo.release("one", dockerfile=slow_dockerfile(f"slipway-pgcut-{unique}", 6))
    deploy = request_deploy(fixture_function, trigger="cli")

    def building():
        deploy.refresh_from_db()
        return deploy.status == Status.BUILDING
    wait_for(building, 120, "the deploy's build to run")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        (cut,) = cursor.fetchone()
    assert cut >= 1  # the worker's own connection(s)
    started = time.monotonic()
    done = wait_done(deploy, timeout=180)
    assert done.status == Status.SUCCEEDED, (done.error_code, done.error_message)
    assert invoke_live(fixture_function)["release"] == "one"
    assert not done.steps.exclude(status__in=("succeeded", "skipped")).exists()
    print(f"postgres cut {cut} connection(s) mid-build: the deploy ended {time.monotonic() - started:.1f} s later")
