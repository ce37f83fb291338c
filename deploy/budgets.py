"""How long Slipway waits on each system it calls, in one place.

Every network call has a bounded time: a dependency that hangs (a frozen
Redis, an AWS endpoint that drops packets, a git host that never answers)
costs at most its budget here, then the caller reports it. The README's table
"Timeouts" lists each with what a user sees when it runs out; keep both true.

Django-free (deploy/ imports nothing of Django): the settings read these for
Celery and the web side; deploy/aws.py reads the AWS classes directly.
Each can be lowered from the environment (the fault tests run with ~2 s).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be more than 0 seconds")
    return value


# --- Redis (the broker) --------------------------------------------------------------
# redis-py's socket timeouts, set on every broker connection (CELERY_BROKER_TRANSPORT_OPTIONS):
# the read timeout is what bounds a publish to a frozen Redis; the connect timeout, one to a
# host that drops packets. A refused connection fails at once.
REDIS_TIMEOUT = seconds("SLIPWAY_REDIS_TIMEOUT", 2.0)
# Web-side publishes are not retried: one costs at most (WEB_SEND_RETRIES + 1) × REDIS_TIMEOUT.
WEB_SEND_RETRIES = 0
# The most a web request waits on the broker in all (a rollback publishes several tasks after
# commit): after one publish fails, or once this is spent, it sends nothing more; the rows
# stay queued and the sweeper sends them when the broker is back.
REQUEST_BUDGET = seconds("SLIPWAY_REQUEST_BUDGET", 5.0)


# --- AWS ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Aws:
    """One class of AWS call: botocore's connect and read timeouts, and how many
    attempts deploy.aws.call makes at most (botocore's own retries are off)."""

    name: str
    connect: float
    read: float
    attempts: int


# Alias moves and a rollback's checks: someone is waiting to put a release back. Short
# timeouts; throttling is still retried, but no attempt starts that could end past the
# rollback's deadline (deploy.aws.call), so an AWS that does not answer fails it in time.
URGENT = Aws("urgent", connect=seconds("SLIPWAY_AWS_URGENT_CONNECT_TIMEOUT", 2.0),
             read=seconds("SLIPWAY_AWS_URGENT_READ_TIMEOUT", 5.0), attempts=5)
# Deploy steps: updates, waiters, publishes, invokes of a cold image.
LONG = Aws("long", connect=10.0, read=60.0, attempts=5)
# A rollback against an AWS that does not answer fails `aws-unreachable` within this
# (its whole check and alias move; a fallback deploy keeps the long class).
ROLLBACK_DEADLINE = seconds("SLIPWAY_ROLLBACK_AWS_DEADLINE", 30.0)

# --- Health page ----------------------------------------------------------------------
# /healthz answers within this whatever hangs; a probe still running is reported timed out.
HEALTH_TIMEOUT = seconds("SLIPWAY_HEALTH_TIMEOUT", 3.0)
HEALTH_PROBE = 1.0  # Redis ping, worker ping through the broker
HEALTH_AWS = 2.0  # one ListFunctions

# --- Postgres --------------------------------------------------------------------------
DATABASE_CONNECT = int(seconds("SLIPWAY_DATABASE_CONNECT_TIMEOUT", 5))  # libpq's connect_timeout: whole seconds

# --- Git, Docker, outgoing HTTP -------------------------------------------------------
GIT = 300.0  # one git command (fetch of a large repository); ls-remote of a missed push: SLIPWAY_RECONCILE_TIMEOUT
DOCKER = 120.0  # one Docker API request (push, inspect, login); a build: the task's soft time limit
