"""The API's deploy rate limit against real Redis: the stack's own for counting, and a private
one that the test starts, stops and freezes itself (the shared one stays up) for failing open."""

import logging
import os
import signal
import time

import pytest
import redis

from portal.core import ratelimit
from portal.models import ApiToken
from tests.api_client import Api, openapi
from tests.conftest import Private, free_port, stack_env, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _no_broker(sent):
    return sent


def use_redis(settings, monkeypatch, url: str) -> redis.Redis:
    """Point the limiter at `url` (its cached client is built again for it); a client of our own."""
    settings.REDIS_URL = url
    monkeypatch.setattr(ratelimit, "_client", None)
    return redis.Redis.from_url(url)


@pytest.fixture
def limited(settings):
    settings.SLIPWAY_API_DEPLOY_RATE, settings.SLIPWAY_API_DEPLOY_WINDOW = 2, 60
    return settings


@pytest.fixture
def shared_redis(settings, monkeypatch, limited):
    return use_redis(settings, monkeypatch, stack_env("REDIS_URL"))


@pytest.fixture
def private_redis(settings, monkeypatch, limited, tmp_path):
    port = free_port()
    server = Private(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                      "--dir", str(tmp_path)])
    own = use_redis(settings, monkeypatch, f"redis://127.0.0.1:{port}/0")
    wait_for(lambda: _answers(own), 10, "the private Redis to answer")
    yield server
    if server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGCONT)  # a frozen one could not stop
    server.stop()


def _answers(client: redis.Redis) -> bool:
    try:
        return client.ping()
    except redis.RedisError:
        return False


@pytest.fixture
def tokens(cast):
    """(token, secret) by name."""
    return {name: ApiToken.issue(cast[name], f"{name}'s") for name in ("alice", "bob")}


@pytest.fixture
def deploy(client, function):
    api = Api(client, openapi(client))
    return lambda secret: api.call("post", "/functions/{name}/deployments", {}, name="hello", token=secret)


def counter(token: ApiToken) -> str:
    return f"slipway:ratelimit:deploy:token:{token.pk}"


@pytest.fixture
def fresh_counters(shared_redis, tokens):
    """Token ids restart with every test database: clear what an earlier run left under them."""
    keys = [counter(token) for token, _ in tokens.values()]
    shared_redis.delete(*keys)
    yield
    shared_redis.delete(*keys)


def test_deploys_past_the_rate_get_429_with_the_window_left_as_retry_after(shared_redis, tokens, deploy,
                                                                           fresh_counters):
    token, secret = tokens["bob"]
    answers = [deploy(secret) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert answers[-1].json()["error"]["code"] == "rate-limited"
    assert int(shared_redis.get(counter(token))) == 3
    left = shared_redis.ttl(counter(token))
    assert 0 < left <= 60 and int(answers[-1]["Retry-After"]) in (left, left + 1)


def test_each_token_counts_apart(shared_redis, tokens, deploy, fresh_counters):
    bob, alice = tokens["bob"][1], tokens["alice"][1]
    assert [deploy(bob).status_code for _ in range(3)] == [202, 202, 429]
    assert deploy(alice).status_code == 202


def test_a_new_window_lets_deploys_through_again(shared_redis, tokens, deploy, fresh_counters, settings):
    settings.SLIPWAY_API_DEPLOY_WINDOW = 1
    token, secret = tokens["bob"]
    assert [deploy(secret).status_code for _ in range(3)] == [202, 202, 429]
    wait_for(lambda: not shared_redis.exists(counter(token)), 10, "Redis to expire the window's counter")
    assert deploy(secret).status_code == 202


def test_deploys_go_through_when_redis_is_down(private_redis, tokens, deploy, caplog):
    private_redis.stop()
    with caplog.at_level(logging.WARNING, logger="portal.core.ratelimit"):
        assert [deploy(tokens["bob"][1]).status_code for _ in range(3)] == [202, 202, 202]
    assert "rate limit not applied (deploy:token:" in caplog.text


def test_a_frozen_redis_fails_open_without_hanging_the_request(private_redis, tokens, deploy, caplog):
    secret = tokens["bob"][1]
    assert deploy(secret).status_code == 202  # counted while Redis answers
    os.kill(private_redis.proc.pid, signal.SIGSTOP)  # it still accepts connections, never answers
    with caplog.at_level(logging.WARNING, logger="portal.core.ratelimit"):
        for _ in range(2):
            started = time.monotonic()
            assert deploy(secret).status_code == 202
            # A bound on a hang (the client's timeout is 0.5 s), not a speed target.
            assert time.monotonic() - started < 2.0
    assert "rate limit not applied" in caplog.text
