"""The one seam to command-line tools (the BuildKit-capable docker CLI).

Argument lists only, never a shell string. Output is streamed line by line
to a callback as it happens. The child gets SIGKILL if the worker process
running it dies, so a killed worker leaves no orphaned build behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the thread that started it dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def stream(args: list[str], *, env: dict[str, str] | None = None, on_line: Callable[[str], None],
           timeout: float = 1800, on_start: Callable[[int], None] | None = None) -> int:
    """Run `args`, feeding each output line to `on_line`; returns the exit status
    (-9 when it was killed for running past `timeout`)."""
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
    if on_start:
        on_start(proc.pid)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        for raw in iter(proc.stdout.readline, b""):
            on_line(raw.decode("utf-8", errors="replace").rstrip("\n"))
        return proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def environ(**extra: str) -> dict[str, str]:
    return {**os.environ, **{k: v for k, v in extra.items() if v}}
