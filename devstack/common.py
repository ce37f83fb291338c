"""Small shared pieces of the local stack: paths, the error type, subprocess."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


class StackError(Exception):
    """A part of the local stack could not be brought up.

    Printed as one line: what failed and what to do about it.
    """

    def __init__(self, what: str, fix: str = ""):
        super().__init__(what)
        self.what = what
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.what} — {self.fix}" if self.fix else self.what


def state_dir() -> Path:
    """Where the stack keeps venvs, caches, logs and data (git-ignored)."""
    path = Path(os.environ.get("SLIPWAY_STATE_DIR", REPO_ROOT / "var"))
    path.mkdir(parents=True, exist_ok=True)
    return path


# One lock for everything that prints to the terminal, so lines never interleave.
OUTPUT_LOCK = threading.Lock()


def say(message: str) -> None:
    with OUTPUT_LOCK:
        print(f"[stack] {message}", flush=True)


def run(args: list[str], *, what: str, fix: str = "", env: dict | None = None,
        cwd: Path | None = None, timeout: float = 1800) -> str:
    """Run a command (argument list, never a shell string); StackError on failure.

    The last lines of its output go into the error so the one-line message
    stays precise without flooding the terminal.
    """
    try:
        done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise StackError(f"{what}: {args[0]} not found", fix) from exc
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{what}: timed out after {timeout:.0f}s", fix) from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise StackError(f"{what}: exit {done.returncode}: {' / '.join(tail)}", fix)
    return done.stdout


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def is_root() -> bool:
    return os.geteuid() == 0


def which(name: str) -> str | None:
    return shutil.which(name)


def python_for_tools() -> str:
    """The interpreter running the stack (the project's virtualenv)."""
    return sys.executable
