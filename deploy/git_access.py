"""Credentials for private repositories, and what a refused fetch means.

A deploy token (HTTPS) or deploy key (SSH) reaches git through files in a
private temporary directory only, never an argument list or an environment
variable (`authenticated`); git's complaints are sorted into the two error
families (`fetch_error`). deploy/source.py runs git with both.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from deploy.errors import AppError, DeployError, UserError

TOKEN, SSH_KEY = "token", "ssh-key"
SSH_CONNECT_TIMEOUT = 15


@dataclass(frozen=True)
class Credentials:
    """A private repository's deploy token (HTTPS: username + token, as GitLab's deploy
    tokens are) or deploy key (SSH: a private key and the host key(s) it may talk to).
    Its repr never shows the secret."""

    kind: str
    secret: str = field(repr=False)
    username: str = ""
    known_hosts: str = ""

    def secrets(self) -> list[str]:
        """What logs must mask: the token, or the key and each line of its body."""
        if self.kind == TOKEN:
            return [self.secret]
        return [self.secret, *(line.strip() for line in self.secret.splitlines()
                               if len(line.strip()) >= 16 and not line.startswith("-----"))]


@contextlib.contextmanager
def authenticated(credentials: Credentials | None, url: str):
    """The environment that lets git use `credentials`, for the length of the block.

    The secret is written to a 0600 file in a private (0700) directory that is
    removed afterwards, and git is only told where that file is: the secret is
    never in an argument list or an environment, so `ps` and /proc show nothing.
    HTTPS: GIT_ASKPASS names a script that prints the username or the token from
    those files when git asks for them (git uses it before any terminal prompt; no
    credential helper runs because no configuration is read). SSH: GIT_SSH_COMMAND
    uses the key file only, with the pinned host keys and strict checking, and no
    ssh configuration, agent or known_hosts of the host."""
    if credentials is None:
        yield {}
        return
    if credentials.kind == TOKEN and not url.startswith("https://"):
        raise UserError("repository-credentials", "a deploy token is sent over https:// only; "
                        f"{url} is not an https:// URL")
    if credentials.kind == SSH_KEY and not url.startswith(("ssh://", "git@")):
        raise UserError("repository-credentials", f"a deploy key is used over ssh only; {url} is not an ssh URL")
    directory = Path(tempfile.mkdtemp(prefix="slipway-git-"))  # 0700
    try:
        # GIT_CONFIG_GLOBAL: no user-level credential.helper may see (and store) the token.
        env = {"GIT_CONFIG_GLOBAL": os.devnull}
        if credentials.kind == TOKEN:
            _private_file(directory / "username", credentials.username)
            _private_file(directory / "token", credentials.secret)
            askpass = directory / "askpass"
            askpass.write_text("#!/bin/sh\n"
                               f'case "$1" in [Uu]sername*) exec cat {shlex.quote(str(directory / "username"))} ;;\n'
                               f'*) exec cat {shlex.quote(str(directory / "token"))} ;; esac\n')
            askpass.chmod(0o700)
            env["GIT_ASKPASS"] = str(askpass)
        elif credentials.kind == SSH_KEY:
            key = _private_file(directory / "key", credentials.secret.strip() + "\n")
            hosts = _private_file(directory / "known_hosts", credentials.known_hosts.strip() + "\n")
            env["GIT_SSH_COMMAND"] = shlex.join([
                "ssh", "-F", os.devnull, "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
                "-o", f"UserKnownHostsFile={hosts}", "-o", f"GlobalKnownHostsFile={os.devnull}",
                "-o", "StrictHostKeyChecking=yes", "-o", "UpdateHostKeys=no", "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT}"])
            env["GIT_SSH_VARIANT"] = "ssh"
        else:
            raise UserError("repository-credentials", f"unknown kind of repository credentials {credentials.kind!r}")
        yield env
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _private_file(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return path


# What git (and ssh under it) says when the repository refuses us or is not there:
# the function's settings are wrong, retrying cannot help. Anything else
# (a host that does not resolve or answer, a dropped connection) may be transient.
_AUTH_FAILED = ("authentication failed", "could not read username", "could not read password",
                "terminal prompts disabled", "permission denied (publickey", "access denied",
                "invalid username or password", "the requested url returned error: 401",
                "the requested url returned error: 403")
_HOST_KEY = ("host key verification failed", "remote host identification has changed")
_BAD_KEY = ("invalid format", "error in libcrypto", "bad permissions")
_NOT_FOUND = ("repository not found", "does not appear to be a git repository", "could not be found",
              "' not found", "the requested url returned error: 404")


def fetch_error(url: str, stderr: str) -> DeployError:
    """A failed fetch as one of the two families, with the line of git's output that says why."""
    text = stderr.lower()
    why = next((line.strip() for line in stderr.splitlines() if line.strip().lower().startswith(("fatal:", "error:"))),
               stderr.strip().splitlines()[-1] if stderr.strip() else "git fetch failed")
    if any(marker in text for marker in _HOST_KEY):
        return UserError("repository-host-key", f"could not fetch {url}: the git host's key is not the one "
                         f"trusted for it ({why})")
    if any(marker in text for marker in _BAD_KEY):
        return UserError("repository-auth-failed", f"could not fetch {url}: ssh cannot use the deploy key: {why}")
    if any(marker in text for marker in _AUTH_FAILED):
        return UserError("repository-auth-failed", f"could not fetch {url}: the git host refused the credentials "
                         f"(check the deploy key or token and its access to the repository): {why}")
    if any(marker in text for marker in _NOT_FOUND):
        return UserError("repository-not-found", f"could not fetch {url}: no repository there, or the credentials "
                         f"may not see it: {why}")
    return AppError("git-fetch-failed", f"could not fetch {url}: {stderr.strip()[-500:] or why}")
