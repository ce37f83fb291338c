"""Build the offline Lambda base images `slipway/lambda-python:3.11-<arch>`.

Docker Hub and public ECR are out of reach, so the stand-in for
public.ecr.aws/lambda/python is made from Debian packages (mmdebstrap in
extract mode: nothing runs under QEMU) plus PyPI wheels for the target
architecture (awslambdaric) and the Runtime Interface Emulator that ships
inside the aws-sam-cli wheel. An image is rebuilt only when its inputs change:
their digest is stored as a label and compared on the next start.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import zipfile
from pathlib import Path

from deploy import arch as arches
from devstack.common import StackError, run, say, state_dir

CONTEXT = Path(__file__).with_name("lambda-python")
REPOSITORY = "slipway/lambda-python"
PYTHON_VERSION = "3.11"  # Debian bookworm's python3
AWSLAMBDARIC_VERSION = "4.2.2"
# AWS's Python base images ship boto3; functions may rely on it being there.
BOTO3_VERSION = "1.44.8"
SAM_CLI_VERSION = "1.170.0"  # only for the emulator binaries inside its wheel
SUITE = "bookworm"
APT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
PACKAGES = [
    "python3", "python3-pip", "ca-certificates", "base-passwd", "base-files", "bash",
    "coreutils", "dash", "libc-bin", "libstdc++6", "libgcc-s1",
]
LABEL_INPUTS = "slipway.base-inputs"
LABEL_ROLE = "slipway.role"


# The Lambda sandbox runs functions as an unprivileged user; so does ours.
_PASSWD_HOOK = (
    'cp "$1/usr/share/base-passwd/passwd.master" "$1/etc/passwd"'
    ' && cp "$1/usr/share/base-passwd/group.master" "$1/etc/group"'
    ' && echo "sbx_user1051:x:993:990::/tmp:/usr/sbin/nologin" >> "$1/etc/passwd"'
    ' && echo "sbx_user1051:x:990:" >> "$1/etc/group"'
)
_CA_HOOK = 'mkdir -p "$1/etc/ssl/certs" && cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/"'
# PEP 668 marker: images built on this base install with pip like AWS's do.
_PIP_HOOK = 'rm -f "$1/usr/lib/python3.11/EXTERNALLY-MANAGED"'
# Without bytecode, Python starts ~3x slower under QEMU. Compiled by the host's
# Debian python3.11 (same magic number) with paths rewritten to the image's.
_PYC_HOOK = '/usr/bin/python3.11 -m compileall -q -j0 -s "$1" -p / "$1/usr/lib/python3.11"'


def image_tag(arch: str) -> str:
    return f"{REPOSITORY}:{PYTHON_VERSION}-{arch}"


def inputs_digest(arch: str) -> str:
    """Everything that decides the image's content, hashed."""
    h = hashlib.sha256()
    for path in sorted(CONTEXT.iterdir()):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    h.update(Path(__file__).read_bytes())
    h.update(Path(arches.__file__).read_bytes())  # wheel platforms and emulator names
    if APT_SOURCES.exists():
        h.update(APT_SOURCES.read_bytes())
    h.update(arch.encode())
    return h.hexdigest()[:16]


def is_current(docker, arch: str) -> bool:
    import docker.errors as derr

    try:
        image = docker.images.get(image_tag(arch))
    except derr.ImageNotFound:
        return False
    return (image.labels or {}).get(LABEL_INPUTS) == inputs_digest(arch)


def ensure(docker, arch: str) -> str:
    """Return 'cached' or 'built'; StackError with the failing step otherwise."""
    try:
        arches.get(arch)
    except KeyError as exc:
        raise StackError(str(exc)) from None
    if is_current(docker, arch):
        return "cached"
    say(f"building {image_tag(arch)} from Debian packages (first run only, ~1 min)")
    with tempfile.TemporaryDirectory(prefix=f"slipway-base-{arch}-", dir=state_dir()) as tmp:
        ctx = Path(tmp)
        for path in CONTEXT.iterdir():
            shutil.copy2(path, ctx / path.name)
        _rootfs(arch, ctx / "rootfs.tar")
        _site_packages(arch, ctx / "site")
        _emulator(arch, ctx / "aws-lambda-rie")
        _docker_build(docker, arch, ctx)
    return "built"


