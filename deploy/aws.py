"""The one seam to AWS: a lazily built boto3 client per service.

The standard credential chain and region apply. AWS_ENDPOINT_URL (read by
boto3 itself) points every client at the local plane; nothing else in the
pipeline knows which plane it talks to.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading

_lock = threading.Lock()
_clients: dict[tuple, object] = {}


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def client(service: str, *, timeout: float = 60, retries: int = 4):
    """A shared client for `service`; `timeout`/`retries` give a separate one
    (a health probe must fail in a second, a deploy must not)."""
    key = (service, timeout, retries, os.environ.get("AWS_ENDPOINT_URL", ""), region())
    with _lock:
        if key not in _clients:
            import boto3
            from botocore.config import Config

            config = Config(connect_timeout=min(timeout, 10), read_timeout=timeout,
                            retries={"max_attempts": retries, "mode": "standard"})
            made = boto3.session.Session().client(service, region_name=region(), config=config)
            _install_faults(made, service)
            _clients[key] = made
        return _clients[key]


def reset() -> None:
    """Forget cached clients (after the environment changed, e.g. in tests)."""
    with _lock:
        _clients.clear()


# --- Fault injection (tests only) ---------------------------------------------
# The local plane never answers "update in progress" or fails an update, so the
# tests that cover those paths inject them here, at the seam, in a real worker
# process. Off unless SLIPWAY_FAULTS_FILE is set, and refused without
# SLIPWAY_TESTING=1. The file holds a JSON list of faults:
#   {"operation": "UpdateFunctionCode", "error": "ResourceConflictException", "times": 2}
#   {"operation": "GetFunction", "patch": {"Configuration": {"LastUpdateStatus": "Failed"}}, "times": 5}
# optionally with "function": NAME; "times" counts down across processes.


def _install_faults(made, service: str) -> None:
    path = os.environ.get("SLIPWAY_FAULTS_FILE")
    if not path:
        return
    if os.environ.get("SLIPWAY_TESTING") != "1":
        raise RuntimeError("SLIPWAY_FAULTS_FILE is a test-only switch and is refused without SLIPWAY_TESTING=1")
    event_service = made.meta.service_model.service_id.hyphenize()

    def before(params, model, **_):
        fault = _take_fault(path, model.name, params.get("FunctionName"), "error")
        if fault:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": fault["error"], "Message": f"injected {fault['error']}"}},
                              model.name)

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
