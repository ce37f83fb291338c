"""Console round trip vs the detector called in-process, on the same 640x480 image, warm.

Run with `python -m devstack bench bench/console.py` (a private Redis, Postgres
and AWS plane on the bench ports). For each architecture (BENCH_ARCHITECTURES,
default `x86_64,arm64`; on an x86 host arm64 runs under QEMU, reported apart):

- the detector image of function/ is built (BuildKit cache), pushed and published
  on the plane as a Lambda with its `live` alias, as the pipeline would;
- in-process: `process_image` on the event, in a container of that same image
  (same OpenCV build, same architecture), after 3 warm-up calls;
- console: a POST of the image to the console's view through Django's test client
  (multipart parsing, the image checks, the invoke through deploy.lambdas, the
  rows stored), after 3 warm-up requests on the warm version;
- invoke only: deploy.lambdas.invoke with the same event, to show how much of the
  overhead is the plane's and how much the portal's.

Prints p50/p95 of each and the overhead (console minus in-process) in ms and as a
ratio. Nothing asserts on a time.
"""

from __future__ import annotations

import hashlib
import io
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django  # noqa: E402

django.setup()

import cv2  # noqa: E402
import docker  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from django.urls import reverse  # noqa: E402

from bench.detector_invoke import in_process  # noqa: E402
from deploy import arch as arches  # noqa: E402
from deploy import aws, lambdas  # noqa: E402
from portal.models import Build, ConsoleRun, Deployment, Environment, Function, Membership  # noqa: E402
from tests.detector_fixtures import b64, build_detector_image, sample_path  # noqa: E402
from tests.integration.conftest import remove_pulled, seed_detector  # noqa: E402

RUNS = {"x86_64": 40, "arm64": 16}
ROUNDS = 4
WARMUP = 3


