"""Fetch a repository at an exact commit into a workspace.

One bare mirror per repository URL is kept and fetched into (cheap after the
first time); each deployment gets its own export of the commit, removed when
the deployment's step ends. A private repository's mirror is the function's own
(`scope`), so a function without its credentials never reads what they fetched.
URLs, refs and paths are validated before git sees them: no `ext::`
transports, nothing that git could read as an option, no path outside the
checkout. A remote's host is resolved and checked against the allowed networks
before git runs, and git is pinned to the address that was checked (see `_route`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from deploy import addresses, budgets
from deploy.addresses import PUBLIC_ONLY, Allowed
from deploy.errors import AppError, DeployError, UserError
from deploy.logs import mask

# A host never starts with "-": git would hand it to ssh, which would read it as an option.
_REMOTE = re.compile(r"^(https://[^\s/@]+(:\d+)?/\S+|ssh://([^\s/@-][^\s/@]*@)?[^\s/@-][^\s/@]*/\S+"
                     r"|git@[A-Za-z0-9.][A-Za-z0-9.-]*:[^\s]+)$")
_REF = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)(?!.*@\{)[A-Za-z0-9._/+-]{1,200}(?<!\.lock)(?<![./])$")
_SHA = re.compile(r"^[0-9a-f]{7,40}$")
GIT_TIMEOUT = budgets.GIT  # one git command (deploy/budgets.py)


def validate_repository_url(url: str, *, allow_local: bool) -> str:
    """https://, ssh:// or scp-like git@host:path; a local path only in local mode."""
    url = url.strip()
    if not url or url.startswith("-") or "::" in url.split("/")[0]:
        raise UserError("bad-repository-url", f"{url!r} is not an allowed repository URL")
    if _REMOTE.match(url):
        return url
    local = url[len("file://"):] if url.startswith("file://") else url
    if local.startswith("/"):
        if not allow_local:
            raise UserError("bad-repository-url", "local repository paths are only allowed in local mode "
                                                  "(or with SLIPWAY_ALLOW_LOCAL_REPOSITORIES=1)")
        if not Path(local).is_dir():
            raise UserError("bad-repository-url", f"{local} is not a directory")
        return local
    raise UserError("bad-repository-url",
                    f"{url!r} is not an allowed repository URL (use https://, ssh:// or git@host:path)")


def validate_ref(ref: str) -> str:
    if not _REF.match(ref or ""):
        raise UserError("bad-ref", f"{ref!r} is not a valid branch, tag or commit")
    return ref


def validate_subpath(path: str, what: str) -> str:
    """A relative path that stays inside the checkout."""
    pure = PurePosixPath(path or ".")
    if pure.is_absolute() or ".." in pure.parts or "\\" in str(path) or "\x00" in str(path):
        raise UserError("bad-path", f"{what} {path!r} must be a relative path inside the repository")
    return str(pure)


