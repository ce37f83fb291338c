"""The one retry loop: a call is made again only as its policy says.

A Policy names how many times a call is made at most, how long to wait between
attempts, which raised errors are worth another attempt and (for calls that
answer rather than raise, such as an HTTP post) which answers are. Everything
else, what an attempt logs or cleans up before the next, is the caller's
`on_retry`. Plain Python (deploy/ imports nothing of Django): the AWS seam uses
it directly, the portal builds its own policies on top (a database write tried
once more on a new connection, commit statuses and notifications).

The policies shared across callers are here: the two classes of AWS call of
deploy/budgets.py (urgent: a rollback's check and alias move; long: deploy
steps) and the one for docker and git calls inside a pipeline step.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from deploy import budgets
from deploy.errors import AppError

T = TypeVar("T")


def never(_: Any) -> bool:
    return False


def transient(exc: BaseException) -> bool:
    """The platform's trouble that may pass (an AppError marked retryable), never the user's."""
    return isinstance(exc, AppError) and exc.retryable


@dataclass(frozen=True)
class Doubling:
    """Seconds to wait after failed attempt n (1-based): first, 2×first, 4×first … at most
    `cap`. With `jitter`, a random wait in the upper half of that, so that many callers
    failing at once (a throttled AWS account) do not all come back at once."""

    first: float
    cap: float = math.inf
    jitter: bool = False

    def __call__(self, attempt: int) -> float:
        ceiling = min(self.cap, self.first * 2 ** (attempt - 1))
        if not self.jitter:
            return ceiling
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not a secret


NO_WAIT = Doubling(0.0)


@dataclass(frozen=True)
class Policy:
    """How one kind of call is retried."""

    name: str
    attempts: int  # the most times the call is made, the first included
    backoff: Callable[[int], float] = NO_WAIT  # seconds to wait after failed attempt n (1-based)
    retry_on: Callable[[BaseException], bool] = never  # which raised errors are worth another attempt
    retry_result: Callable[[Any], bool] = never  # which answers are (a refused HTTP post); the last is returned
    # The most one attempt can take (its timeouts): with a deadline, no attempt starts that could end past it.
    longest: float = 0.0

    def but(self, **changes) -> Policy:
        return dataclasses.replace(self, **changes)


def run(fn: Callable[[], T], policy: Policy, *, deadline: float | None = None,
        on_retry: Callable[[int, Any, float], None] | None = None) -> T:
    """Call `fn()` up to `policy.attempts` times; return its first answer the policy does
    not retry (or the last one), raise its first error the policy does not retry (or the
    last one).

    `deadline` (a time.monotonic() value): no attempt starts that could not end (the
    wait, then `policy.longest`) before it; the last failure is then the outcome.
    `on_retry(attempt, error_or_answer, delay)` is called after each failed attempt
    that is tried again, before the wait (a line on a step's log, a closed connection)."""
    attempts = max(1, policy.attempts)
    for attempt in range(1, attempts + 1):
        try:
            outcome = fn()
        except Exception as exc:
            if not policy.retry_on(exc) or attempt == attempts:
                raise
            delay = policy.backoff(attempt)
            if _out_of_time(policy, delay, deadline):
                raise
            outcome = exc
        else:
            if not policy.retry_result(outcome) or attempt == attempts:
                return outcome
            delay = policy.backoff(attempt)
            if _out_of_time(policy, delay, deadline):
                return outcome
        if on_retry is not None:
            on_retry(attempt, outcome, delay)
        if delay > 0:
            time.sleep(delay)
    raise AssertionError("unreachable")


def _out_of_time(policy: Policy, delay: float, deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() + delay + policy.longest > deadline


# --- The shared policies ------------------------------------------------------------------

# AWS: half a second before the 2nd attempt, doubling, jittered, at most 8 s.
AWS_BACKOFF = Doubling(0.5, cap=8.0, jitter=True)


def aws(budget: budgets.Aws) -> Policy:
    """One class of AWS call (deploy/budgets.py), read when called: the environment and
    the tests lower the budgets. Retries throttling, the service's own trouble and
    Lambda's "update in progress" (deploy.aws.error marks them retryable); the user's
    errors never."""
    return Policy(f"aws-{budget.name}", attempts=budget.attempts, backoff=AWS_BACKOFF, retry_on=transient,
                  longest=budget.connect + budget.read)


def urgent_aws() -> Policy:
    """A rollback's check and alias move: short timeouts, few attempts, within a deadline."""
    return aws(budgets.URGENT)


def long_aws() -> Policy:
    """Deploy steps: updates, waiters, publishes, invokes of a cold image."""
    return aws(budgets.LONG)


# Docker and git calls inside a pipeline step: a transient error is tried 3 more times, after 1, 2, 4 s.
APP = Policy("app", attempts=4, backoff=Doubling(1.0), retry_on=transient)
