"""The one seam to AWS: a lazily built boto3 client per service, one error
mapper and the one retry layer every AWS call goes through.

The standard credential chain and region apply. AWS_ENDPOINT_URL (read by
boto3 itself) points every client at the local plane; nothing else in the
pipeline knows which plane it talks to.

Retries happen here and nowhere else: botocore's own retries are off
(`total_max_attempts=1`) and pipeline steps do not retry AWS calls, so one API
call is sent at most MAX_ATTEMPTS times, whatever goes wrong. The loop is
deploy/retry.py's, with its policies for the two classes of call.

Timeouts and attempts come by class of call (deploy/budgets.py): deploy steps use
the long class; code run inside `urgent()` (a rollback's check and alias move)
uses the urgent one, starts no attempt that could end past the rollback's deadline, and tells
the step's log about each failed attempt as it happens.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from deploy import budgets, logs, retry, testing
from deploy.errors import AppError, DeployError, UserError

MAX_ATTEMPTS = budgets.LONG.attempts  # the most HTTP requests one API call can make
BACKOFF_BASE = retry.AWS_BACKOFF.first  # seconds before the 2nd attempt, doubling, with jitter
BACKOFF_CAP = retry.AWS_BACKOFF.cap

# What is retried: throttling, the service's own trouble, and Lambda's "update in
# progress" (the function is still applying an earlier change).
RETRYABLE_CODES = frozenset({
    "ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
    "ServiceException", "ServiceUnavailable", "ServiceUnavailableException", "InternalFailure",
    "InternalServerError", "ServerException", "ResourceConflictException", "EC2ThrottledException",
})
# What is the function's fault: its settings, its image or its permissions. Shown, never retried.
USER_CODES = frozenset({
    "InvalidParameterValueException", "InvalidParameterException", "ResourceNotFoundException",
    "CodeStorageExceededException", "InvalidRequestContentException", "RequestTooLargeException",
    "AccessDeniedException", "AccessDenied", "ValidationException", "InvalidLayerException",
    "RepositoryNotFoundException", "ImageNotFoundException", "ImageTagAlreadyExistsException",
    "InvalidParameterValue", "InvalidParameterCombination", "MissingParameter",  # CloudWatch: the alarm template
})

_lock = threading.Lock()
_clients: dict[tuple, object] = {}


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


@dataclass(frozen=True)
class _Urgency:
    budget: budgets.Aws
    deadline: float  # time.monotonic() after which no new attempt starts
    report: Callable[[str], None] | None


_urgency: contextvars.ContextVar[_Urgency | None] = contextvars.ContextVar("slipway_aws_urgency", default=None)


@contextlib.contextmanager
def urgent(deadline: float | None = None, report: Callable[[str], None] | None = None):
    """Calls made inside use the urgent class (short timeouts, few attempts), start no
    attempt after `deadline` seconds (budgets.ROLLBACK_DEADLINE), and pass a line per
    failed attempt to `report` (a step's log) as it happens."""
    seconds = budgets.ROLLBACK_DEADLINE if deadline is None else deadline
    token = _urgency.set(_Urgency(budgets.URGENT, time.monotonic() + seconds, report))
    try:
        yield
    finally:
        _urgency.reset(token)


def client(service: str, *, timeout: float | None = None):
    """A shared client for `service` with the current class's timeouts (urgent inside
    `urgent()`, else long); an explicit `timeout` (read, connect at most 10 s) gives a
    separate one (a health probe must fail in a second, an invoke may run minutes)."""
    if timeout is not None:
        connect, read = min(timeout, 10), timeout
    else:
        urgency = _urgency.get()
        budget = urgency.budget if urgency else budgets.LONG
        connect, read = budget.connect, budget.read
    key = (service, connect, read, os.environ.get("AWS_ENDPOINT_URL", ""), region())
    with _lock:
        if key not in _clients:
            import boto3
            from botocore.config import Config

            config = Config(connect_timeout=connect, read_timeout=read,
                            retries={"total_max_attempts": 1, "mode": "standard"})
            made = boto3.session.Session().client(service, region_name=region(), config=config)
            testing.instrument(made)  # the recorder and fault injection; nothing unless SLIPWAY_TESTING
            _clients[key] = made
        return _clients[key]


def reset() -> None:
    """Forget cached clients (after the environment changed, e.g. in tests)."""
    with _lock:
        _clients.clear()


def error_code(exc: Exception) -> str:
    """The AWS error code of a ClientError, "" for anything else."""
    response = getattr(exc, "response", None)
    return (response or {}).get("Error", {}).get("Code", "") if isinstance(response, dict) else ""


def error(exc: Exception, doing: str, prefix: str) -> DeployError:
    """Map a botocore exception to Slipway's two families, with a stable code.

    AWS's text is cut before "String measured:": Lambda's answer to an oversized
    environment quotes every variable's value there, secrets included."""
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = f"{doing}: {logs.cut_measured(exc.response['Error'].get('Message') or code)}"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code == "PreconditionFailedException":
            return AppError("revision-mismatch", f"{message} (the function was changed by someone else meanwhile)",
                            retryable=False)
        if code in USER_CODES:
            return UserError(f"{prefix}-{code}", message)
        return AppError(f"{prefix}-{code}", message, retryable=code in RETRYABLE_CODES or status >= 500)
    if isinstance(exc, NoCredentialsError):
        return AppError("aws-credentials", f"{doing}: no AWS credentials found", retryable=False)
    return AppError("aws-unreachable", f"{doing}: {logs.cut_measured(str(exc))}")  # refused, timeouts: transient


def call(doing: str, fn: Callable, /, *, prefix: str, missing: tuple[str, ...] = (), attempts: int = MAX_ATTEMPTS,
         **kwargs):
    """Call one AWS API, retrying what is transient, at most `attempts` (MAX_ATTEMPTS) times.

    `missing`: error codes that mean "nothing there"; the call returns None
    for them. Every other failure is a mapped DeployError. `attempts=1`: a call
    a person waits for and may repeat (the console's invoke) is sent once.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    urgency = _urgency.get()
    policy = retry.aws(urgency.budget) if urgency else retry.long_aws()
    most = urgency.budget.attempts if urgency else MAX_ATTEMPTS
    policy = policy.but(attempts=max(1, min(attempts, most)), backoff=backoff)  # backoff(): tests may replace it
    made = 0

    def attempt():
        nonlocal made
        made += 1
        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            if missing and error_code(exc) in missing:
                return None
            mapped = error(exc, doing, prefix)
        raise mapped  # outside the except: botocore's exception is not chained to it, as before

    def report(number: int, failed: DeployError, delay: float) -> None:
        if urgency and urgency.report:
            urgency.report(f"attempt {number} of {policy.attempts} failed ({failed.code}): {failed.message}; "
                           f"retrying in {delay:.1f} s")

    try:
        # Urgent: no attempt starts unless it could end (connect and read timeouts) before the deadline.
        return retry.run(attempt, policy, deadline=urgency.deadline if urgency else None, on_retry=report)
    except DeployError as mapped:
        if mapped.retryable and made > 1:
            mapped.message += f" (after {made} attempts)"
        raise


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): full jitter, capped."""
    return retry.AWS_BACKOFF(attempt)
