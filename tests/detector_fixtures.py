"""Fixtures for the OpenCV detector in function/ (a pytest plugin module).

Sample images come from the scikit-image wheel, so nothing is downloaded at
test time. The container fixtures build the image once per test session for
each architecture (arm64 through the real cross-platform BuildKit path) and
remove every container they start.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FUNCTION_DIR = REPO_ROOT / "function"
TEST_LABEL = "slipway.test"
LOCAL_BASE = "slipway/lambda-python:3.11-{arch}"
LOCAL_PYTHON = "3.11"
# Debian's docker 20.10 CLI has BuildKit built in; the newer CLI first in PATH
# has no buildx and refuses it. The legacy builder cannot build the Dockerfile.
DOCKER_CLI = os.environ.get("SLIPWAY_DOCKER_CLI", "/usr/bin/docker")
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
# The handler string, as function/Dockerfile's CMD names it: the package function/src/detector.
HANDLER = "detector.process_image"


def sample_path(name: str) -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent / name


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def iou(a: dict, b: dict) -> float:
    x1, y1 = max(a["x"], b["x"]), max(a["y"], b["y"])
    x2 = min(a["x"] + a["w"], b["x"] + b["w"])
    y2 = min(a["y"] + a["h"], b["y"] + b["h"])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    union = a["w"] * a["h"] + b["w"] * b["h"] - inter
    return inter / union if union else 0.0


def assert_same_boxes(got: list[dict], expected: list[dict], threshold: float = 0.9) -> None:
    """Same count, and each expected box matched by a distinct one with IoU >= threshold."""
    assert len(got) == len(expected), (got, expected)
    unmatched = list(got)
    for box in expected:
        best = max(unmatched, key=lambda other: iou(box, other))
        assert iou(box, best) >= threshold, (box, best)
        assert best["label"] == box["label"]
        unmatched.remove(best)


def encode(image, ext: str = ".png", params=()) -> bytes:
    """An image array as the bytes of a file, encoded by OpenCV."""
    import cv2

    ok, data = cv2.imencode(ext, image, list(params))
    assert ok, f"OpenCV cannot encode {ext}"
    return data.tobytes()


def noise(width: int, height: int, seed: int = 0):
    """Uniform colour noise, BGR."""
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def photo(name: str, width: int, height: int):
    """A scikit-image sample photo resized to width x height (BGR)."""
    import cv2

    image = cv2.imread(str(sample_path(name)))
    shrinking = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def photo_at(name: str, long_side: int):
    """A scikit-image sample photo scaled so that its longer side is long_side pixels."""
    import cv2

    height, width = cv2.imread(str(sample_path(name))).shape[:2]
    scale = long_side / max(width, height)
    return photo(name, round(width * scale), round(height * scale))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.cache
def png_bomb(width: int = 8_000, height: int = 6_000) -> bytes:
    """A valid grayscale PNG of zeros: ~50 KB on disk, 48 MP (over the 40 MP limit) once decoded."""
    packer = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunks = _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def bmp_bomb(width: int = 8_000, height: int = 6_000) -> bytes:
    """A valid 8-bit RLE BMP that ends at once (end-of-bitmap): ~1 KB, 48 MP once decoded."""
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    pixels = b"\x00\x01"  # RLE8 escape: end of bitmap
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


def webp_bomb(kind: str) -> bytes:
    """A small WebP whose header claims 16383x16383 (268 MP): `kind` is VP8, VP8L or VP8X.

    The pixel data is that of a 64x64 image, so only a header check can refuse it before decoding."""
    import cv2
    import numpy as np

    image = np.zeros((64, 64, 3), np.uint8)
    data = bytearray(encode(image, ".webp", [cv2.IMWRITE_WEBP_QUALITY, 101 if kind == "VP8L" else 80]))
    if kind == "VP8":
        struct.pack_into("<HH", data, 26, 16383, 16383)
    elif kind == "VP8L":
        struct.pack_into("<I", data, 21, 16382 | 16382 << 14 | (data[24] >> 4) << 28)
    else:  # an extended header in front of the lossy bitstream, with a canvas of 16383 x 16383
        vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4 + (16382).to_bytes(3, "little") * 2
        data[12:12] = vp8x
        struct.pack_into("<I", data, 4, len(data) - 8)
    return bytes(data)


def corrupt_png() -> bytes:
    """Complete chunk structure, garbage pixel data: only the decoder can tell."""
    header = struct.pack(">IIBBBBB", 64, 64, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", b"not zlib data" * 8)
            + _png_chunk(b"IEND", b""))


@dataclass(frozen=True)
class Samples:
    astronaut_png: bytes
    astronaut_jpeg: bytes
    chelsea_png: bytes
    rocket_jpeg: bytes
    gif: bytes
    jpeg_path: Path
    astronaut_webp: bytes
    astronaut_bmp: bytes
    webp_path: Path
    astronaut_3200_jpeg: bytes


@pytest.fixture(scope="session")
def detector_samples(tmp_path_factory) -> Samples:
    import cv2

    folder = tmp_path_factory.mktemp("detector")
    jpeg_path, webp_path = folder / "astronaut.jpg", folder / "astronaut.webp"
    astronaut = cv2.imread(str(sample_path("astronaut.png")))
    cv2.imwrite(str(jpeg_path), astronaut, [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(webp_path), astronaut, [cv2.IMWRITE_WEBP_QUALITY, 90])
    return Samples(
        astronaut_png=sample_path("astronaut.png").read_bytes(),
        astronaut_jpeg=jpeg_path.read_bytes(),
        chelsea_png=sample_path("chelsea.png").read_bytes(),
        rocket_jpeg=sample_path("rocket.jpg").read_bytes(),
        gif=sample_path("no_time_for_that_tiny.gif").read_bytes(),
        jpeg_path=jpeg_path,
        astronaut_webp=webp_path.read_bytes(),
        astronaut_bmp=encode(astronaut, ".bmp"),
        webp_path=webp_path,
        astronaut_3200_jpeg=encode(photo_at("astronaut.png", 3200), ".jpg"),
    )


# Every bad input that does not involve S3, by case name -> expected code. The
# events are built by `bad_input_event`, so that collection stays cheap.
BAD_INPUTS = {
    "missing_fields": "missing_input",
    "bucket_without_key": "missing_input",
    "both_fields": "conflicting_input",
    "not_base64": "invalid_base64",
    "base64_not_a_string": "invalid_input",
    "empty_file": "empty_image",
    "not_an_image": "not_an_image",
    "gif": "unsupported_format",
    "truncated_jpeg": "truncated_image",
    "truncated_png": "truncated_image",
    "truncated_webp": "truncated_image",
    "truncated_bmp": "truncated_image",
    "corrupt_png": "corrupt_image",
    "decompression_bomb": "image_too_large",
    "webp_bomb": "image_too_large",
    "bmp_bomb": "image_too_large",
    "unknown_detector": "unknown_detector",
    "scale_factor_too_small": "invalid_option",
    "min_neighbors_negative": "invalid_option",
    "min_size_not_a_size": "invalid_option",
    "max_size_below_min_size": "invalid_option",
    "max_side_too_small": "invalid_option",
    "option_of_wrong_type": "invalid_option",
}


@pytest.fixture(scope="session")
def bad_input_event(detector_samples):
    png, jpeg = detector_samples.astronaut_png, detector_samples.astronaut_jpeg
    webp, bmp = detector_samples.astronaut_webp, detector_samples.astronaut_bmp
    image = b64(png)
    events = {
        "missing_fields": lambda: {"detector": "face"},
        "bucket_without_key": lambda: {"bucket": "photos"},
        "both_fields": lambda: {"image_base64": image, "bucket": "photos", "key": "a.png"},
        "not_base64": lambda: {"image_base64": "this is not base64!"},
        "base64_not_a_string": lambda: {"image_base64": 42},
        "empty_file": lambda: {"image_base64": ""},
        "not_an_image": lambda: {"image_base64": b64(b"%PDF-1.7 not an image at all")},
        "gif": lambda: {"image_base64": b64(detector_samples.gif)},
        "truncated_jpeg": lambda: {"image_base64": b64(jpeg[: len(jpeg) * 2 // 3])},
        "truncated_png": lambda: {"image_base64": b64(png[: len(png) * 2 // 3])},
        "truncated_webp": lambda: {"image_base64": b64(webp[: len(webp) * 2 // 3])},
        "truncated_bmp": lambda: {"image_base64": b64(bmp[: len(bmp) * 2 // 3])},
        "corrupt_png": lambda: {"image_base64": b64(corrupt_png())},
        "decompression_bomb": lambda: {"image_base64": b64(png_bomb())},
        "webp_bomb": lambda: {"image_base64": b64(webp_bomb("VP8X"))},
        "bmp_bomb": lambda: {"image_base64": b64(bmp_bomb())},
        "unknown_detector": lambda: {"image_base64": image, "detector": "dog"},
        "scale_factor_too_small": lambda: {"image_base64": image, "scale_factor": 1.0},
        "min_neighbors_negative": lambda: {"image_base64": image, "min_neighbors": -1},
        "min_size_not_a_size": lambda: {"image_base64": image, "min_size": [10, 20, 30]},
        "max_size_below_min_size": lambda: {"image_base64": image, "min_size": 80, "max_size": [40, 40]},
        "max_side_too_small": lambda: {"image_base64": image, "max_side": 4},
        "option_of_wrong_type": lambda: {"image_base64": image, "min_neighbors": True},
    }
    assert events.keys() == BAD_INPUTS.keys()
    return lambda case: events[case]()


@pytest.fixture(scope="session")
def detector():
    """The package function/src/detector, imported in-process (function/src is on pytest's pythonpath).

    Imported here, not at the top: it loads OpenCV and the cascades, which most tests never need."""
    import detector

    return detector


# --- the handler in a child process ---------------------------------------------------------------

ISOLATED_WORKER = """
import json, sys
sys.path.insert(0, sys.argv[1])
import detector as handler
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    try:
        answer = {"result": handler.process_image(json.loads(line))}
    except Exception as exc:
        answer = {"raised": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(answer), flush=True)
"""


class IsolatedHandler:
    """process_image in a child process, one event at a time: a crash inside OpenCV (SIGSEGV,
    an abort from a corrupted heap) kills the child, not pytest, and is reported as a failure."""

    def __init__(self, timeout: float = 120, env: dict | None = None):
        self.timeout, self.env, self.proc = timeout, env or {}, None

    def _start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ISOLATED_WORKER, str(FUNCTION_DIR / "src")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"), **self.env},
        )
        assert self._read() == {"ready": True}

    def _read(self) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.proc.kill()
            code = self.proc.wait()
            self.proc = None
            died = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
            raise AssertionError(f"the handler's process {died}" if ready else f"no answer in {self.timeout}s")
        return json.loads(line)

    def __call__(self, event) -> dict:
        """The handler's answer; AssertionError if it raised, crashed or hung."""
        if self.proc is None:
            self._start()
        self.proc.stdin.write(json.dumps(event) + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        if "raised" in answer:
            raise AssertionError(f"the handler raised {answer['raised']}")
        return answer["result"]

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def isolated_detector():
    handler = IsolatedHandler()
    yield handler
    handler.close()


# --- the local AWS plane ---------------------------------------------------------------------------

@dataclass
class Bucket:
    client: object
    name: str
    endpoint: str

    def put(self, key: str, data: bytes) -> dict:
        self.client.put_object(Bucket=self.name, Key=key, Body=data)
        return {"bucket": self.name, "key": key}


@pytest.fixture(scope="session")
def detector_bucket():
    """A fresh bucket on the local AWS plane (AWS_ENDPOINT_URL), emptied and removed afterwards."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        pytest.fail("AWS_ENDPOINT_URL is not set: the S3 tests need the local AWS plane "
                    "(start the local stack, or export AWS_ENDPOINT_URL=http://127.0.0.1:<port>)")
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint,
                          region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                          aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
                          aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"))
    name = f"slipway-test-detector-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=name)
    yield Bucket(client, name, endpoint)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=obj["Key"])
    client.delete_bucket(Bucket=name)


# --- images and containers -------------------------------------------------------------------------

def build_detector_image(arch: str, tag: str, *, no_cache: bool = False, context: Path = FUNCTION_DIR,
                         dockerfile: str = "Dockerfile") -> float:
    """Build function/ for linux/<arch> on the local base with BuildKit; returns seconds taken.

    The deps stage always runs on the amd64 base (this host's platform), so
    arm64 wheels are resolved natively and only copied into the arm64 stage.
    """
    if not shutil.which(DOCKER_CLI):
        pytest.fail(f"{DOCKER_CLI} not found: a BuildKit-capable docker CLI is needed (SLIPWAY_DOCKER_CLI)")
    args = [
        DOCKER_CLI, "build", "--platform", f"linux/{arch}", "--tag", tag, "--label", f"{TEST_LABEL}=1",
        "--build-arg", f"BASE_IMAGE={LOCAL_BASE.format(arch=arch)}",
        "--build-arg", f"BUILDER_IMAGE={LOCAL_BASE.format(arch='amd64')}",
        "--build-arg", f"PYTHON_VERSION={LOCAL_PYTHON}",
        "--file", str(context / dockerfile), str(context),
    ]
    if no_cache:
        args.insert(2, "--no-cache")
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "DOCKER_BUILDKIT": "1"},
                          timeout=900, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise AssertionError(f"building {tag} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


class Container:
    """A running detector container, invoked through the Runtime Interface Emulator."""

    def __init__(self, image: str, arch: str, env: dict | None = None):
        import docker

        self.client = docker.from_env()
        self.container = self.client.containers.run(
            image, [HANDLER], detach=True,
            name=f"slipway-test-detector-{arch}-{uuid.uuid4().hex[:8]}", labels={TEST_LABEL: "1"},
            platform=f"linux/{arch}",
            # What Lambda imposes: read-only root, only /tmp writable, an unprivileged user.
            read_only=True, tmpfs={"/tmp": "size=64m"}, user="993:990",
            ports={"8080/tcp": ("127.0.0.1", None)}, extra_hosts={"host.docker.internal": "host-gateway"},
            environment=env or {},
        )
        self.container.reload()
        port = self.container.ports["8080/tcp"][0]["HostPort"]
        self.url = f"http://127.0.0.1:{port}{INVOKE_PATH}"

    def invoke(self, event, timeout: float = 120):
        import requests

        response = requests.post(self.url, json=event, timeout=timeout)
        response.raise_for_status()
        result = response.json()
        if isinstance(result, dict) and {"errorType", "errorMessage"} <= result.keys():
            # What Lambda reports as a FunctionError: the handler raised.
            raise AssertionError(f"the function raised {result['errorType']}: {result['errorMessage']}")
        return result

    def wait_ready(self, timeout: float = 90) -> float:
        """Seconds until the first answer: the cold start, init included."""
        import requests

        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            try:
                self.invoke({}, timeout=timeout)
                return time.perf_counter() - started
            except requests.ConnectionError:
                time.sleep(0.05)
        raise AssertionError(f"no answer in {timeout}s; logs:\n{self.logs()}")

    def logs(self) -> str:
        return self.container.logs().decode(errors="replace")[-3000:]

    def remove(self) -> None:
        self.container.remove(force=True)


def plane_env_for_containers() -> dict:
    """The local AWS plane as seen from inside a container, when one is configured."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return {}
    port = endpoint.rstrip("/").rsplit(":", 1)[1]
    return {
        "AWS_ENDPOINT_URL": f"http://host.docker.internal:{port}",
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        "AWS_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    }


@pytest.fixture(scope="session")
def detector_image():
    """linux/<arch> images of function/, each built once per session; call with the arch."""
    built = {}

    def get(arch: str) -> str:
        if arch not in built:
            # One tag per checkout: several worktrees share the engine, and each must test its own function/.
            checkout = hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:8]
            tag = f"slipway-test/detector:{arch}-{checkout}"
            build_detector_image(arch, tag)
            built[arch] = tag
        return built[arch]

    return get


@pytest.fixture(scope="session", params=["arm64", "amd64"])
def detector_container(request, detector_image):
    """One running container per architecture, shared by the tests of the session."""
    container = Container(detector_image(request.param), request.param, plane_env_for_containers())
    try:
        container.wait_ready()
        container.arch = request.param
        yield container
    finally:
        container.remove()
