"""A commit's tree as files: the export into a deployment's workspace.

`git archive` streams the tree into tarfile, which extracts it with the `data`
filter's rules (no absolute paths, no `..`, no link leaving the workspace, no
device files, no setuid bits); paths inside it are then only taken through
`inside`, which refuses symlinks that lead out.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from deploy import budgets, process
from deploy.errors import UserError

GIT_TIMEOUT = budgets.GIT  # one git command (deploy/budgets.py)


def local_git() -> process.Environment:
    """git on a local mirror: no network, no system configuration, messages in English."""
    return process.environment(extra={"HOME": os.environ.get("HOME", "/tmp"), "LC_ALL": "C",
                                      "GIT_CONFIG_NOSYSTEM": "1"})


def validate_subpath(path: str, what: str) -> str:
    """A relative path that stays inside the checkout."""
    pure = PurePosixPath(path or ".")
    if pure.is_absolute() or ".." in pure.parts or "\\" in str(path) or "\x00" in str(path):
        raise UserError("bad-path", f"{what} {path!r} must be a relative path inside the repository")
    return str(pure)


def export(mirror: Path, sha: str, dest: Path) -> Path:
    """Write the tree of commit `sha` into `dest` (no .git, no path escapes).

    git archive writes into a pipe that the extraction reads (deploy/process.py's
    `pipe`: when the reading stops early, on an entry the filter refuses, say, git
    is killed rather than left blocking on the full pipe until the task's time limit)."""
    if not re.fullmatch(r"[0-9a-f]{40}", sha):
        raise UserError("bad-ref", f"{sha!r} is not a full commit SHA")
    dest.mkdir(parents=True, exist_ok=True)

    def unpack(stream) -> None:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            _extract(archive, dest)

    try:
        process.pipe(["git", "archive", "--format=tar", sha], unpack, cwd=mirror, env=local_git(),
                     timeout=GIT_TIMEOUT, what="git archive", timeout_code="git-timeout",
                     failed_code="git-archive-failed")
    except tarfile.TarError as refused:
        raise UserError("bad-checkout", f"the commit's tree cannot be checked out safely: {refused}") from None
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
