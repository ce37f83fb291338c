"""Test-only hooks at the seams: the AWS call recorder, AWS fault injection and
pause points. Active only when SLIPWAY_TESTING is true (tests/conftest.py sets
it for every test process, and the workers and servers those start inherit it);
each switch below set without it is refused, so a production process can never
run with a fault file or a recorder by accident.

deploy/aws.py calls `instrument(client)` once per client it builds; the worker
calls `pause(point, function)` where a test must hold it. Imports nothing of
Django, portal, workers or devstack (deploy/ is the bottom layer).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path

from deploy import envvars

DEFAULT_TIMEOUT = 120


def _active(switch: str) -> str:
    """The path `switch` names, "" when unset; refused unless SLIPWAY_TESTING is true."""
    path = os.environ.get(switch, "")
    if path and not envvars.flag("SLIPWAY_TESTING"):
        raise RuntimeError(f"{switch} is a test-only switch and is refused unless SLIPWAY_TESTING is true")
    return path


def instrument(made) -> None:
    """Install the fault injection and the call recorder on a boto3 client, each
    only when its switch is set (and SLIPWAY_TESTING is true)."""
    _install_faults(made)
    _install_recorder(made)


# --- Recording the operations called ----------------------------------------------------
# With SLIPWAY_AWS_CALLS_FILE set, every API call a client makes appends one JSON
# line {"action": "lambda:Invoke", "role": "web"|"worker"|"other", and RECORDED_PARAMETERS} to that file:
# tests/test_infra.py checks each against the process's IAM policy in
# infra/terraform. The role is SLIPWAY_AWS_CALLS_ROLE when the process
# sets it (the test workers do), else read off the call stack: inside a Django
# request it is the web process, inside a Celery task or a management command
# (retention runs where the workers run) the worker.


# Which function, alias and statement a call was about (never a payload, an environment or a policy):
# the previews' clean-up is asserted from them (RemovePermission with Qualifier=mr-<iid>).
RECORDED_PARAMETERS = ("FunctionName", "Qualifier", "Name", "StatementId")


def _install_recorder(made) -> None:
    path = _active("SLIPWAY_AWS_CALLS_FILE")
    if not path:
        return
    prefix = made.meta.service_model.signing_name  # IAM's service prefix: lambda, ecr, s3
    event_service = made.meta.service_model.service_id.hyphenize()

    def record(params, model, **_):
        entry = {"action": f"{prefix}:{model.name}", "role": calling_role(), "pid": os.getpid()}
        entry.update({key: params[key] for key in RECORDED_PARAMETERS if isinstance(params.get(key), str)})
        with open(path, "a") as handle:  # one short line per write: O_APPEND keeps lines whole
            handle.write(json.dumps(entry) + "\n")

    made.meta.events.register(f"before-parameter-build.{event_service}", record)


def calling_role() -> str:
    role = os.environ.get("SLIPWAY_AWS_CALLS_ROLE")
    if role:
        return role
    # Read by module name off the stack, not imported: deploy/ imports nothing of Django or Celery.
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.startswith("django.core.handlers"):
            return "web"
        if module.startswith(("celery.app.trace", "django.core.management")):
            return "worker"
        frame = frame.f_back
    return "other"


# --- Fault injection ---------------------------------------------------------------------
# The local plane never answers "update in progress", fails an update or
# checks a RevisionId on publish, so the tests that cover those paths inject
# them here, at the seam, in a real worker process. Off unless
# SLIPWAY_FAULTS_FILE is set, and refused unless SLIPWAY_TESTING is true.
# The file holds a JSON list of faults:
#   {"operation": "UpdateFunctionCode", "error": "ResourceConflictException", "times": 2}
#   {"operation": "CreateFunction", "error": "InvalidParameterValueException", "message": "AWS's own text"}
#   {"operation": "GetFunction", "patch": {"Configuration": {"LastUpdateStatus": "Failed"}}, "times": 5}
# optionally with "function": NAME; "times" counts down across processes.


def _install_faults(made) -> None:
    path = _active("SLIPWAY_FAULTS_FILE")
    if not path:
        return
    event_service = made.meta.service_model.service_id.hyphenize()

    def before(params, model, **_):
        fault = _take_fault(path, model.name, params.get("FunctionName"), "error")
        if fault:
            from botocore.exceptions import ClientError

            message = fault.get("message") or f"injected {fault['error']}"
            raise ClientError({"Error": {"Code": fault["error"], "Message": message}}, model.name)

    def after(parsed, model, **_):
        config = parsed.get("Configuration", parsed) if isinstance(parsed, dict) else {}
        fault = _take_fault(path, model.name, config.get("FunctionName"), "patch")
        if fault:
            for key, value in fault["patch"].items():
                if isinstance(value, dict) and isinstance(parsed.get(key), dict):
                    parsed[key].update(value)
                else:
                    parsed[key] = value

    made.meta.events.register(f"before-parameter-build.{event_service}", before)
    made.meta.events.register(f"after-call.{event_service}", after)


def _take_fault(path: str, operation: str, function: str | None, kind: str) -> dict | None:
    try:
        handle = open(path, "r+")
    except FileNotFoundError:
        return None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        faults = json.loads(handle.read() or "[]")
        for fault in faults:
            if (fault.get("operation") == operation and kind in fault and fault.get("times", 1) > 0
                    and fault.get("function", function) == function):
                fault["times"] = fault.get("times", 1) - 1
                handle.seek(0)
                handle.truncate()
                handle.write(json.dumps(faults))
                return fault
    return None


# --- Pause points ------------------------------------------------------------------------
# A race between a worker and a request (a cancel landing just before the move
# to updating) cannot be provoked by timing alone; a test holds the real worker
# at a named point instead. An entry of the fault file
#   {"pause": "enter-lambda-steps", "function": NAME, "held": PATH, "release": PATH}
# makes the next worker that reaches `pause("enter-lambda-steps", NAME)` write
# PATH `held` (its pid) and wait there until PATH `release` exists, at most
# "timeout" seconds (120); "times" counts down across processes as for faults.


def pause(point: str, function: str) -> None:
    path = _active("SLIPWAY_FAULTS_FILE")
    if not path:
        return
    entry = _take_fault(path, point, function, "pause")
    if not entry:
        return
    Path(entry["held"]).write_text(str(os.getpid()))
    release = Path(entry["release"])
    deadline = time.monotonic() + entry.get("timeout", DEFAULT_TIMEOUT)
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
