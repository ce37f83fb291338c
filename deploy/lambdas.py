"""Lambda: create or update by digest, wait, publish, verify, move the alias.

Every write that Lambda may refuse with ResourceConflictException (an update
still in progress) is retried a bounded number of times with backoff.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from deploy import aws
from deploy.errors import AppError, DeployError, UserError

_USER_CODES = {
    "InvalidParameterValueException", "ResourceNotFoundException", "CodeStorageExceededException",
    "InvalidRequestContentException", "RequestTooLargeException", "AccessDeniedException",
    "PreconditionFailedException",
}
CONFLICT_ATTEMPTS = 6


@dataclass
class Settings:
    """What the function should look like in Lambda."""

    name: str
    architecture: str  # arm64 | x86_64
    memory_mb: int
    timeout_s: int
    environment: dict
    role_arn: str


def _error(exc: Exception, doing: str) -> DeployError:
    if isinstance(exc, ClientError):
        code = exc.response["Error"]["Code"]
        message = f"{doing}: {exc.response['Error'].get('Message', code)}"
        if code in _USER_CODES:
            return UserError(f"lambda-{code}", message)
        return AppError(f"lambda-{code}", message)
    return AppError("aws-unreachable", f"{doing}: {exc}")


def call(doing: str, fn: Callable, /, **kwargs):
    """Call a Lambda API, waiting out update-in-progress conflicts (bounded)."""
    for attempt in range(CONFLICT_ATTEMPTS):
        try:
            return fn(**kwargs)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceConflictException":
                raise _error(exc, doing) from None
            if attempt == CONFLICT_ATTEMPTS - 1:
                raise AppError("update-conflict", f"{doing}: Lambda still reports an update in progress after "
                               f"{CONFLICT_ATTEMPTS} attempts") from None
            time.sleep(min(0.5 * 2 ** attempt, 8))
        except BotoCoreError as exc:
            raise _error(exc, doing) from None


def client():
    return aws.client("lambda")


def _read(doing: str, fn: Callable, /, **kwargs):
    """A read that may find nothing: None for ResourceNotFoundException, errors mapped otherwise."""
    try:
        return fn(**kwargs)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        raise _error(exc, doing) from None
    except BotoCoreError as exc:
        raise _error(exc, doing) from None


def get_configuration(name: str) -> dict | None:
    return _read(f"reading {name}", client().get_function_configuration, FunctionName=name)


def create(settings: Settings, image_uri: str, description: str) -> dict:
    if not settings.role_arn:
        raise UserError("missing-role", "the first deploy creates the Lambda and needs an execution role ARN")
    created = call(f"creating {settings.name}", client().create_function,
                   FunctionName=settings.name, PackageType="Image", Code={"ImageUri": image_uri},
                   Role=settings.role_arn, Architectures=[settings.architecture], MemorySize=settings.memory_mb,
                   Timeout=settings.timeout_s, Environment={"Variables": settings.environment},
                   Description=description[:256])
    wait_active(settings.name)
    return created


def configuration_changes(current: dict, settings: Settings) -> dict:
    """The UpdateFunctionConfiguration arguments that differ from `current`."""
    changes = {}
    if current.get("MemorySize") != settings.memory_mb:
        changes["MemorySize"] = settings.memory_mb
    if current.get("Timeout") != settings.timeout_s:
        changes["Timeout"] = settings.timeout_s
    if (current.get("Environment") or {}).get("Variables", {}) != settings.environment:
        changes["Environment"] = {"Variables": settings.environment}
    return changes


def update_configuration(settings: Settings, changes: dict) -> None:
    call(f"updating the configuration of {settings.name}", client().update_function_configuration,
         FunctionName=settings.name, **changes)
    wait_updated(settings.name)


def update_code(settings: Settings, image_uri: str) -> dict:
    """Point $LATEST at the image digest, guarded by the RevisionId read just before
    each attempt (the update that made Lambda answer "conflict" changes it)."""

    def attempt(**kwargs):
        current = get_configuration(settings.name) or {}
        if current.get("RevisionId"):
            kwargs["RevisionId"] = current["RevisionId"]
        return client().update_function_code(**kwargs)

    return call(f"updating the code of {settings.name}", attempt, FunctionName=settings.name, ImageUri=image_uri,
                Architectures=[settings.architecture])


# Lambda applies most image updates within a second or two: poll early, then back off
# to one request every 2 s (the SDK waiters start at 1-5 s between polls).
POLL_DELAYS = (0.1, 0.2, 0.3, 0.5, 1.0)
POLL_MAX_DELAY = 2.0
WAIT_TIMEOUT = 600


def _wait(name: str, field: str, done: str, pending: tuple[str, ...], doing: str) -> dict:
    """Poll GetFunction until `field` is `done`; a Failed state becomes a UserError with Lambda's reason."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    for attempt in range(10_000):
        try:
            config = client().get_function(FunctionName=name)["Configuration"]
        except (ClientError, BotoCoreError) as exc:
            raise _error(exc, f"waiting for {name}") from None
        state = config.get(field)
        if state in (done, None):  # None: a plane that does not track this state has nothing in progress
            return config
        if state == "Failed":
            prefix = "LastUpdateStatus" if field == "LastUpdateStatus" else "State"
            code = config.get(f"{prefix}ReasonCode") or "Failed"
            reason = config.get(f"{prefix}Reason") or "no reason given"
            raise UserError(f"lambda-update-failed-{code}", f"Lambda could not apply the update: {reason}")
        if state not in pending or time.monotonic() > deadline:
            raise AppError("lambda-wait-failed", f"{name} did not finish {doing}: {field}={state}")
        time.sleep(POLL_DELAYS[attempt] if attempt < len(POLL_DELAYS) else POLL_MAX_DELAY)
    raise AppError("lambda-wait-failed", f"{name} did not finish {doing}")


