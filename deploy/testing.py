"""Test-only pause points, on the fault-injection file of deploy/aws.py.

A race between a worker and a request (a cancel landing just before the move
to updating) cannot be provoked by timing alone; a test holds the real worker
at a named point instead. Off unless SLIPWAY_FAULTS_FILE is set, and refused
unless SLIPWAY_TESTING is true, exactly like the AWS faults. An entry of that
file
  {"pause": "enter-lambda-steps", "function": NAME, "held": PATH, "release": PATH}
makes the next worker that reaches `pause("enter-lambda-steps", NAME)` write
PATH `held` (its pid) and wait there until PATH `release` exists, at most
"timeout" seconds (120); "times" counts down across processes as for faults.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from deploy import envvars
from deploy.aws import _take_fault

DEFAULT_TIMEOUT = 120


def pause(point: str, function: str) -> None:
    path = os.environ.get("SLIPWAY_FAULTS_FILE")
    if not path:
        return
    if not envvars.flag("SLIPWAY_TESTING"):
        raise RuntimeError("SLIPWAY_FAULTS_FILE is a test-only switch and is refused unless SLIPWAY_TESTING is true")
    entry = _take_fault(path, point, function, "pause")
    if not entry:
        return
    Path(entry["held"]).write_text(str(os.getpid()))
    release = Path(entry["release"])
    deadline = time.monotonic() + entry.get("timeout", DEFAULT_TIMEOUT)
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
