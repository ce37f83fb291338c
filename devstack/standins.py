"""Offline stand-ins for the public images docker-compose.yml names.

Docker Hub is out of reach here, so the compose test builds each image the
compose file pulls on a real machine from Debian packages and PyPI, the way
base_images.py builds the Lambda bases: one mmdebstrap rootfs (extract mode:
nothing runs in it) holding Python, git, Debian's docker CLI, redis-server and
PostgreSQL 15, then one thin image per service whose entrypoint honours the
official image's contract that the compose file relies on (environment
variables, ports, data paths, first-start initialisation):

  python:3.11-slim-bookworm   -> slipway-standin/python:3.11-bookworm  (the portal's BASE_IMAGE;
                                 see _python: Debian's python3 is too old for the portal)
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
import sys
import tarfile
import tempfile
from pathlib import Path

from devstack import base_images
from devstack.common import StackError, run, say, state_dir
from devstack.stack import PLANE_REQUIREMENTS, plane_venv

CONTEXT = Path(__file__).with_name("standins")
REPOSITORY = "slipway-standin"
LABEL_INPUTS = "slipway.standin-inputs"
LABEL_ROLE = "slipway.role"
PACKAGES = [
    *base_images.PACKAGES, "git", "openssh-client", "util-linux", "findutils", "grep", "sed", "tzdata",
    "redis-server", "redis-tools", "postgresql-15", "postgresql-client-15",
    # what a CPython built from source links against (the official python image's layout)
    "libssl3", "libffi8", "libsqlite3-0", "libuuid1", "libbz2-1.0", "liblzma5", "zlib1g", "libexpat1",
    "libreadline8", "libncursesw6", "libgssapi-krb5-2", "libnsl2", "libtirpc3", "libcrypt1",
]
# python:3.11-slim-bookworm is bookworm plus a CPython 3.11 built from source in /usr/local.
# Debian's own python3 (3.11.2) lacks tarfile's extraction filters (PEP 706, 3.11.4), which
# deploy/source.py needs; so the stand-in takes the CPython that runs this repository's
# tests (the virtualenv's base installation), in the same place, without its site-packages.
PYTHON_MIN = (3, 11, 4)
_PYTHON_SKIP = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "lib2to3", "__phello__"}
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
    for path in (HOST_DOCKER_CLI, _python_home() / "bin" / PYTHON_BIN):
        stat = path.stat()
        h.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


PYTHON_BIN = f"python{base_images.PYTHON_VERSION}"


def _python_home() -> Path:
    return Path(sys.base_prefix)


def _python(target: Path) -> None:
    """The tests' CPython into target/usr/local, as the official image lays it out."""
    if sys.version_info[:3] < PYTHON_MIN or f"{sys.version_info[0]}.{sys.version_info[1]}" != \
            base_images.PYTHON_VERSION or not hasattr(tarfile, "data_filter"):
        raise StackError(f"the portal image needs CPython {base_images.PYTHON_VERSION} >= "
                         f"{'.'.join(map(str, PYTHON_MIN))} (tarfile filters); this is {sys.version.split()[0]}",
                         "create .venv with such a Python (PYTHON=python3.11 make …)")
    home, local = _python_home(), target / "usr" / "local"
    if home == Path("/usr"):
        raise StackError("the virtualenv's Python is Debian's own, not a CPython in its own prefix",
                         "build .venv from a CPython installed in its own prefix (e.g. /usr/local or pyenv)")
    (local / "bin").mkdir(parents=True)
    shutil.copy2(home / "bin" / PYTHON_BIN, local / "bin" / PYTHON_BIN)
    for alias in ("python3", "python"):
        (local / "bin" / alias).symlink_to(PYTHON_BIN)
    stdlib = home / "lib" / PYTHON_BIN
    shutil.copytree(stdlib, local / "lib" / PYTHON_BIN, symlinks=True, ignore=lambda d, names: [
        n for n in names if n in _PYTHON_SKIP or n.startswith(("config-", "_tkinter"))])
    site = local / "lib" / PYTHON_BIN / "site-packages"
    site.mkdir()
    for dist in (stdlib / "site-packages").glob("pip*"):  # pip, for the Dockerfile's install step
        (shutil.copytree if dist.is_dir() else shutil.copy2)(dist, site / dist.name)
    # The loader finds libpython on the default path (the extract rootfs has no ld.so.cache).
    libdir = target / "usr" / "lib" / "x86_64-linux-gnu"
    libdir.mkdir(parents=True)
    for lib in (home / "lib").glob(f"libpython{base_images.PYTHON_VERSION}*.so.*"):
        shutil.copy2(lib, libdir / lib.name)


def is_current(engine, name: str, digest: str) -> bool:
    import docker.errors as derr

    try:
        return (engine.images.get(tag(name)).labels or {}).get(LABEL_INPUTS) == digest
    except derr.ImageNotFound:
        return False


def ensure(engine) -> str:
    """Every stand-in present and current: 'cached' or 'built'."""
    digest = inputs_digest()
    if all(is_current(engine, name, digest) for name in IMAGES):
        return "cached"
    if not HOST_DOCKER_CLI.exists():
        raise StackError(f"{HOST_DOCKER_CLI} is missing", "run `make prepare` (installs docker.io)")
    say("building the compose stand-ins from Debian packages and PyPI (first run only, ~1 min)")
    replaced = _ids(engine)
    with tempfile.TemporaryDirectory(prefix="slipway-standins-", dir=state_dir()) as tmp:
        ctx = Path(tmp)
        for path in CONTEXT.iterdir():
            shutil.copy2(path, ctx / path.name)
        _rootfs(ctx / "rootfs.tar")
        _python(ctx / "python")
        _build(engine, ctx, "base", "Dockerfile.base", digest)
        (ctx / "rootfs.tar").unlink()  # the other images start from the base image
        shutil.rmtree(ctx / "python")
        _plane_site(ctx / "site")
        for name in ("redis", "postgres", "ministack"):
            _build(engine, ctx, name, f"Dockerfile.{name}", digest)
    # The previous versions, untagged now: removed unless something still uses them.
    import docker.errors as derr

    for image_id in replaced - _ids(engine):
        try:
            engine.images.remove(image_id, noprune=False)
        except derr.APIError:
            pass
    return "built"


def _ids(engine) -> set[str]:
    import docker.errors as derr

    ids = set()
    for name in IMAGES:
        try:
            ids.add(engine.images.get(tag(name)).id)
        except derr.ImageNotFound:
            pass
    return ids


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
    import time

    import docker

    started = time.monotonic()
    try:
        say(f"compose stand-ins: {ensure(docker.from_env(timeout=600))} ({time.monotonic() - started:.1f} s)")
    except StackError as exc:
        print(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

