"""Every beat checks a rollout's alarms: a tick releases the rollout a few ms after its beat
fired and makes it due a tick later, so the next beat finds it due a few ms early. Found by
bench/rollout_abort.py (aborts up to two ticks late before)."""

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from portal.deployments import health, rollout
from portal.deployments.models import Deployment, Rollout
from tests.rollout_plane import Plane
from tests.test_rollout import started

Status = Deployment.Status


@pytest.fixture
def alarm_fires():
    with mock.patch.multiple(health, prepare=mock.DEFAULT, alarm_failures=mock.DEFAULT, probe=mock.DEFAULT,
                             delete_alarms=mock.DEFAULT, delete_ended=mock.DEFAULT) as patched:
        patched["alarm_failures"].side_effect = lambda due: {row.pk: "alarm:slipway-hello-errors" for row in due}
        yield patched


@pytest.mark.parametrize("due_in_s, checked", [(0.2, True), (1.4, True), (1.6, False), (2.9, False)])
def test_the_beat_checks_a_rollout_due_within_half_a_tick(function, alarm_fires, settings, due_in_s, checked):
    settings.SLIPWAY_ROLLOUT_TICK = 3
    plane = Plane()
    deployment = started(function, plane)
    Rollout.objects.filter(deployment=deployment).update(next_tick_at=timezone.now() + timedelta(seconds=due_in_s))
    with plane.serving():
        rollout.tick("tick-1")
    deployment.refresh_from_db()
    assert deployment.status == (Status.ABORTING if checked else Status.ROLLING_OUT)
    assert alarm_fires["alarm_failures"].called is checked


def test_a_rollout_just_started_is_checked_at_the_next_beat(function, alarm_fires, settings):
    settings.SLIPWAY_ROLLOUT_TICK = 3
    plane = Plane()
    deployment = started(function, plane)  # next_tick_at as the start left it
    with plane.serving():
        rollout.tick("tick-1")
    deployment.refresh_from_db()
    assert deployment.status == Status.ABORTING and alarm_fires["alarm_failures"].called
