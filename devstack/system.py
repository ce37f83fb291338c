"""Machine-level parts of the local stack: Debian packages, the Docker engine, QEMU.

These outlive one `make run` (the Docker engine is shared by everything on
the machine), so they are started once and reused, never stopped by us.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from devstack.common import StackError, is_root, run, say, state_dir, which

# command the stack needs -> Debian package that provides it
COMMANDS = {
    "dockerd": "docker.io",
    "/usr/bin/docker": "docker.io",  # Debian's CLI has BuildKit built in; others may lack buildx
    "redis-server": "redis-server",
    "mmdebstrap": "mmdebstrap",
    "qemu-aarch64-static": "qemu-user-static",
    "update-binfmts": "binfmt-support",
    "socat": "socat",
    "git": "git",
    "/usr/bin/chromium": "chromium",  # browser tests (Playwright drives it; no browser download)
    "npm": "npm",  # installs axe-core, the accessibility checker the browser tests inject (stack.ensure_axe)
    "ip": "iproute2",  # the Docker bridge's address, for the plane's relay
    "/usr/bin/python3.11": "python3.11",  # compiles bytecode for the base images (same version as theirs)
    # The private Postgres cluster (postgres.py): Debian's binaries by path, never a `postgres` in PATH.
    "/usr/lib/postgresql/15/bin/initdb": "postgresql",
    "/usr/lib/postgresql/15/bin/postgres": "postgresql",
    "/usr/lib/postgresql/15/bin/pg_isready": "postgresql-client-15",
    "setpriv": "util-linux",  # runs initdb and postgres as the postgres user (they refuse root)
    # Remote builders (SLIPWAY_DOCKER_HOST_<ARCH>=ssh://…) are reached with the ssh client; the tests
    # stand a private sshd up on 127.0.0.1 as such a builder (tests/sshd.py).
    "ssh": "openssh-client",
    "/usr/sbin/sshd": "openssh-server",
}
BINFMT = Path("/proc/sys/fs/binfmt_misc")


def missing_packages() -> list[str]:
    missing = {pkg for cmd, pkg in COMMANDS.items() if not (os.path.exists(cmd) if cmd.startswith("/") else which(cmd))}
    return sorted(missing)


def ensure_packages() -> None:
    missing = missing_packages()
    if not missing:
        return
    if not is_root():
        raise StackError(f"missing Debian packages: {' '.join(missing)}",
                         f"run: sudo apt-get install -y {' '.join(missing)}")
    say(f"installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-q"], what="apt-get update failed", fix="check the Debian mirror", env=env)
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        what=f"apt-get install {' '.join(missing)} failed", fix="see apt's message above", env=env)
    still = missing_packages()
    if still:
        raise StackError(f"packages installed but commands still missing: {' '.join(still)}")


def docker_answers() -> bool:
    import docker

    try:
        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def ensure_docker() -> str:
    """Reuse a Docker engine that answers; otherwise start Debian's dockerd."""
    if docker_answers():
        return "reused"
    if os.environ.get("DOCKER_HOST"):
        raise StackError(f"the Docker engine at DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer",
                         "start it or unset DOCKER_HOST to use a local engine")
    if not is_root():
        raise StackError("no Docker engine answers and starting dockerd needs root",
                         "start Docker (sudo systemctl start docker) or run as root")
    log_path = state_dir() / "log" / "dockerd.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    say(f"starting dockerd (log: {log_path})")
    with log_path.open("ab") as log:
        # Its own session: dockerd is the machine's engine, it outlives this run.
        proc = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if docker_answers():
            return "started"
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise StackError(f"dockerd exited with {proc.returncode}: {tail[0]}", f"see {log_path}")
        time.sleep(0.5)
    proc.terminate()
    raise StackError("dockerd did not answer within 60 s", f"see {log_path}")


def ensure_qemu() -> str:
    """binfmt_misc mounted and qemu-aarch64 enabled, so arm64 containers run here."""
    entry = BINFMT / "qemu-aarch64"
    if entry.exists() and entry.read_text().startswith("enabled"):
        return "enabled"
    if not is_root():
        raise StackError("qemu-aarch64 is not enabled in binfmt_misc",
                         "run: sudo mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; "
                         "sudo update-binfmts --enable qemu-aarch64")
    if not (BINFMT / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)],
            what="mounting binfmt_misc failed", fix="the kernel needs binfmt_misc support")
    run(["update-binfmts", "--enable", "qemu-aarch64"], what="update-binfmts --enable qemu-aarch64 failed",
        fix="reinstall qemu-user-static binfmt-support")
    if not (entry.exists() and entry.read_text().startswith("enabled")):
        raise StackError("qemu-aarch64 still not enabled after update-binfmts", "check dmesg for binfmt errors")
    return "enabled now"


def bridge_gateway() -> str:
    """The host's end of Docker's default bridge: what `host-gateway` means in containers."""
    import docker

    network = docker.from_env(timeout=5).networks.get("bridge")
    for config in network.attrs.get("IPAM", {}).get("Config") or []:
        if config.get("Gateway"):
            return config["Gateway"]
    # The default bridge often lists only its subnet: read the interface itself.
    name = (network.attrs.get("Options") or {}).get("com.docker.network.bridge.name", "docker0")
    out = run(["ip", "-4", "-o", "addr", "show", "dev", name], what=f"reading the address of {name} failed",
              fix="is dockerd running with --bridge=none?")
    for field in out.split():
        if "/" in field and field[0].isdigit():
            return field.split("/")[0]
    raise StackError(f"Docker's bridge {name} has no IPv4 address", "is dockerd running with --bridge=none?")
