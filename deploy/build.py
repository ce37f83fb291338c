"""Build a function's image with BuildKit through the docker CLI.

The docker SDK only drives the legacy builder, which refuses multi-stage
builds whose stages differ in platform; BuildKit runs a
`FROM --platform=$BUILDPLATFORM` stage natively and copies its output into
the arm64 stage, keeping pip and compilers out of QEMU. So the build goes
through a BuildKit-capable CLI (`docker buildx build` where the plugin exists,
else a CLI with BuildKit built in and DOCKER_BUILDKIT=1), found by
configuration.
"""

from __future__ import annotations

import re
import shlex
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deploy import cli, process
from deploy.errors import AppError, UserError

BUILD_ARG = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_CACHED = re.compile(r"^#\d+ CACHED\s*$")
_STEP_DONE = re.compile(r"^#\d+ DONE ")
_DAEMON_DOWN = ("cannot connect to the docker daemon", "error during connect", "connection refused",
                "failed to dial grpc")


@dataclass
class BuildResult:
    image_id: str
    cache_hits: int
    cache_misses: int
    seconds: float


def validate_build_args(build_args: dict) -> dict[str, str]:
    clean = {}
    for key, value in (build_args or {}).items():
        if not BUILD_ARG.match(str(key)):
            raise UserError("bad-build-arg", f"build arg name {key!r} is not a valid identifier")
        if not isinstance(value, str | int | float) or any(c in str(value) for c in "\n\r\x00"):
            raise UserError("bad-build-arg", f"build arg {key} must be a single-line string")
        clean[str(key)] = str(value)
    return clean


def build(*, builder: str, context: Path, dockerfile: Path, platform: str, tag: str, build_args: dict,
          labels: dict[str, str], docker_host: str = "", on_line: Callable[[str], None],
          on_start: Callable[[int], None] | None = None, timeout: float = 1800, no_cache: bool = False) -> BuildResult:
    """Build `context` into the local image `tag` for `platform`; layer cache reused unless
    `no_cache` (a fork's preview: it neither reads layers cached by the function's own builds nor
    gets its instructions answered by them)."""
    command = shlex.split(builder)
    if command[-1] != "buildx":
        command.append("build")
    else:
        # buildx adds provenance and SBOM attestations by default, which turns the
        # image into an index: Lambda takes a single-platform image manifest only.
        command += ["build", "--load", "--provenance=false", "--sbom=false"]
    with tempfile.TemporaryDirectory(prefix="slipway-iid-") as tmp:
        iidfile = Path(tmp) / "iid"
        args = [*command, "--platform", platform, "--progress", "plain", "--file", str(dockerfile),
                "--tag", tag, "--iidfile", str(iidfile), *(["--no-cache"] if no_cache else [])]
        for key, value in validate_build_args(build_args).items():
            args += ["--build-arg", f"{key}={value}"]
        for key, value in labels.items():
            args += ["--label", f"{key}={value}"]
        args.append(str(context))
        tail: list[str] = []
        hits = done = 0

        def line(text: str) -> None:
            nonlocal hits, done
            hits += bool(_CACHED.match(text))
            done += bool(_STEP_DONE.match(text))
            tail.append(text)
            del tail[:-40]
            on_line(text)

        started = time.monotonic()
        env = cli.environ(DOCKER_BUILDKIT="1", DOCKER_HOST=docker_host)
        try:
            status = cli.stream(args, env=env, on_line=line, timeout=timeout, on_start=on_start)
        except FileNotFoundError:
            raise AppError("builder-missing", f"the BuildKit CLI {command[0]!r} is not installed",
                           retryable=False) from None
        except process.Timeout:
            raise AppError("build-timeout", f"the build ran longer than {timeout:.0f} s", retryable=False) from None
        if status != 0:
            text = "\n".join(tail)
            if any(marker in text.lower() for marker in _DAEMON_DOWN):
                raise AppError("docker-unavailable", f"the Docker engine is not answering: {tail[-1] if tail else ''}")
            if "requires BuildKit" in text or "buildx" in text and "not a docker command" in text:
                raise AppError("builder-missing", "the configured docker CLI cannot run BuildKit builds; set "
                               "SLIPWAY_BUILDKIT_DOCKER to one that can", retryable=False)
            errors = [t for t in tail if "ERROR" in t or "error:" in t.lower()] or tail[-3:]
            raise UserError("build-failed", "docker build failed: " + " | ".join(errors[-3:])[:1500])
        image_id = iidfile.read_text().strip() if iidfile.exists() else ""
    return BuildResult(image_id=image_id, cache_hits=hits, cache_misses=max(done - hits, 0),
                       seconds=time.monotonic() - started)