def wait_active(name: str) -> dict:
    return _wait(name, "State", "Active", ("Pending",), "becoming active")


def wait_updated(name: str) -> dict:
    return _wait(name, "LastUpdateStatus", "Successful", ("InProgress",), "updating")


def publish(name: str, description: str, code_sha256: str = "") -> str:
    kwargs = {"FunctionName": name, "Description": description[:256]}
    if code_sha256:
        kwargs["CodeSha256"] = code_sha256
    return call(f"publishing a version of {name}", client().publish_version, **kwargs)["Version"]


def invoke(name: str, qualifier: str, event: dict) -> tuple[str, object]:
    """(FunctionError or "", decoded result)."""
    response = call(f"invoking {name}:{qualifier}", client().invoke, FunctionName=name, Qualifier=qualifier,
                    Payload=json.dumps(event).encode())
    raw = response["Payload"].read()
    try:
        result = json.loads(raw) if raw else None
    except ValueError:
        result = raw.decode(errors="replace")
    return response.get("FunctionError", ""), result


def alias_version(name: str, alias: str) -> str | None:
    found = _read(f"reading alias {alias} of {name}", client().get_alias, FunctionName=name, Name=alias)
    return found["FunctionVersion"] if found else None


def point_alias(name: str, alias: str, version: str) -> str | None:
    """Move (or create) `alias` to `version`; returns the version it pointed at before."""
    before = alias_version(name, alias)
    if before is None:
        call(f"creating alias {alias}", client().create_alias, FunctionName=name, Name=alias, FunctionVersion=version)
    else:
        call(f"moving alias {alias}", client().update_alias, FunctionName=name, Name=alias, FunctionVersion=version)
    return before


def version_exists(name: str, version: str) -> bool:
    return _read(f"reading version {version} of {name}", client().get_function_configuration,
                 FunctionName=name, Qualifier=version) is not None
