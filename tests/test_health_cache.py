"""/healthz is open to anyone and each probe run pings the broker and calls AWS: within
SLIPWAY_HEALTH_CACHE_SECONDS every caller gets the last answer, and a process runs at
most one probe at a time. The probes themselves (portal.health.run_all) are replaced
by a counting stand-in: what is under test is how often they run."""

import sys
import threading

import pytest

from portal.core import health
from tests.conftest import wait_for

CALLERS = 8


@pytest.fixture
def probe(settings, monkeypatch):
    """A probe run that counts itself and, while `hold` is clear, waits inside."""
    class Probe:
        runs = 0
        hold = threading.Event()

        def __call__(self):
            Probe.runs += 1
            self.hold.wait(30)
            return [health.Check("redis", True, f"run {Probe.runs}")]

    made = Probe()
    made.hold.set()
    monkeypatch.setattr(health, "run_all", made)
    monkeypatch.setattr(health, "_last", None, raising=False)
    settings.SLIPWAY_HEALTH_CACHE_SECONDS = 60
    return made


def inside_the_cache(thread: threading.Thread) -> bool:
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code is health.cached.__code__:
            return True
        frame = frame.f_back
    return False


def test_concurrent_callers_share_one_probe_run(probe):
    probe.hold.clear()
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(health.cached())) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    wait_for(lambda: probe.runs == 1 and all(inside_the_cache(t) for t in threads), 10,
             "every caller to be waiting while the first probe run is in flight")
    probe.hold.set()
    for thread in threads:
        thread.join(10)
    assert probe.runs == 1
    assert len(answers) == CALLERS and all(answer is answers[0] for answer in answers)


def test_within_the_window_healthz_answers_from_the_cache(client, probe):
    first = client.get("/healthz")
    second = client.get("/healthz")
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json()["checks"]["redis"]["message"] == "run 1"
    assert probe.runs == 1


def test_with_no_window_each_call_runs_the_probes(client, probe, settings):
    settings.SLIPWAY_HEALTH_CACHE_SECONDS = 0
    assert [client.get("/healthz").json()["checks"]["redis"]["message"] for _ in range(2)] == ["run 1", "run 2"]


def test_tests_run_with_no_health_cache():
    from django.conf import settings

    assert settings.SLIPWAY_HEALTH_CACHE_SECONDS == 0