def image_640x480() -> bytes:
    """The astronaut sample at 640x480 as a JPEG: one face, a realistic photo size."""
    image = cv2.resize(cv2.imread(str(sample_path("astronaut.png"))), (640, 480), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return jpeg.tobytes()


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def rows(architecture: str, lambda_name: str, repository: str, version: str, user) -> Function:
    function = Function.objects.create(
        name=lambda_name.removeprefix("slipway-"), repository_url="https://gitlab.example.com/bench/detector.git",
        ecr_repository=repository, architecture=architecture)
    Environment.objects.create(function=function, lambda_name=lambda_name, memory_mb=1024, timeout_s=60,
                               execution_role_arn="arn:aws:iam::000000000000:role/slipway-bench")
    Membership.objects.create(function=function, user=user, role=Membership.Role.DEPLOYER)
    build = Build.objects.create(function=function, commit_sha="c" * 40, architecture=architecture, inputs_digest="b",
                                 status=Build.Status.SUCCEEDED)
    Deployment.objects.create(function=function, build=build, trigger="cli", status="succeeded", version=version)
    return function


def console_times(client: Client, function: Function, image: bytes, runs: int) -> list[tuple[float, float]]:
    """(round trip ms, the function's own timings_ms.total) per POST, after the warm-up."""
    url = reverse("portal-console", args=[function.name])
    times = []
    for n in range(WARMUP + runs):
        handle = io.BytesIO(image)
        handle.name = "astronaut-640x480.jpg"
        started = time.perf_counter()
        response = client.post(url, {"image": handle, "target": "live", "detector": "face"})
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 302:
            raise SystemExit(f"the console answered {response.status_code}: {response.content[-2000:]!r}")
        run = ConsoleRun.objects.get(pk=response["Location"].rstrip("/").rsplit("/", 1)[1])
        if run.box_count != 1:
            raise SystemExit(f"unexpected answer: {run.result!r}"[:2000])
        if n >= WARMUP:
            times.append((elapsed, run.result["timings_ms"]["total"]))
    return times


def invoke_times(lambda_name: str, event: dict, runs: int) -> list[tuple[float, float]]:
    times = []
    for n in range(WARMUP + runs):
        started = time.perf_counter()
        invocation = lambdas.invoke(lambda_name, "live", event, tail=True, attempts=1)
        elapsed = (time.perf_counter() - started) * 1000
        if invocation.error or len(invocation.result.get("boxes", [])) != 1:
            raise SystemExit(f"unexpected answer: {invocation.result!r}"[:2000])
        if n >= WARMUP:
            times.append((elapsed, invocation.result["timings_ms"]["total"]))
    return times


def host_times(event: dict, runs: int) -> list[float]:
    """process_image in this very process (x86_64 host, the venv's OpenCV build)."""
    sys.path.insert(0, str(REPO_ROOT / "function" / "src"))
    import detector as handler  # the package function/src/detector, as the image's CMD names it
    for _ in range(WARMUP):
        handler.process_image(event)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        handler.process_image(event)
        times.append((time.perf_counter() - started) * 1000)
    return times


def measure(architecture: str, image: bytes, user) -> dict:
    docker_arch = arches.get(architecture).docker
    suffix = hashlib.sha256(f"{os.getpid()}{architecture}".encode()).hexdigest()[:8]
    lambda_name, repository = f"slipway-bench-console-{docker_arch}-{suffix}", f"slipway-bench/console-{suffix}"
    tag = f"slipway-bench/console-detector:{docker_arch}"
    build_detector_image(docker_arch, tag)  # labelled slipway.test; removed below, the build cache stays
    runs = RUNS[architecture]
    event = {"image_base64": b64(image), "detector": "face"}
    try:
        seeded = seed_detector(lambda_name, repository, [("real", tag)], architecture, timeout_s=60)
        function = rows(architecture, lambda_name, repository, seeded["real"]["version"], user)
        client = Client(SERVER_NAME="127.0.0.1")
        client.force_login(user)
        local, host, portal, plane = [], [], [], []
        # Interleaved rounds: the machine is shared, and load that comes and goes should hit all of them alike.
        for _ in range(ROUNDS):
            local += in_process(docker.from_env(), tag, docker_arch, event, runs // ROUNDS)
            if architecture == arches.host().name:
                host += host_times(event, runs // ROUNDS)
            portal += console_times(client, function, image, runs // ROUNDS)
            plane += invoke_times(lambda_name, event, runs // ROUNDS)
    finally:
        for cleanup in (lambda: aws.client("lambda").delete_function(FunctionName=lambda_name),
                        lambda: aws.client("ecr").delete_repository(repositoryName=repository, force=True)):
            try:
                cleanup()
            except Exception as exc:  # report, keep cleaning
                print(f"cleanup: {exc}", file=sys.stderr)
        # Untags only (the same image may carry other tags); the plane reaps its own idle containers.
        docker.from_env().images.remove(tag, force=True)
        remove_pulled(docker.from_env(), f"{os.environ['SLIPWAY_REGISTRY_HOST']}/{repository}")
    return {"local": local, "host": host, "console": portal, "invoke": plane, "runs": len(portal)}


def main() -> None:
    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user(f"bench-{os.getpid()}", "bench@example.org", "bench-password-1")
    image = image_640x480()
    architectures = os.environ.get("BENCH_ARCHITECTURES", "x86_64,arm64").split(",")
    print(f"image: 640x480 JPEG, {len(image):,} bytes; warm, {WARMUP} warm-up calls first")
    results = {architecture: measure(architecture, image, user) for architecture in architectures}
    print()
    print("| | in-process, same image | in-process, this host | console round trip | overhead vs same image "
          "| ratio | paired overhead: round trip − function's own total | of which the plane (invoke only) | runs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for architecture, found in results.items():
        local, host = found["local"], found["host"]
        trips = [trip for trip, _ in found["console"]]
        paired = [trip - inside for trip, inside in found["console"]]
        plane = [trip - inside for trip, inside in found["invoke"]]
        name = "arm64 (QEMU)" if architecture == "arm64" and arches.host().name != "arm64" else architecture
        print(f"| {name} | {fmt(local)} | {fmt(host) if host else '–'} | {fmt(trips)} | "
              f"{pct(trips, 50) - pct(local, 50):.1f} / {pct(trips, 95) - pct(local, 95):.1f} ms | "
              f"{pct(trips, 50) / pct(local, 50):.2f}× | {fmt(paired)} | {fmt(plane)} | {found['runs']} |")
    print("\n(each cell: p50 / p95)")


def fmt(values: list[float]) -> str:
    return f"{pct(values, 50):.1f} / {pct(values, 95):.1f} ms"


if __name__ == "__main__":
    main()
