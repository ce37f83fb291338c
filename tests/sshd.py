"""A private OpenSSH server for tests, on 127.0.0.1 and a free port.

Everything it uses is thrown away with its directory: a host key, one client
key pair (the only key it accepts), a minimal sshd_config (no PAM, no
passwords, no TTY, no agent, X11 or remote forwarding; local forwarding on,
which a remote Docker builder's forwarded socket needs). It logs in as the user running the tests (root
here), so a "remote" reached through it is this machine. Reusable: a remote
builder is one use, serving git over ssh another.

    with Sshd(tmp_path / "sshd") as sshd:
        sshd.url            # ssh://root@127.0.0.1:PORT
        sshd.known_hosts    # the known_hosts line pinning its host key
        sshd.client_key     # the private key it accepts
"""

from __future__ import annotations

import getpass
import os
import signal
import subprocess
from pathlib import Path

SSHD = "/usr/sbin/sshd"
PRIVILEGE_SEPARATION_DIR = Path("/run/sshd")  # Debian's sshd refuses to start without it


def keygen(path: Path, comment: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path


class Sshd:
    def __init__(self, directory: Path, host: str = "127.0.0.1"):
        from tests.conftest import free_port

        self.dir, self.host = directory, host
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key = keygen(self.dir / "host_key", "slipway-test-host")
        self.client_key = keygen(self.dir / "client_key", "slipway-test-client")
        (self.dir / "authorized_keys").write_text((self.dir / "client_key.pub").read_text())
        self.log = self.dir / "sshd.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"

    @property
    def known_hosts(self) -> str:
        kind, key = (self.dir / "host_key.pub").read_text().split()[:2]
        return f"[{self.host}]:{self.port} {kind} {key}\n"

    def config(self) -> Path:
        path = self.dir / "sshd_config"
        path.write_text("\n".join([
            f"ListenAddress {self.host}:{self.port}",
            f"HostKey {self.host_key}",
            f"PidFile {self.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",
            "PermitTTY no",
            "X11Forwarding no",
            "AllowAgentForwarding no",
            "AllowTcpForwarding local",  # sshd gates stream-local (socket) forwarding on it too
            "AllowStreamLocalForwarding local",
            "PrintMotd no",
            "LogLevel VERBOSE",
        ]) + "\n")
        return path

    def start(self) -> Sshd:
        from devstack.common import port_is_open
        from tests.conftest import wait_for

        PRIVILEGE_SEPARATION_DIR.mkdir(mode=0o755, exist_ok=True)
        config = self.config()
        subprocess.run([SSHD, "-t", "-f", str(config)], check=True, capture_output=True)
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                     stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: self.proc.poll() is not None or port_is_open(self.host, self.port), 10, "sshd to listen")
        if self.proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log.read_text()[-500:]}")
        return self

    def accepted(self) -> int:
        """How many logins it accepted so far."""
        return self.log.read_text(errors="replace").count("Accepted publickey for ")

    def stop(self) -> None:
        """The listener and the sessions it forked (its own process group)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
