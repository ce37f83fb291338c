"""Detector image benchmarks: size vs the naive Dockerfile, arm64 vs amd64 cold build, code-only rebuild.

Everything is measured in this run, on the local base images, with BuildKit:

    PYTHONPATH=. .venv/bin/python bench/detector_image.py

Builds run one after another (the engine is shared); the images it tags are
slipway-bench/detector:* and the superseded ones are removed by id.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import docker

from tests.detector_fixtures import FUNCTION_DIR, LOCAL_BASE, build_detector_image

BENCH_DIR = Path(__file__).resolve().parent
REPO = "slipway-bench/detector"


def naive_context(into: Path) -> Path:
    """The original single-stage Dockerfile with today's handler source."""
    into.mkdir()
    shutil.copy(BENCH_DIR / "naive" / "Dockerfile", into / "Dockerfile")
    shutil.copy(BENCH_DIR / "naive" / "requirements.txt", into / "requirements.txt")
    shutil.copytree(FUNCTION_DIR / "src", into / "src")
    return into


def function_copy(into: Path) -> Path:
    shutil.copytree(FUNCTION_DIR, into, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    return into


def above_base(client, tag: str, arch: str) -> int:
    """Bytes in the layers the Dockerfile added on top of the shared base."""
    base = client.images.get(LOCAL_BASE.format(arch=arch))
    return client.images.get(tag).attrs["Size"] - base.attrs["Size"]


def build(tag: str, arch: str, context: Path, *, no_cache: bool, client, made: set) -> float:
    seconds = build_detector_image(arch, tag, no_cache=no_cache, context=context)
    made.add(client.images.get(tag).id)
    return seconds


def main() -> int:
    client = docker.from_env()
    made: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="slipway-bench-") as tmp:
        tmp = Path(tmp)
        naive = naive_context(tmp / "naive")
        ours = function_copy(tmp / "function")

        print("building (no cache, one at a time) ...", flush=True)
        naive_s = build(f"{REPO}:naive-arm64", "arm64", naive, no_cache=True, client=client, made=made)
        arm_s = build(f"{REPO}:arm64", "arm64", ours, no_cache=True, client=client, made=made)
        amd_s = build(f"{REPO}:amd64", "amd64", ours, no_cache=True, client=client, made=made)
        naive_amd_s = build(f"{REPO}:naive-amd64", "amd64", naive, no_cache=True, client=client, made=made)

        # A code-only change: the deps layer must come from the cache.
        handler = ours / "src" / "detector" / "adapter.py"
        handler.write_text(handler.read_text() + "\n# code-only change for the benchmark\n")
        code_s = build(f"{REPO}:arm64", "arm64", ours, no_cache=False, client=client, made=made)

        sizes = {
            "naive arm64": above_base(client, f"{REPO}:naive-arm64", "arm64"),
            "multi-stage arm64": above_base(client, f"{REPO}:arm64", "arm64"),
            "naive amd64": above_base(client, f"{REPO}:naive-amd64", "amd64"),
            "multi-stage amd64": above_base(client, f"{REPO}:amd64", "amd64"),
        }
    for image_id in made:  # every image this run built, including the superseded code-only one
        try:
            client.images.remove(image_id, force=True)
        except docker.errors.APIError:
            pass

    print("\nlayers above the shared base (MB):")
    for name, size in sizes.items():
        print(f"  {name:<20} {size / 1e6:8.1f}")
    print(f"size ratio arm64, multi-stage / naive: {sizes['multi-stage arm64'] / sizes['naive arm64']:.2f}x "
          "(goal <= 0.5x)")
    print(f"size ratio amd64, multi-stage / naive: {sizes['multi-stage amd64'] / sizes['naive amd64']:.2f}x")
    print("\ncold builds (s, --no-cache):")
    print(f"  naive arm64 (pip under QEMU)  {naive_s:6.1f}")
    print(f"  naive amd64                   {naive_amd_s:6.1f}")
    print(f"  multi-stage arm64             {arm_s:6.1f}")
    print(f"  multi-stage amd64             {amd_s:6.1f}")
    print(f"arm64 / amd64 cold build, multi-stage: {arm_s / amd_s:.2f}x (goal <= 1.5x)")
    print(f"arm64 multi-stage / naive cold build: {arm_s / naive_s:.2f}x")
    print(f"\ncode-only rebuild arm64: {code_s:.2f} s; vs cold: {code_s / arm_s:.3f}x (goal <= 0.05x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
