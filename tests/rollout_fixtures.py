"""A rollout made directly in the database, for the pages, the API, the metrics and the
console (no worker, no AWS): a deployment of version 2 over stable version 1, with the
events a canary or linear rollout writes."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from portal.models import Deployment, Rollout, RolloutEvent

Status = Deployment.Status


def rolling_out(function, *, environment=None, status=Status.ROLLING_OUT, weights=(0.1,), strategy="canary",
                percent=10, minutes=5, minutes_ago=6, pk=None, **fields) -> Deployment:
    """A deployment whose rollout wrote `weights` one minute apart, starting `minutes_ago`."""
    environment = environment or function.first_environment
    started = timezone.now() - timedelta(minutes=minutes_ago)
    deployment = Deployment.objects.create(pk=pk, function=function, environment=environment, trigger="ui",
                                           status=status, version="2", previous_version="1", commit_sha="b" * 40,
                                           started_at=started)
    item = Rollout.objects.create(deployment=deployment, strategy=strategy, percent=percent, minutes=minutes,
                                  stable_version="1", new_version="2", weight=weights[-1] if weights else 0.0,
                                  step=max(len(weights) - 1, 0), step_started_at=started,
                                  next_tick_at=timezone.now() + timedelta(seconds=30), **fields)
    Rollout.objects.filter(pk=item.pk).update(started_at=started)
    item.refresh_from_db()
    RolloutEvent.objects.create(rollout=item, action="start", weight=0.0, at=started, note="stable v1")
    for index, weight in enumerate(weights):
        RolloutEvent.objects.create(rollout=item, action="shift", weight=weight,
                                    at=started + timedelta(minutes=index, seconds=1))
    return deployment
