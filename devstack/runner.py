"""One process runner: starts processes in order, prefixes their output,
and stops all of them on Ctrl-C or when any one dies.

Each child gets its own process group, so stopping it also stops what it
spawned (Celery's pool, ministack's helpers). Stopping is SIGTERM (or the
service's own stop signal) in reverse start order, then SIGKILL after a grace
period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from devstack.common import OUTPUT_LOCK, StackError, say

COLOURS = ["36", "33", "35", "32", "34", "31", "96", "93"]


@dataclass
class Service:
    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ready: Callable[[], bool] | None = None  # None: ready when still alive after `settle` seconds
    settle: float = 1.5
    ready_timeout: float = 60
    stop_timeout: float = 10
    stop_signal: int = signal.SIGTERM  # Postgres stops fast (ends sessions) on SIGINT, waits for them on SIGTERM
    fix: str = ""  # what to tell the user when it fails to start


class Runner:
    def __init__(self, *, log_dir: Path | None = None, echo: bool = True):
        """`echo`: prefix output to the terminal; otherwise only to `log_dir` files."""
        self.log_dir = log_dir
        self.echo = echo
        self.procs: list[tuple[Service, subprocess.Popen, deque]] = []
        self._width = 8

    def start(self, service: Service) -> None:
        """Start one service and wait until it is ready; StackError if it dies or times out."""
        self._width = max(self._width, len(service.name))
        colour = COLOURS[len(self.procs) % len(COLOURS)]
        env = {**os.environ, **service.env, "PYTHONUNBUFFERED": "1"}
        try:
            proc = subprocess.Popen(service.args, env=env, cwd=service.cwd, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        except FileNotFoundError as exc:
            raise StackError(f"{service.name}: {service.args[0]} not found", service.fix) from exc
        tail: deque = deque(maxlen=20)
        self.procs.append((service, proc, tail))
        threading.Thread(target=self._pump, args=(service, proc, tail, colour), daemon=True).start()
        started = time.monotonic()
        deadline = started + service.ready_timeout
        while True:
            if proc.poll() is not None:
                time.sleep(0.2)  # let the pump read the last lines
                last = next((line for line in reversed(tail) if line.strip()), "(no output)")
                raise StackError(f"{service.name} exited with {proc.returncode} while starting: {last.strip()}",
                                 service.fix)
            if service.ready() if service.ready else time.monotonic() - started >= service.settle:
                return
            if time.monotonic() > deadline:
                raise StackError(f"{service.name} not ready after {service.ready_timeout:.0f} s", service.fix)
            time.sleep(0.2)

    def _pump(self, service: Service, proc: subprocess.Popen, tail: deque, colour: str) -> None:
        log = None
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = (self.log_dir / f"{service.name}.log").open("a", encoding="utf-8")
        prefix = f"\033[{colour}m{service.name:<{self._width}}\033[0m | " if sys.stdout.isatty() else \
            f"{service.name:<{self._width}} | "
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            tail.append(line)
            if log:
                log.write(line + "\n")
                log.flush()
            if self.echo:
                with OUTPUT_LOCK:
                    print(prefix + line, flush=True)
        if log:
            log.close()

    def dead(self) -> tuple[Service, int] | None:
        for service, proc, _ in self.procs:
            if proc.poll() is not None:
                return service, proc.returncode
        return None

    def wait(self) -> int:
        """Block until Ctrl-C/SIGTERM or until one service exits; then stop all."""
        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        code = 0
        try:
            while not stop.is_set():
                gone = self.dead()
                if gone:
                    say(f"{gone[0].name} exited with {gone[1]}; stopping everything")
                    code = 1
                    break
                stop.wait(0.5)
        except KeyboardInterrupt:
            say("Ctrl-C: stopping")
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.stop()
        return code

    def stop(self) -> None:
        for service, proc, _ in reversed(self.procs):
            if proc.poll() is None:
                _signal_group(proc, service.stop_signal)
                try:
                    proc.wait(service.stop_timeout)
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait(5)
            else:
                # The leader is gone; make sure nothing it spawned lingers.
                _signal_group(proc, signal.SIGKILL)
        self.procs.clear()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
