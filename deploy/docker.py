"""The one seam to the Docker engine: a lazily built docker SDK client.

A builder per architecture may be a different engine (a native arm64 host):
callers pass its base_url; empty means the local engine (DOCKER_HOST or the
default socket).
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_clients: dict[tuple, object] = {}


def client(base_url: str = "", *, timeout: float = 120):
    key = (base_url, timeout)
    with _lock:
        if key not in _clients:
            import docker

            if base_url:
                _clients[key] = docker.DockerClient(base_url=base_url, timeout=timeout)
            else:
                _clients[key] = docker.from_env(timeout=timeout)
        return _clients[key]
