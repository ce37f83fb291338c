"""Health checks of the embedded stack's builder side: the Docker engine, QEMU
for arm64 and the offline base images. Settings add them to the portal's
health page in local mode only (SLIPWAY_EXTRA_HEALTH_CHECKS); production code
never imports this module."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from deploy import arch
from deploy import docker as docker_seam
from deploy.health import Down
from devstack import base_images

BINFMT_AARCH64 = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")


def check_docker() -> str:
    import docker.errors
    import requests

    try:
        info = docker_seam.client(timeout=3).version()
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise Down(f"Docker engine not answering: {exc}") from exc
    return f"engine {info.get('Version', '?')} ({info.get('Os', '?')}/{info.get('Arch', '?')})"


def check_qemu() -> str:
    remote = settings.SLIPWAY_DOCKER_HOSTS.get("arm64")
    if remote and remote != settings.SLIPWAY_DOCKER_HOSTS.get("x86_64"):
        return f"not needed: arm64 builds run on {remote}"
    try:
        state = BINFMT_AARCH64.read_text()
    except FileNotFoundError:
        raise Down("qemu-aarch64 is not registered in binfmt_misc: install qemu-user-static binfmt-support, "
                   "mount binfmt_misc and run `update-binfmts --enable qemu-aarch64`") from None
    except OSError as exc:
        raise Down(f"cannot read {BINFMT_AARCH64}: {exc}") from exc
    if not state.startswith("enabled"):
        raise Down("qemu-aarch64 is registered but disabled: run `update-binfmts --enable qemu-aarch64`")
    interpreter = next((line.split()[1] for line in state.splitlines() if line.startswith("interpreter")), "?")
    return f"arm64 binaries run through {interpreter}"


def check_base_images() -> str:
    import docker.errors
    import requests

    wanted = {name: image for name, image in settings.SLIPWAY_BASE_IMAGES.items() if image}
    if not wanted:
        return "not used: functions build from their Dockerfile's default BASE_IMAGE"
    found = []
    try:
        engine = docker_seam.client(timeout=3)
        for name, image in sorted(wanted.items()):
            try:
                attrs = engine.images.get(image).attrs
            except docker.errors.ImageNotFound:
                raise Down(f"{image} ({name}) is missing: run `make run` to build the base images") from None
            docker_arch = arch.get(name).docker
            if attrs.get("Architecture") != docker_arch:
                raise Down(f"{image} is built for {attrs.get('Architecture')}, not {name}")
            if image.startswith(base_images.REPOSITORY + ":"):
                label = (attrs.get("Config") or {}).get("Labels") or {}
                if label.get(base_images.LABEL_INPUTS) != base_images.inputs_digest(docker_arch):
                    raise Down(f"{image} is outdated (its inputs changed): `make run` rebuilds it")
            found.append(f"{image} {attrs.get('Size', 0) // 2**20} MB")
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise Down(f"cannot list images, Docker engine not answering: {exc}") from exc
    return ", ".join(found)
