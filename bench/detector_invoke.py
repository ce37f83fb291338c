"""Detector invoke benchmarks: warm invoke overhead of the emulator, cold start per architecture.

Builds (with cache) the arm64 and amd64 images of function/ on the local base,
then for each architecture:
- warm: the same small event sent N times through the Runtime Interface
  Emulator, vs process_image called N times in-process in the same image;
- cold: container start to first answer, a few times.

    PYTHONPATH=. .venv/bin/python bench/detector_invoke.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import cv2
import docker

from tests.detector_fixtures import Container, b64, build_detector_image, sample_path

WARM_RUNS = 40
COLD_RUNS = 3
IN_PROCESS = """
import json, sys, time
import detector as handler
event = json.loads(sys.argv[1])
for _ in range(3):
    handler.process_image(event)
times = []
for _ in range(int(sys.argv[2])):
    started = time.perf_counter()
    handler.process_image(event)
    times.append((time.perf_counter() - started) * 1000)
print(json.dumps(times))
"""


def small_event() -> dict:
    """A 128x128 PNG with one face: small enough that the overhead shows, real enough to detect."""
    image = cv2.imread(str(sample_path("astronaut.png")))
    image = cv2.resize(image, (128, 128), interpolation=cv2.INTER_AREA)
    ok, png = cv2.imencode(".png", image)
    return {"image_base64": b64(png.tobytes()), "min_size": 20}


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


def in_process(client, tag: str, arch: str, event: dict, runs: int = WARM_RUNS) -> list[float]:
    out = client.containers.run(
        tag, ["-c", IN_PROCESS, json.dumps(event), str(runs)], entrypoint=["/usr/bin/python3"],
        platform=f"linux/{arch}", labels={"slipway.bench": "1"}, read_only=True, tmpfs={"/tmp": ""},
        user="993:990", working_dir="/var/task", remove=True, stderr=False,
    )
    return json.loads(out.decode().strip().splitlines()[-1])


def through_emulator(tag: str, arch: str, event: dict) -> list[float]:
    container = Container(tag, arch)
    try:
        container.wait_ready()
        for _ in range(3):
            container.invoke(event)
        times = []
        for _ in range(WARM_RUNS):
            started = time.perf_counter()
            container.invoke(event)
            times.append((time.perf_counter() - started) * 1000)
        return times
    finally:
        container.remove()


def cold_starts(tag: str, arch: str) -> list[float]:
    seconds = []
    for _ in range(COLD_RUNS):
        started = time.perf_counter()
        container = Container(tag, arch)
        try:
            container.wait_ready()
            seconds.append(time.perf_counter() - started)
        finally:
            container.remove()
    return seconds


def main() -> int:
    client = docker.from_env()
    event = small_event()
    rows = {}
    for arch in ("arm64", "amd64"):
        tag = f"slipway-bench/detector:invoke-{arch}"
        build_detector_image(arch, tag)
        local = in_process(client, tag, arch, event)
        remote = through_emulator(tag, arch, event)
        rows[arch] = (local, remote, cold_starts(tag, arch))
    for arch, (local, remote, cold) in rows.items():
        print(f"\n{arch}: warm, {WARM_RUNS} runs of a 128x128 face image (ms)")
        print(f"  in-process   p50 {pct(local, 50):7.2f}   p95 {pct(local, 95):7.2f}")
        print(f"  via emulator p50 {pct(remote, 50):7.2f}   p95 {pct(remote, 95):7.2f}")
        p50, p95 = pct(remote, 50) - pct(local, 50), pct(remote, 95) - pct(local, 95)
        ratio = pct(remote, 50) / pct(local, 50)
        print(f"  overhead     p50 {p50:7.2f}   p95 {p95:7.2f}   ratio p50 against in-process calls {ratio:.2f}x")
        print(f"  cold start (container start to first answer, s): "
              f"{', '.join(f'{s:.2f}' for s in cold)}; median {statistics.median(cold):.2f}")
    arm, amd = statistics.median(rows["arm64"][2]), statistics.median(rows["amd64"][2])
    print(f"\ncold start arm64 (QEMU) / amd64: {arm / amd:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
