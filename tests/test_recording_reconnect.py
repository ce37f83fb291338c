"""A connection cut mid-task (Postgres restarted, the server dropped it) fails the next
query on it: the step recorder and the heartbeat close it and write once more, so the
deployment completes or settles with a clear code instead of staying running."""

import threading
from unittest import mock

import pytest
from django.db import OperationalError, connection

from portal.deployments import recording
from portal.models import Deployment, DeploymentStep
from tests.conftest import wait_for

pytestmark = pytest.mark.postgres
Status = Deployment.Status


def cut() -> None:
    """Close this thread's connection behind Django's back, as a server restart does."""
    connection.ensure_connection()
    connection.connection.close()


@pytest.fixture
def running(transactional_db, function):
    deployment = Deployment.objects.create(function=function, trigger="cli", ref="main")
    assert deployment.claim(Status.SOURCE, "task-1")
    return deployment


def test_the_recorder_writes_its_step_after_the_connection_was_cut(running):
    rec = recording.Recorder(running)
    with rec.step("source") as out:
        out("before the cut")
        cut()
        out("after the cut")
    step = running.steps.get(name="source")
    assert (step.status, step.output) == (DeploymentStep.Status.SUCCEEDED, "before the cut\nafter the cut")


def test_a_deployment_whose_connection_was_cut_still_settles(running):
    def steps():
        with recording.Recorder(running).step("build"):
            cut()

    recording.settle(running, steps)
    running.refresh_from_db()
    assert running.status == Status.SUCCEEDED


def test_a_database_gone_for_good_settles_with_a_clear_code(running):
    def steps():
        raise OperationalError("server closed the connection unexpectedly")

    recording.settle(running, steps)
    running.refresh_from_db()
    assert (running.status, running.error_code) == (Status.FAILED, "database-unavailable")


def test_a_missed_heartbeat_is_written_once_more_at_once(running):
    beats, failed = [], threading.Event()

    def beat(self):
        beats.append(1)
        if len(beats) == 1:
            failed.set()
            raise OperationalError("terminating connection due to administrator command")
        return True

    with mock.patch.object(Deployment, "beat", beat):
        with recording.heartbeat(running, interval=1):
            wait_for(failed.is_set, 5, "the first heartbeat")
        # Leaving stops the beats: a second one came only from the immediate retry, not a later beat.
    assert len(beats) == 2
