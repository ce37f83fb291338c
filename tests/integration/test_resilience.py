"""Dependencies that fail under a running portal: every request answers within its
budget, a rollback works without the queue, and nothing is lost once the dependency
is back. Each test starts its own Redis (and worker on it), never freezing the
shared stack's parts, with budgets lowered to about 2 s."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta

import pytest

from deploy import lambdas
from portal.models import ApiToken, Deployment, Membership
from tests.api_client import Api, openapi
from tests.conftest import Private, free_port, wait_for
from tests.integration.conftest import Worker

pytestmark = pytest.mark.integration
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
    before = (app.conf.broker_url, app.conf.broker_transport_options)
    options = {**settings.CELERY_BROKER_TRANSPORT_OPTIONS, "socket_timeout": BUDGET,
               "socket_connect_timeout": BUDGET}

    def use(url, transport_options):
        if app._pool is not None:
            app._pool.force_close_all()
        app.conf.broker_url, app.conf.broker_transport_options = url, transport_options
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
def broker_worker(private_redis, faults, tmp_path):
    """A deploys-and-rollbacks worker on the private Redis, with the same lowered budgets."""
    worker = Worker(tmp_path / "worker.log", faults, env={"REDIS_URL": private_redis.url,
                                                          "SLIPWAY_REDIS_TIMEOUT": str(BUDGET)})
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
    from workers import sweeper

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
    assert lambdas.alias_version(released_function.lambda_name, "live") == one  # moved without the queue
    assert later.status_code == 202 and "stays queued" in later.json()["notice"], later.content
    print(f"redis {fault}: answers in {deploy.seconds:.1f} s (deploy), {rollback.seconds:.1f} s (rollback "
          f"without the queue), {later.seconds:.1f} s (deploy)")

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
    assert lambdas.alias_version(released_function.lambda_name, "live") == one
    assert two != one
