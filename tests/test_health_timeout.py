"""/healthz answers within SLIPWAY_HEALTH_TIMEOUT whatever hangs: the probe runner stops
waiting and names each check still running as timed out."""

import threading

import pytest

from portal.core import health

released = threading.Event()


def hangs() -> str:
    released.wait(10)  # a worker ping through a frozen broker, say
    return "answered late"


def answers() -> str:
    return "fine"


@pytest.fixture
def hanging_check(settings, monkeypatch):
    monkeypatch.setattr(health, "CHECKS", {"redis": answers, "worker": hangs})
    settings.SLIPWAY_EXTRA_HEALTH_CHECKS = {}
    settings.SLIPWAY_HEALTH_TIMEOUT = 0.5
    released.clear()
    yield
    released.set()


def test_the_runner_reports_a_hanging_check_as_timed_out_by_name(hanging_check):
    checks = {check.name: check for check in health.run_all()}
    assert checks["redis"].ok and checks["redis"].message == "fine"
    assert not checks["worker"].ok
    assert checks["worker"].message == "timed out: no answer within 0.5 s"


def test_healthz_answers_503_naming_the_check_that_hangs(hanging_check, client, db):
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["worker"]["message"].startswith("timed out")
