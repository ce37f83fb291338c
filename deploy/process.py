"""The one way the product starts a process.

Every child gets its stdin from /dev/null (unless the caller hands it input),
an environment built from the caller's allow-list of variable names plus
explicit extra variables — never the worker's whole environment, which holds
the Django secret key, the database URL and AWS credentials — and a process
group of its own, so that a timeout kills everything it started (the `ssh`
under git, a buildx plugin under the docker CLI), not only the first process.
A timeout raises `Timeout`, an AppError with the caller's code. A child also
gets SIGKILL when the thread that started it dies, so a killed worker leaves
no orphan behind.

Argument lists only, never a shell string. The shapes the callers need:
`run` (wait, output captured), `stream` (output line by line as it comes),
`pipe` (a process's output read by a consumer while it runs) and `spawn` (a
long-lived helper stopped with `stop`, such as the ssh tunnel to a builder).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO, TypeVar

from deploy.errors import AppError

# What any tool may need to find programs, its home and the user's locale.
BASICS = ("PATH", "HOME", "USER", "LANG", "LC_*", "TZ", "TMPDIR")
DEFAULT_PATH = "/usr/bin:/bin"
_PR_SET_PDEATHSIG = 1
T = TypeVar("T")


class Timeout(AppError):
    """A process ran past its time; it and everything it started were killed."""


class Failed(AppError):
    """The process feeding a `pipe` exited with an error."""


class Environment(dict[str, str]):
    """A child's environment, built by `environment` only: the process functions refuse a plain dict."""


def environment(allow: Iterable[str] = (), extra: dict[str, str | None] | None = None) -> Environment:
    """The basics and the variables `allow` names (`NAME`, or `PREFIX_*` for a family) that
    this process has set to something (an empty one counts as unset), then `extra` on top
    (a None value takes the variable out)."""
    names = (*BASICS, *allow)
    exact = {name for name in names if not name.endswith("*")}
    prefixes = tuple(name[:-1] for name in names if name.endswith("*"))
    env = Environment({key: value for key, value in os.environ.items()
                       if value and (key in exact or (prefixes and key.startswith(prefixes)))})
    env.setdefault("PATH", DEFAULT_PATH)
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the thread that started it dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def _start(args: list[str], env: Environment | None, cwd, **streams) -> subprocess.Popen:
    if env is None:
        env = environment()
    elif not isinstance(env, Environment):
        raise TypeError("build a child's environment with deploy.process.environment(allow, extra)")
    streams.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(list(args), env=dict(env), cwd=cwd, start_new_session=True,
                            preexec_fn=die_with_parent, **streams)


def _kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the child's whole process group. Only while the child is not reaped: its pid
    (the group's id) cannot have been reused until then."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass


def _timeout(args: list[str], what: str | None, timeout: float, code: str) -> Timeout:
    return Timeout(code, f"{what or os.path.basename(args[0])} took longer than {timeout:.0f} s")


def run(args: list[str], *, timeout: float, env: Environment | None = None, cwd=None, input: str | None = None,
        what: str | None = None, timeout_code: str = "process-timeout") -> subprocess.CompletedProcess:
    """Run `args` to the end with its output captured as text; `Timeout` (code
    `timeout_code`, naming `what`) when it runs past `timeout` seconds."""
    proc = _start(args, env, cwd, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        proc.communicate()  # the whole group is gone, so the pipes close
        raise _timeout(args, what, timeout, timeout_code) from None
    except BaseException:  # an interrupt or a task's hard time limit: leave nothing running
        _kill(proc)
        proc.wait()
        raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _alarm(proc: subprocess.Popen, timeout: float) -> tuple[threading.Timer, threading.Event]:
    fired = threading.Event()

    def expire() -> None:
        fired.set()
        _kill(proc)

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    return timer, fired


def stream(args: list[str], *, on_line: Callable[[str], None], timeout: float, env: Environment | None = None,
           cwd=None, on_start: Callable[[int], None] | None = None, what: str | None = None,
           timeout_code: str = "process-timeout") -> int:
    """Run `args`, feeding each line of its output (stdout and stderr) to `on_line` as it
    comes; returns the exit status. `on_start` gets the pid first."""
    proc = _start(args, env, cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    timer, fired = _alarm(proc, timeout)
    try:
        if on_start:
            on_start(proc.pid)
        for raw in iter(proc.stdout.readline, b""):
            on_line(raw.decode("utf-8", errors="replace").rstrip("\n"))
        timer.cancel()
        status = proc.wait(max(deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired:  # output closed, the process still running at the deadline
        fired.set()
    finally:
        timer.cancel()
        _kill(proc)  # a no-op once it has exited and been waited for
        proc.wait()
        proc.stdout.close()
    if fired.is_set():
        raise _timeout(args, what, timeout, timeout_code)
    return status


def pipe(args: list[str], consume: Callable[[IO[bytes]], T], *, timeout: float, env: Environment | None = None,
         cwd=None, what: str | None = None, timeout_code: str = "process-timeout",
         failed_code: str = "process-failed") -> T:
    """Run `args` with its output piped into `consume`, which reads it while it runs;
    returns what `consume` returns.

    When `consume` stops early (raises), the process is killed: left alone it would
    block on the full pipe until the timeout. If the process itself failed, that is
    the error (`Failed`, code `failed_code`, with the end of its stderr) even when
    `consume` raised too, since a truncated stream is what made it raise; otherwise
    `consume`'s exception is raised as is. stderr goes to a file, never to a second
    pipe that nobody reads while the process runs."""
    with tempfile.TemporaryFile() as stderr:
        proc = _start(args, env, cwd, stdout=subprocess.PIPE, stderr=stderr)
        timer, fired = _alarm(proc, timeout)
        stopped: BaseException | None = None
        try:
            result = consume(proc.stdout)
            while proc.stdout.read(1 << 16):  # whatever the consumer left (a tar archive's padding)
                pass
        except BaseException as exc:  # re-raised below, once the process is dealt with
            stopped = exc
            _kill(proc)  # nobody reads the pipe any more; a no-op once it has been reaped
        finally:
            timer.cancel()
            proc.stdout.close()
            status = proc.wait()
        stderr.seek(0)
        said = stderr.read().decode(errors="replace").strip()[-500:]
    name = what or os.path.basename(args[0])
    if fired.is_set():
        raise _timeout(args, what, timeout, timeout_code) from stopped
    if status != 0 and not (stopped is not None and status == -signal.SIGKILL):
        raise Failed(failed_code, said or f"{name} exited {status}") from stopped
    if stopped is not None:
        raise stopped
    return result


def spawn(args: list[str], *, stdout: IO, stderr: IO, env: Environment | None = None, cwd=None) -> subprocess.Popen:
    """Start a long-lived helper (a tunnel) with its output to `stdout`/`stderr`
    (files); the caller ends it with `stop`."""
    return _start(args, env, cwd, stdout=stdout, stderr=stderr)


def stop(proc: subprocess.Popen, grace: float = 5) -> None:
    """End a `spawn`ed process and its group: SIGTERM, then SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        _kill(proc, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            _kill(proc)
            proc.wait()
