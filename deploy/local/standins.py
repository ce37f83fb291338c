"""Offline stand-ins for the public images docker-compose.yml names.

Docker Hub is out of reach here, so the compose test builds each image the
compose file pulls on a real machine from Debian packages and PyPI, the way
base_images.py builds the Lambda bases: one mmdebstrap rootfs (extract mode:
nothing runs in it) holding Python, git, Debian's docker CLI, redis-server and
PostgreSQL 15, then one thin image per service whose entrypoint honours the
official image's contract that the compose file relies on (environment
variables, ports, data paths, first-start initialisation):

  python:3.11-slim-bookworm   -> slipway-standin/python:3.11-bookworm  (the portal's BASE_IMAGE)
  redis:7                     -> slipway-standin/redis:7
  postgres:15                 -> slipway-standin/postgres:15
  ministackorg/ministack:1.5.33 -> slipway-standin/ministack:1.5.33

Like `docker pull` caches, they stay in the engine between runs and are rebuilt
only when their inputs change (a digest stored as a label). Nothing here is used
by `make run` or `make test`.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from deploy.local import base_images
from deploy.local.common import StackError, run, say, state_dir
from deploy.local.stack import PLANE_REQUIREMENTS, plane_venv

CONTEXT = Path(__file__).with_name("standins")
REPOSITORY = "slipway-standin"
LABEL_INPUTS = "slipway.standin-inputs"
LABEL_ROLE = "slipway.role"
PACKAGES = [
    *base_images.PACKAGES, "git", "openssh-client", "util-linux", "findutils", "grep", "sed", "tzdata",
    "redis-server", "redis-tools", "postgresql-15", "postgresql-client-15",
]
# The official images' users: postgres is uid 999 there; redis gets its own.
_USERS_HOOK = (
    'cp "$1/usr/share/base-passwd/passwd.master" "$1/etc/passwd"'
    ' && cp "$1/usr/share/base-passwd/group.master" "$1/etc/group"'
    ' && echo "postgres:x:999:999::/var/lib/postgresql:/bin/bash" >> "$1/etc/passwd"'
    ' && echo "postgres:x:999:" >> "$1/etc/group"'
    ' && echo "redis:x:998:998::/data:/usr/sbin/nologin" >> "$1/etc/passwd"'
    ' && echo "redis:x:998:" >> "$1/etc/group"'
)
# Debian's docker CLI (package docker.io, BuildKit built in), as installed on this
# host by the stack: the portal's Dockerfile takes the same binary from the same
# package when it builds on a public base.
HOST_DOCKER_CLI = Path("/usr/bin/docker")
_DOCKER_CLI_HOOK = f'cp {HOST_DOCKER_CLI} "$1/usr/bin/docker"'
# What the compose file's defaults name, and the stand-in the test puts in their place.
IMAGES = {
    "base": ("python:3.11-slim-bookworm", f"{REPOSITORY}/python:3.11-bookworm"),
    "redis": ("redis:7", f"{REPOSITORY}/redis:7"),
    "postgres": ("postgres:15", f"{REPOSITORY}/postgres:15"),
    "ministack": ("ministackorg/ministack:1.5.33", f"{REPOSITORY}/ministack:1.5.33"),
}
_PLANE_SKIP = {"pip", "setuptools", "_distutils_hack", "pkg_resources", "distutils-precedence.pth"}


def tag(name: str) -> str:
    return IMAGES[name][1]


def inputs_digest() -> str:
    h = hashlib.sha256()
    for path in sorted(CONTEXT.iterdir()):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    for path in (Path(__file__), Path(base_images.__file__), PLANE_REQUIREMENTS):
        h.update(path.read_bytes())
    if base_images.APT_SOURCES.exists():
        h.update(base_images.APT_SOURCES.read_bytes())
    stat = HOST_DOCKER_CLI.stat()
    h.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _current(engine, name: str, digest: str) -> bool:
    import docker.errors as derr

    try:
        return (engine.images.get(tag(name)).labels or {}).get(LABEL_INPUTS) == digest
    except derr.ImageNotFound:
        return False


def ensure(engine) -> str:
    """Every stand-in present and current: 'cached' or 'built'."""
    digest = inputs_digest()
    if all(_current(engine, name, digest) for name in IMAGES):
        return "cached"
    if not HOST_DOCKER_CLI.exists():
        raise StackError(f"{HOST_DOCKER_CLI} is missing", "run `make prepare` (installs docker.io)")
    say("building the compose stand-ins from Debian packages and PyPI (first run only, ~1 min)")
    with tempfile.TemporaryDirectory(prefix="slipway-standins-", dir=state_dir()) as tmp:
        ctx = Path(tmp)
        for path in CONTEXT.iterdir():
            shutil.copy2(path, ctx / path.name)
        _rootfs(ctx / "rootfs.tar")
        _build(engine, ctx, "base", "Dockerfile.base", digest)
        (ctx / "rootfs.tar").unlink()  # the other images start from the base image, not the tar
        _plane_site(ctx / "site")
        for name in ("redis", "postgres", "ministack"):
            _build(engine, ctx, name, f"Dockerfile.{name}", digest)
    return "built"


def _rootfs(out: Path) -> None:
    args = [
        "mmdebstrap", "--variant=extract", "--arch=amd64", "--quiet",
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        f"--include={','.join(PACKAGES)}",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        f"--extract-hook={_USERS_HOOK}",
        f"--extract-hook={base_images._CA_HOOK}",
        f"--extract-hook={base_images._PIP_HOOK}",
        f"--extract-hook={base_images._PYC_HOOK}",
        f"--extract-hook={_DOCKER_CLI_HOOK}",
        base_images.SUITE, str(out),
    ]
    if base_images.APT_SOURCES.exists():
        args.append(str(base_images.APT_SOURCES))
    run(args, what="mmdebstrap of the stand-ins' rootfs failed",
        fix="check that the Debian mirror in /etc/apt/sources.list.d is reachable", timeout=900)


def _plane_site(target: Path) -> None:
    """ministack and its pins, from the plane's virtualenv (same Python 3.11 as the image's)."""
    site = plane_venv() / "lib" / f"python{base_images.PYTHON_VERSION}" / "site-packages"
    if not (site / "ministack").is_dir():
        raise StackError(f"ministack is not installed in {site}", "run `make prepare` first")
    shutil.copytree(site, target, ignore=lambda d, names: [n for n in names if n in _PLANE_SKIP or
                                                            n.startswith(("pip-", "setuptools-"))])


def _build(engine, ctx: Path, name: str, dockerfile: str, digest: str) -> None:
    import docker.errors as derr

    try:
        engine.images.build(path=str(ctx), dockerfile=dockerfile, tag=tag(name), rm=True, forcerm=True,
                            buildargs={"BASE": tag("base")}, platform="linux/amd64",
                            labels={LABEL_INPUTS: digest, LABEL_ROLE: f"compose-standin-{name}"})
    except (derr.BuildError, derr.APIError) as exc:
        raise StackError(f"docker build of {tag(name)} failed: {exc}", "see the Docker engine log") from exc


def main() -> int:
    import docker

    try:
        print(ensure(docker.from_env(timeout=600)))
    except StackError as exc:
        print(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

