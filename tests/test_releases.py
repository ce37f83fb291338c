"""Which deployment is live: one query (portal/deployments/releases.py) that the pages,
the stale check, reconcile, rollback targets and retention all read."""

from datetime import timedelta

from django.utils import timezone

from portal import deployments
from portal.models import Deployment
from tests.conftest import released

Status = Deployment.Status


def test_the_live_deployment_is_the_newest_to_succeed_with_a_version(db, function):
    now = timezone.now()
    released(function, "1", "a" * 40, finished_at=now - timedelta(minutes=2))
    live = released(function, "2", "b" * 40, finished_at=now - timedelta(minutes=1))
    Deployment.objects.create(function=function, trigger="cli", status=Status.FAILED, version="3", finished_at=now)
    Deployment.objects.create(function=function, trigger="cli", status=Status.SUCCEEDED, finished_at=now)
    assert deployments.live_deployment(function.first_environment) == live
    assert list(deployments.went_live(function.first_environment).values_list("version", flat=True)) == ["2", "1"]


def test_a_rollback_to_an_older_release_is_what_is_live_after_it(db, function):
    now = timezone.now()
    first = released(function, "1", "a" * 40, finished_at=now - timedelta(minutes=2))
    released(function, "2", "b" * 40, finished_at=now - timedelta(minutes=1))
    back = Deployment.objects.create(function=function, build=first.build, trigger="cli", kind=Deployment.Kind.ROLLBACK,
                                     status=Status.SUCCEEDED, version="1", finished_at=now)
    assert deployments.live_deployment(function.first_environment) == back


def test_nothing_is_live_before_a_first_success(db, function):
    Deployment.objects.create(function=function, trigger="cli", status=Status.FAILED, version="1")
    assert deployments.live_deployment(function.first_environment) is None
