"""Thin Celery tasks: they take primary keys and hand over to workers.pipeline.

Every task has an explicit, stable name (queued messages outlive renames)
and runs under the soft/hard time limits from settings. A task delivered
twice finds its row already claimed and does nothing.
"""

from __future__ import annotations

from celery import shared_task

from workers import pipeline


@shared_task(name="slipway.deploy", ignore_result=True, acks_late=True)
def deploy(deployment_id: int) -> str:
    return pipeline.run_deploy(deployment_id)


@shared_task(name="slipway.rollback", ignore_result=True, acks_late=True)
def rollback(deployment_id: int) -> str:
    return pipeline.run_rollback(deployment_id)


@shared_task(name="slipway.sweep", ignore_result=True, soft_time_limit=60, time_limit=90)
def sweep() -> dict:
    """Fail deployments whose worker died (`worker-lost`), re-send lost messages."""
    return pipeline.sweep()
