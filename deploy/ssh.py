"""Remote Docker engines over ssh (`SLIPWAY_DOCKER_HOST_ARM64=ssh://builder@arm-host`),
with pinned host keys.

Slipway forwards the remote engine's socket to a private local socket with one
OpenSSH process per worker process and builder, started with a config of its
own (`ssh -F`): the known_hosts written from SLIPWAY_SSH_KNOWN_HOSTS,
StrictHostKeyChecking=yes, BatchMode, and the key in SLIPWAY_SSH_IDENTITY_FILE.
The docker CLI (BuildKit) and the docker SDK then both talk to that socket, so
one ssh client with one trust decision serves the build and the push.

Why not the docker SDK's own ssh:// transport: it imports paramiko even with
`use_ssh_client=True`, and neither of its modes lets the caller pin a host key
for one connection. The paramiko mode reads ~/.ssh/config and
~/.ssh/known_hosts through $HOME, process-wide; the shell-out mode runs a bare
`ssh` found through the process's PATH, with no options. OpenSSH itself finds
~/.ssh through the passwd entry, not $HOME, so a private HOME would not help
the CLI either. The remote needs sshd with stream-local forwarding (OpenSSH's
default) and a user that may use the engine's socket; no docker CLI there.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from deploy import process
from deploy.errors import AppError, UserError

REMOTE_SOCKET = "/var/run/docker.sock"
CONNECT_TIMEOUT = 15
# With no SLIPWAY_SSH_IDENTITY_FILE, ssh's own keys: those of an agent as well.
ALLOW = ("SSH_AUTH_SOCK",)

_lock = threading.Lock()
_tunnels: dict[tuple, _Tunnel] = {}


@dataclass
class _Tunnel:
    proc: subprocess.Popen
    socket: Path
    log: Path

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"


def is_ssh(url: str) -> bool:
    return url.startswith("ssh://")


def known_hosts_text(setting: str) -> str:
    """SLIPWAY_SSH_KNOWN_HOSTS holds known_hosts lines, or the path of a file that does."""
    if setting.strip().startswith("/") and "\n" not in setting.strip() and Path(setting.strip()).is_file():
        return Path(setting.strip()).read_text()
    return setting


def forward(url: str, *, known_hosts: str, identity_file: str = "") -> str:
    """The `unix://` URL of the remote engine at ssh://[user@]host[:port][/socket]; the
    forwarding is started on first use and again whenever it has died."""
    key = (url, known_hosts, identity_file)
    with _lock:
        tunnel = _tunnels.get(key)
        if tunnel is None or tunnel.proc.poll() is not None or not tunnel.socket.exists():
            if tunnel is not None:
                _close(tunnel)
            tunnel = _tunnels[key] = _open(url, known_hosts_text(known_hosts), identity_file)
        return tunnel.url


def _config(directory: Path, known_hosts: str, identity_file: str) -> Path:
    (directory / "known_hosts").write_text(known_hosts.strip() + "\n")
    lines = [
        "Host *",
        "  BatchMode yes",
        "  StrictHostKeyChecking yes",
        f"  UserKnownHostsFile {directory / 'known_hosts'}",
        "  GlobalKnownHostsFile /dev/null",
        "  UpdateHostKeys no",
        f"  ConnectTimeout {CONNECT_TIMEOUT}",
        "  ServerAliveInterval 15",
        "  ServerAliveCountMax 3",
        "  ExitOnForwardFailure yes",
        "  StreamLocalBindUnlink yes",
        "  LogLevel ERROR",
    ]
    if identity_file:
        lines += [f"  IdentityFile {identity_file}", "  IdentitiesOnly yes"]
    config = directory / "config"
    config.write_text("\n".join(lines) + "\n")
    return config


def _open(url: str, known_hosts: str, identity_file: str) -> _Tunnel:
    parts = urlsplit(url)
    if not parts.hostname or parts.hostname.startswith("-") or (parts.username or "").startswith("-"):
        raise AppError("builder-url", f"{url!r} is not an ssh://[user@]host[:port] builder URL", retryable=False)
    if not known_hosts.strip():
        raise UserError("builder-host-key-mismatch", f"no host key is pinned for the builder {url}: set "
                        "SLIPWAY_SSH_KNOWN_HOSTS to its known_hosts line(s)")
    directory = Path(tempfile.mkdtemp(prefix="slipway-ssh-"))  # 0700, short enough for a socket path
    socket, log = directory / "docker.sock", directory / "ssh.log"
    args = ["ssh", "-F", str(_config(directory, known_hosts, identity_file)), "-N",
            "-L", f"{socket}:{parts.path or REMOTE_SOCKET}"]
    if parts.port:
        args += ["-p", str(parts.port)]
    if parts.username:
        args += ["-l", parts.username]
    args += ["--", parts.hostname]
    with log.open("wb") as out:
        try:
            proc = process.spawn(args, stdout=out, stderr=out, env=process.environment(ALLOW))
        except FileNotFoundError:
            shutil.rmtree(directory, ignore_errors=True)
            raise AppError("builder-ssh-missing", "the ssh client is not installed (openssh-client)",
                           retryable=False) from None
    tunnel = _Tunnel(proc, socket, log)
    deadline = time.monotonic() + CONNECT_TIMEOUT + 5
    while not socket.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if socket.exists() and proc.poll() is None:
        return tunnel
    said = log.read_text(errors="replace").strip()
    _close(tunnel)
    raise _error(url, said or f"ssh exited with {proc.returncode}")


def _error(url: str, said: str):
    text = said.lower()
    last = said.splitlines()[-1] if said else ""
    if "host key verification failed" in text or "remote host identification has changed" in text:
        why = ("its host key is not the one pinned" if "has changed" in text or "does not match" in text
               else "no host key is pinned for it")
        return UserError("builder-host-key-mismatch", f"refused to use the builder {url}: {why} in "
                         f"SLIPWAY_SSH_KNOWN_HOSTS ({last})")
    if "permission denied" in text:
        return UserError("builder-auth-failed", f"the builder {url} refused Slipway's ssh key: {last}")
    return AppError("builder-unreachable", f"cannot reach the builder {url} over ssh: {last}")


def _close(tunnel: _Tunnel) -> None:
    process.stop(tunnel.proc)
    shutil.rmtree(tunnel.socket.parent, ignore_errors=True)


@atexit.register
def close_all() -> None:
    with _lock:
        for tunnel in _tunnels.values():
            _close(tunnel)
        _tunnels.clear()
