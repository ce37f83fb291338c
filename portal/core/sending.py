"""The one place tasks are sent to the broker, and each web request's budget for it.

A web request never waits on the broker longer than SLIPWAY_REQUEST_BUDGET in
all: a request may publish several tasks after commit (a rollback, a GitLab
pending status, superseded rows), each costing at most
(WEB_SEND_RETRIES + 1) × SLIPWAY_REDIS_TIMEOUT (deploy/budgets.py). Once one
publish fails, or the budget is spent, the request sends nothing more: the
rows stay queued (the database is the queue) and the sweeper sends them when
the broker is back. Outside a request (workers, commands) each send stands
alone with Celery's usual retries.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from dataclasses import dataclass, field

from django.conf import settings

from portal.celery import app


class QueueDown(Exception):
    """The broker did not take a task within this request's budget (or an earlier one failed)."""


@dataclass
class Budget:
    seconds: float
    spent: float = 0.0
    failure: str = ""  # why the first publish that failed did: later sends are skipped
    unsent: set = field(default_factory=set)  # deployment pks whose task was not sent


_budget: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("slipway_send_budget", default=None)


@contextlib.contextmanager
def budget(seconds: float | None = None):
    """Sends inside share one budget (a web request's)."""
    token = _budget.set(Budget(settings.SLIPWAY_REQUEST_BUDGET if seconds is None else seconds))
    try:
        yield _budget.get()
    finally:
        _budget.reset(token)


def current() -> Budget | None:
    return _budget.get()


def send_task(name: str, *, args: list, deployment: int | None = None, **options) -> None:
    """Send a task by name (a dependency on workers/ that import-linter cannot see);
    inside a budget, once, and not at all after a failure.
    Raises QueueDown (or the broker's error outside a budget) when it was not sent."""
    spending = _budget.get()
    if spending is None:
        app.send_task(name, args=args, **options)
        return
    if spending.failure or spending.spent >= spending.seconds:
        if deployment is not None:
            spending.unsent.add(deployment)
        raise QueueDown(spending.failure or f"the request's {spending.seconds:g} s budget for the queue is spent")
    started = time.monotonic()
    try:
        app.send_task(name, args=args, retry=True, retry_policy={"max_retries": settings.SLIPWAY_WEB_SEND_RETRIES},
                      **options)
    except Exception as exc:  # kombu's OperationalError and friends
        spending.failure = f"the queue did not take a task: {exc}"
        if deployment is not None:
            spending.unsent.add(deployment)
        raise QueueDown(spending.failure) from exc
    finally:
        spending.spent += time.monotonic() - started


def unsent(deployment: int) -> bool:
    """Did this request fail to send the task of `deployment`?"""
    spending = _budget.get()
    return spending is not None and deployment in spending.unsent


class BudgetMiddleware:
    """Each request sends within its own budget."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        with budget():
            return self.get_response(request)
