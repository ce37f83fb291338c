"""The one seam to the Docker engine: a lazily built docker SDK client.

A builder per architecture may be a different engine (a native arm64 host):
callers pass its base_url; empty means the local engine (DOCKER_HOST or the
default socket).
"""

from __future__ import annotations

import threading

from deploy import budgets

_lock = threading.Lock()
_clients: dict[tuple, object] = {}


def client(base_url: str = "", *, timeout: float = budgets.DOCKER):
    """A shared client; AppError `docker-unavailable` when the engine does not answer."""
    key = (base_url, timeout)
    with _lock:
        if key not in _clients:
            import docker

            from deploy.errors import AppError

            try:
                if base_url:
                    _clients[key] = docker.DockerClient(base_url=base_url, timeout=timeout)
                else:
                    _clients[key] = docker.from_env(timeout=timeout)
            except docker.errors.DockerException as exc:
                where = base_url or "the local engine"
                raise AppError("docker-unavailable", f"the Docker engine is not answering at {where}: {exc}") from None
        return _clients[key]
