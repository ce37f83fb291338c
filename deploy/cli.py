"""The one runner for the BuildKit-capable docker CLI (through deploy/process.py).

Argument lists only, never a shell string. Output is streamed line by line
to a callback as it happens; the CLI and whatever it starts die with the
worker process and on the timeout.
"""

from __future__ import annotations

from collections.abc import Callable

from deploy import process

# What the docker CLI may see of the worker's environment: its own settings
# (DOCKER_HOST, DOCKER_CONFIG, DOCKER_CERT_PATH, DOCKER_TLS_VERIFY, DOCKER_CONTEXT,
# which the README's "remote DOCKER_HOST" relies on), buildx's and BuildKit's, the
# ssh agent for an ssh:// DOCKER_HOST, and proxies for a tcp:// one.
ALLOW = ("DOCKER_*", "BUILDX_*", "BUILDKIT_*", "SSH_AUTH_SOCK", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
         "http_proxy", "https_proxy", "no_proxy")


def stream(args: list[str], *, env: process.Environment | None = None, on_line: Callable[[str], None],
           timeout: float = 1800, on_start: Callable[[int], None] | None = None) -> int:
    """Run `args`, feeding each output line to `on_line`; returns the exit status.
    `process.Timeout` when it runs past `timeout`."""
    return process.stream(args, env=env if env is not None else environ(), on_line=on_line, timeout=timeout,
                          on_start=on_start)


def environ(**extra: str) -> process.Environment:
    """The docker CLI's environment, with `extra` on top (an empty value keeps the worker's own)."""
    return process.environment(ALLOW, {k: v for k, v in extra.items() if v})
