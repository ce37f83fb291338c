"""The one architecture table: every name an architecture goes by, Django-free.

Lambda and Slipway's rows say `arm64` / `x86_64`; Docker, Debian and image tags
say `arm64` / `amd64`; ELF headers carry a machine number; pip needs the wheel
platform tags; the Runtime Interface Emulator ships one binary per architecture.
"""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    name: str  # Lambda's Architectures value, stored on functions and builds
    label: str  # shown to people
    docker: str  # Docker's, Debian's and the image tag's name
    elf_machine: int  # e_machine in an ELF header
    wheel_platforms: tuple[str, ...]  # pip --platform tags (both, or pip silently picks old wheels)
    rie_binary: str  # the emulator inside the aws-sam-cli wheel

    @property
    def platform(self) -> str:
        return f"linux/{self.docker}"


ARM64 = Arch("arm64", "arm64 (Graviton)", "arm64", 0xB7, ("manylinux2014_aarch64", "manylinux_2_28_aarch64"),
             "aws-lambda-rie-arm64")
X86_64 = Arch("x86_64", "x86_64", "amd64", 0x3E, ("manylinux2014_x86_64", "manylinux_2_28_x86_64"),
              "aws-lambda-rie-x86_64")
ALL = (ARM64, X86_64)
CHOICES = [(arch.name, arch.label) for arch in ALL]


def get(name: str) -> Arch:
    """By Lambda's name (`x86_64`) or Docker's (`amd64`)."""
    for arch in ALL:
        if name in (arch.name, arch.docker):
            return arch
    raise KeyError(f"unknown architecture {name!r}; use one of {', '.join(a.name for a in ALL)}")


def by_elf_machine(machine: int) -> Arch | None:
    return next((arch for arch in ALL if arch.elf_machine == machine), None)


def host() -> Arch:
    """This machine's architecture (for build-platform stages)."""
    return ARM64 if _platform.machine() in ("aarch64", "arm64") else X86_64