def _rootfs(arch: str, out: Path) -> None:
    debian_arch = arches.get(arch).docker
    args = [
        "mmdebstrap", "--variant=extract", f"--arch={debian_arch}", "--quiet",
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        f"--include={','.join(PACKAGES)}",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        f"--extract-hook={_PASSWD_HOOK}",
        f"--extract-hook={_CA_HOOK}",
        f"--extract-hook={_PIP_HOOK}",
        f"--extract-hook={_PYC_HOOK}",
        SUITE, str(out),
    ]
    if APT_SOURCES.exists():
        args.append(str(APT_SOURCES))
    run(args, what=f"mmdebstrap of the {arch} rootfs failed",
        fix="check that the Debian mirror in /etc/apt/sources.list.d is reachable", timeout=900)


def _pip(args: list[str], what: str) -> None:
    import sys

    run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], what=what,
        fix="check that PyPI is reachable through pip's configured index", timeout=600)


def _site_packages(arch: str, target: Path) -> None:
    """awslambdaric and boto3 for the target architecture, installed on the host (no QEMU)."""
    platforms = [arg for tag in arches.get(arch).wheel_platforms for arg in ("--platform", tag)]
    _pip(["install", "--quiet", "--no-compile", "--target", str(target), *platforms,
          "--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp",
          f"awslambdaric=={AWSLAMBDARIC_VERSION}", f"boto3=={BOTO3_VERSION}"],
         f"installing awslambdaric and boto3 for {arch} failed")
    # The root filesystem is read-only at run time: without bytecode shipped in
    # the image, every cold start compiles awslambdaric (and boto3 if used) again
    # (~0.5 s under QEMU). Same interpreter version, so the host compiles it.
    run(["/usr/bin/python3.11", "-m", "compileall", "-q", "-j0", "--invalidation-mode", "unchecked-hash",
         "-s", str(target), "-p", "/usr/local/lib/python3.11/dist-packages", str(target)],
        what=f"compiling the {arch} site-packages failed")


def _emulator(arch: str, out: Path) -> None:
    """Copy the Runtime Interface Emulator binary out of the aws-sam-cli wheel."""
    cache = state_dir() / "cache" / "wheels"
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob(f"aws_sam_cli-{SAM_CLI_VERSION}-*.whl"))
    if not wheels:
        _pip(["download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", str(cache),
              f"aws-sam-cli=={SAM_CLI_VERSION}"], "downloading the aws-sam-cli wheel failed")
        wheels = sorted(cache.glob(f"aws_sam_cli-{SAM_CLI_VERSION}-*.whl"))
    member = f"samcli/local/rapid/{arches.get(arch).rie_binary}"
    try:
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(member) as src, out.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    except (IndexError, KeyError, zipfile.BadZipFile) as exc:
        raise StackError(f"{member} not found in the aws-sam-cli wheel ({exc})",
                         f"delete {cache} and retry") from exc
    out.chmod(0o755)


def _docker_build(docker, arch: str, ctx: Path) -> None:
    import docker.errors as derr

    # The legacy builder is enough here (no RUN step); FROM scratch + --platform
    # gives an image whose config says the right architecture.
    try:
        docker.images.build(
            path=str(ctx), tag=image_tag(arch), platform=f"linux/{arch}", rm=True, forcerm=True,
            labels={LABEL_INPUTS: inputs_digest(arch), LABEL_ROLE: "lambda-base"},
        )
    except (derr.BuildError, derr.APIError) as exc:
        raise StackError(f"docker build of {image_tag(arch)} failed: {exc}",
                         "see the Docker engine log") from exc