def run(args: list[str], *, cwd: Path | None, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """The one place git runs with the remote in reach: tests spy on it (argument list
    and environment) to prove that no credential is ever on either."""
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _git(args: list[str], *, cwd: Path | None = None, allow_file: bool = False, auth: dict | None = None,
         timeout: float = GIT_TIMEOUT, route: _Route | None = None) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "GIT_TERMINAL_PROMPT": "0",
        # git itself refuses ext::, fd:: and anything else not listed.
        "GIT_ALLOW_PROTOCOL": "https:ssh:file" if allow_file else "https:ssh",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    for name in ("GIT_SSH_COMMAND", "GIT_SSL_CAINFO"):  # an ssh wrapper; a private CA for an internal GitLab
        if os.environ.get(name):
            env[name] = os.environ[name]
    env.update(auth or {})
    if route and route.ssh_options:  # after the deploy key's own command: the pin is added to it
        env["GIT_SSH_COMMAND"] = f"{env.get('GIT_SSH_COMMAND') or 'ssh'} {shlex.join(route.ssh_options)}"
    try:
        done = run(["git", *(route.config if route else ()), *args], cwd=cwd, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AppError("git-timeout", f"git {args[0]} took longer than {timeout:.0f} s") from None
    if done.returncode != 0:
        raise _GitFailed(done.stderr.strip()[-1000:])
    return done.stdout


class _GitFailed(Exception):
    pass


@dataclass(frozen=True)
class _Route:
    """How git reaches a remote: `-c` options before the command, options for ssh."""

    config: tuple[str, ...] = ()
    ssh_options: tuple[str, ...] = ()


def _route(url: str, allowed: Allowed) -> _Route:
    """Check the remote's address before git runs, and pin git to it.

    The host is resolved once (deploy/addresses.py) and refused with
    `outbound-address-refused` unless `allowed` permits the address. HTTPS: curl
    gets that address for the name (`http.curloptResolve`, git 2.37+), so it neither
    resolves again nor loses the name for SNI and the certificate; no redirects
    (`http.followRedirects=false`), no proxy (`http.proxy=` overrides the proxy
    variables and any git configuration). SSH: ssh connects to the address
    (`HostName`) and checks the host key under the name (`HostKeyAlias`, with the
    port as known_hosts writes it). A local path is no network address: nothing."""
    if url.startswith(("https://", "ssh://")):
        parts = urlsplit(url)
        try:
            scheme, host, port = url.split(":", 1)[0], parts.hostname or "", parts.port
        except ValueError:  # a port that is no number
            raise UserError("bad-repository-url", f"{url!r} has an invalid port") from None
    elif url.startswith("git@"):
        scheme, host, port = "ssh", url[len("git@"):].split(":", 1)[0], None
    else:
        return _Route()
    port = port or (443 if scheme == "https" else 22)
    try:
        address = addresses.checked(host, port, allowed, what="the repository's host")
    except OSError as exc:
        raise AppError("git-fetch-failed", f"could not fetch {url}: {host} does not resolve ({exc})") from None
    config = ("-c", "http.followRedirects=false", "-c", "http.proxy=")
    if addresses.literal(host) is not None:
        return _Route(config)
    if scheme == "https":
        pinned = f"[{address}]" if ":" in address else address
        return _Route((*config, "-c", f"http.curloptResolve={host}:{port}:{pinned}"))
    alias = host if port == 22 else f"[{host}]:{port}"
    return _Route(config, ("-o", f"HostName={address}", "-o", f"HostKeyAlias={alias}", "-o", "CheckHostIP=no"))


def mirror_path(root: Path, url: str, scope: str = "") -> Path:
    """The bare mirror of `url`; `scope` (a private repository's owner) gives it one of its own."""
    key = url if not scope else f"{url}\0{scope}"
    return root / "mirrors" / (hashlib.sha256(key.encode()).hexdigest()[:20] + ".git")


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def fetch(url: str, root: Path, *, allow_local: bool, credentials: Credentials | None = None,
          scope: str = "", allowed: Allowed = PUBLIC_ONLY) -> Path:
    """Update (or create) the bare mirror of `url`; returns its path. With
    `credentials`, git authenticates with them (see `authenticated`); only at an
    address `allowed` permits (see `_route`)."""
    url = validate_repository_url(url, allow_local=allow_local)
    route = _route(url, allowed)
    mirror = mirror_path(root, url, scope)
    with _locked(mirror):
        try:
            if not (mirror / "HEAD").exists():
                _git(["init", "--bare", "--quiet", str(mirror)])
            with authenticated(credentials, url) as auth:
                _git(["fetch", "--quiet", "--prune", "--force", "--no-write-fetch-head", "--", url,
                      "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"], cwd=mirror, allow_file=allow_local,
                     auth=auth, route=route)
        except _GitFailed as exc:
            raise fetch_error(url, mask(str(exc), *(credentials.secrets() if credentials else ()))) from None
    return mirror


def remote_head(url: str, branch: str, *, allow_local: bool, credentials: Credentials | None = None,
                timeout: float = GIT_TIMEOUT, allowed: Allowed = PUBLIC_ONLY) -> str:
    """The commit `branch` holds on the remote now (`git ls-remote`, authenticated like
    a fetch, bounded by `timeout`): how a missed push is noticed. Nothing is fetched."""
    url = validate_repository_url(url, allow_local=allow_local)
    validate_ref(branch)
    route = _route(url, allowed)
    try:
        with authenticated(credentials, url) as auth:
            out = _git(["ls-remote", "--heads", "--", url, f"refs/heads/{branch}"], allow_file=allow_local,
                       auth=auth, timeout=timeout, route=route)
    except _GitFailed as exc:
        raise fetch_error(url, mask(str(exc), *(credentials.secrets() if credentials else ()))) from None
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if name == f"refs/heads/{branch}" and re.fullmatch(r"[0-9a-f]{40}", sha):
            return sha
    raise UserError("branch-not-found", f"{url} has no branch {branch!r}")


# --- Credentials for private repositories ----------------------------------------------------

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


def resolve(mirror: Path, ref: str) -> str:
    """The full commit SHA that `ref` (branch, tag or SHA) names in the mirror."""
    validate_ref(ref)
    candidates = [ref] if _SHA.match(ref) else [f"refs/heads/{ref}", f"refs/tags/{ref}", ref]
    for candidate in candidates:
        try:
            return _git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{candidate}^{{commit}}"],
                        cwd=mirror).strip()
        except _GitFailed:
            continue
    raise UserError("ref-not-found", f"{ref!r} is not a branch, tag or commit of the repository")


def export(mirror: Path, sha: str, dest: Path) -> Path:
    """Write the tree of commit `sha` into `dest` (no .git, no path escapes).

    git archive writes into a pipe that the extraction reads. When the reading
    stops early (an entry the filter refuses, say), git is killed: left alone it
    would block on the full pipe until the task's time limit. Its stderr goes to
    a file, never to a second pipe that nobody reads while git runs."""
    if not re.fullmatch(r"[0-9a-f]{40}", sha):
        raise UserError("bad-ref", f"{sha!r} is not a full commit SHA")
    dest.mkdir(parents=True, exist_ok=True)
    refused: tarfile.TarError | None = None
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(["git", "archive", "--format=tar", sha], cwd=mirror, stdout=subprocess.PIPE,
                                stderr=stderr, stdin=subprocess.DEVNULL)
        timer = threading.Timer(GIT_TIMEOUT, proc.kill)
        timer.start()
        read_all = False
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
                _extract(archive, dest)
            while proc.stdout.read(1 << 16):  # the archive's trailing padding
                pass
            read_all = True
        except tarfile.TarError as exc:
            refused = exc
        finally:
            timed_out = timer.finished.is_set()
            timer.cancel()
            if not read_all:
                proc.kill()  # nobody reads the pipe any more; a no-op once git has exited
            proc.stdout.close()
            status = proc.wait()
        stderr.seek(0)
        message = stderr.read().decode(errors="replace").strip()[-500:]
    if timed_out:
        raise AppError("git-timeout", f"git archive took longer than {GIT_TIMEOUT} s")
    if status not in (0, -signal.SIGKILL) or (status != 0 and refused is None):
        raise AppError("git-archive-failed", message or f"git archive exited {status}")
    if refused is not None:
        raise UserError("bad-checkout", f"the commit's tree cannot be checked out safely: {refused}")
    return dest


class _Refused(tarfile.TarError):
    """A member the data filter would refuse."""


def _extract(archive: tarfile.TarFile, dest: Path) -> None:
    """Extract with tarfile's `data` filter: no absolute paths, no `..`, no link leaving
    `dest`, no device files, no setuid bits. Pythons before 3.11.4 (Debian 12's own
    3.11.2) have no filters: the same rules are applied member by member instead."""
    if hasattr(tarfile, "data_filter"):
        archive.extractall(dest, filter="data")
        return
    root = os.path.realpath(dest)
    for member in archive:  # a stream: each member is checked, then extracted, in order
        _check_member(member, root)
        member.mode &= 0o755  # as the data filter: no setuid/setgid/sticky, no group/other write
        member.uid = member.gid = 0
        member.uname = member.gname = ""
        archive.extract(member, dest, set_attrs=not member.issym())


def _check_member(member: tarfile.TarInfo, root: str) -> None:
    def inside(path: str) -> bool:
        return os.path.commonpath([root, os.path.realpath(path)]) == root

    name = member.name
    if name.startswith("/") or not inside(os.path.join(root, name)):
        raise _Refused(f"{name!r} would be extracted outside the destination")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise _Refused(f"{name!r} is a special file")
    if member.issym():
        if member.linkname.startswith("/"):
            raise _Refused(f"{name!r} is a link to an absolute path")
        if not inside(os.path.join(root, os.path.dirname(name), member.linkname)):
            raise _Refused(f"{name!r} would link to a path outside the destination")
    if member.islnk() and (member.linkname.startswith("/") or not inside(os.path.join(root, member.linkname))):
        raise _Refused(f"{name!r} would link to a path outside the destination")


@contextlib.contextmanager
def workspace(root: Path, name: str):
    """A directory for one deployment's checkout, always removed afterwards."""
    path = root / "workspaces" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def inside(base: Path, relative: str, what: str) -> Path:
    """`base/relative`, refusing symlinks that lead out of `base`."""
    target = (base / validate_subpath(relative, what)).resolve()
    if not target.is_relative_to(base.resolve()):
        raise UserError("bad-path", f"{what} {relative!r} leads outside the repository")
    if not target.exists():
        raise UserError("bad-path", f"{what} {relative!r} does not exist at this commit")
    return target


@dataclass
class Commit:
    sha: str
    subject: str
    author: str


_LOG_FORMAT = "%H%x1f%s%x1f%an%x1e"


def _commits(text: str) -> list[Commit]:
    found = []
    for record in text.split("\x1e"):
        fields = record.strip("\n").split("\x1f")
        if len(fields) == 3:
            found.append(Commit(fields[0], fields[1][:300], fields[2][:200]))
    return found


def describe(mirror: Path, sha: str) -> Commit | None:
    """Subject and author of one commit held by the mirror; None when it does not hold it."""
    if not _SHA.match(sha or ""):
        return None
    try:
        return next(iter(_commits(_git(["log", "-1", f"--format={_LOG_FORMAT}", "--end-of-options", sha],
                                       cwd=mirror))), None)
    except _GitFailed:
        return None


def commits_between(mirror: Path, older: str, newer: str, limit: int = 50) -> list[Commit] | None:
    """The commits in `newer` that `older` lacks, newest first, at most `limit`;
    None when the mirror cannot tell (not fetched yet, or a commit it lacks)."""
    if not (mirror / "HEAD").exists() or not _SHA.match(older or "") or not _SHA.match(newer or ""):
        return None
    try:
        return _commits(_git(["log", f"--max-count={limit}", f"--format={_LOG_FORMAT}", "--end-of-options",
                              f"{older}..{newer}"], cwd=mirror))
    except _GitFailed:
        return None


def is_ancestor(mirror: Path, older: str, newer: str) -> bool | None:
    """Is commit `older` an ancestor of `newer` (or the same commit)? None when the mirror
    cannot tell (a commit it does not hold)."""
    if not _SHA.match(older or "") or not _SHA.match(newer or ""):
        return None
    try:
        done = subprocess.run(["git", "merge-base", "--is-ancestor", "--end-of-options", older, newer], cwd=mirror,
                              capture_output=True, text=True, timeout=GIT_TIMEOUT, stdin=subprocess.DEVNULL,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_CONFIG_NOSYSTEM": "1",
                                   "HOME": os.environ.get("HOME", "/tmp")})
    except subprocess.TimeoutExpired:
        raise AppError("git-timeout", f"git merge-base took longer than {GIT_TIMEOUT} s") from None
    return {0: True, 1: False}.get(done.returncode)  # 128 and others: a commit it does not know


def resolve_cached(mirror: Path, ref: str) -> str | None:
    """`resolve` against what the mirror last fetched, without fetching; None when unknown."""
    if not (mirror / "HEAD").exists():
        return None
    try:
        return resolve(mirror, ref)
    except UserError:
        return None
