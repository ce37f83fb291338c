"""Fetch a repository at an exact commit into a workspace.

One bare mirror per repository URL is kept and fetched into (cheap after the
first time); each deployment gets its own export of the commit, removed when
the deployment's step ends. A private repository's mirror is the function's own
(`scope`), so a function without its credentials never reads what they fetched.
URLs, refs and paths are validated before git sees them: no `ext::`
transports, nothing that git could read as an option, no path outside the
checkout. A remote's host is resolved and checked against the allowed networks
before git runs, and git is pinned to the address that was checked (see `_route`).

This module runs git against remotes and mirrors; the credentials and the
meaning of a refused fetch are deploy/git_access.py's, the export into a
workspace deploy/checkout.py's. Their public names are importable from here.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from deploy import addresses, process
from deploy.addresses import PUBLIC_ONLY, Allowed
from deploy.checkout import GIT_TIMEOUT, export, inside, local_git, validate_subpath, workspace
from deploy.errors import AppError, UserError
from deploy.git_access import SSH_CONNECT_TIMEOUT, SSH_KEY, TOKEN, Credentials, authenticated, fetch_error
from deploy.logs import mask

# Callers take the whole repository seam from here, the names of the two modules beside it included.
__all__ = [
    "GIT_TIMEOUT", "SSH_CONNECT_TIMEOUT", "SSH_KEY", "TOKEN", "Commit", "Credentials", "authenticated",
    "commits_between", "describe", "export", "fetch", "fetch_error", "inside", "is_ancestor", "merge_request_head",
    "merge_request_ref", "mirror_path",
    "remote_head", "resolve", "resolve_cached", "run", "validate_ref", "validate_repository_url",
    "validate_subpath", "workspace",
]

# A host never starts with "-": git would hand it to ssh, which would read it as an option.
_REMOTE = re.compile(r"^(https://[^\s/@]+(:\d+)?/\S+|ssh://([^\s/@-][^\s/@]*@)?[^\s/@-][^\s/@]*/\S+"
                     r"|git@[A-Za-z0-9.][A-Za-z0-9.-]*:[^\s]+)$")
_REF = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)(?!.*@\{)[A-Za-z0-9._/+-]{1,200}(?<!\.lock)(?<![./])$")
_SHA = re.compile(r"^[0-9a-f]{7,40}$")


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


# An ssh wrapper; a private CA for an internal GitLab (README: private repositories).
GIT_ALLOW = ("GIT_SSH_COMMAND", "GIT_SSL_CAINFO")


def run(args: list[str], *, cwd: Path | None, env: process.Environment, timeout: float,
        what: str = "git") -> subprocess.CompletedProcess:
    """The one place git runs with the remote in reach: tests spy on it (argument list
    and environment) to prove that no credential is ever on either."""
    return process.run(args, cwd=cwd, env=env, timeout=timeout, what=what, timeout_code="git-timeout")


def _git(args: list[str], *, cwd: Path | None = None, allow_file: bool = False, auth: dict | None = None,
         timeout: float = GIT_TIMEOUT, route: _Route | None = None) -> str:
    env = process.environment(GIT_ALLOW, {
        "HOME": os.environ.get("HOME", "/tmp"),
        "LC_ALL": "C",  # git's refusals are read by their English words (deploy/git_access.py)
        "GIT_TERMINAL_PROMPT": "0",
        # git itself refuses ext::, fd:: and anything else not listed.
        "GIT_ALLOW_PROTOCOL": "https:ssh:file" if allow_file else "https:ssh",
        "GIT_CONFIG_NOSYSTEM": "1",
        **(auth or {}),
    })
    if route and route.ssh_options:  # after the deploy key's own command: the pin is added to it
        env["GIT_SSH_COMMAND"] = f"{env.get('GIT_SSH_COMMAND') or 'ssh'} {shlex.join(route.ssh_options)}"
    done = run(["git", *(route.config if route else ()), *args], cwd=cwd, env=env, timeout=timeout,
               what=f"git {args[0]}")
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


def merge_request_ref(iid: int) -> str:
    """Where GitLab keeps a merge request's head in the TARGET project, a fork's MR included."""
    if not isinstance(iid, int) or isinstance(iid, bool) or not 0 < iid < 10**9:
        raise UserError("bad-ref", f"{iid!r} is not a merge request number")
    return f"refs/merge-requests/{iid}/head"


def fetch(url: str, root: Path, *, allow_local: bool, credentials: Credentials | None = None,
          scope: str = "", allowed: Allowed = PUBLIC_ONLY, merge_request: int | None = None) -> Path:
    """Update (or create) the bare mirror of `url`; returns its path. With
    `credentials`, git authenticates with them (see `authenticated`); only at an
    address `allowed` permits (see `_route`). `merge_request`: also fetch that MR's
    head (`merge_request_ref`), which branches and tags do not hold (a fork's commits)."""
    url = validate_repository_url(url, allow_local=allow_local)
    refspecs = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]
    if merge_request is not None:
        wanted = merge_request_ref(merge_request)
        refspecs.append(f"+{wanted}:{wanted}")
    route = _route(url, allowed)
    mirror = mirror_path(root, url, scope)
    with _locked(mirror):
        try:
            if not (mirror / "HEAD").exists():
                _git(["init", "--bare", "--quiet", str(mirror)])
            with authenticated(credentials, url) as auth:
                _git(["fetch", "--quiet", "--prune", "--force", "--no-write-fetch-head", "--", url, *refspecs],
                     cwd=mirror, allow_file=allow_local, auth=auth, route=route)
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


def merge_request_head(mirror: Path, iid: int) -> str | None:
    """The commit the mirror last fetched as merge request `iid`'s head; None when it holds none
    (GitLab has not written the ref yet, or the MR is not the repository's)."""
    try:
        return _git(["rev-parse", "--verify", "--quiet", "--end-of-options",
                     f"{merge_request_ref(iid)}^{{commit}}"], cwd=mirror).strip()
    except _GitFailed:
        return None


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
    done = process.run(["git", "merge-base", "--is-ancestor", "--end-of-options", older, newer], cwd=mirror,
                       env=local_git(), timeout=GIT_TIMEOUT, what="git merge-base", timeout_code="git-timeout")
    return {0: True, 1: False}.get(done.returncode)  # 128 and others: a commit it does not know


def resolve_cached(mirror: Path, ref: str) -> str | None:
    """`resolve` against what the mirror last fetched, without fetching; None when unknown."""
    if not (mirror / "HEAD").exists():
        return None
    try:
        return resolve(mirror, ref)
    except UserError:
        return None
