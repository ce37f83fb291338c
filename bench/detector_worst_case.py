"""Detector worst case: time and peak memory per detector at the pixel cap, vs an ordinary photo.

Builds (with cache) the detector image of function/ for one architecture and
runs every case in its own container, limited the way the function is
deployed: `--cpus=1 --memory=1024m` (no swap), read-only, unprivileged. Each
container imports the handler, then hands it the file's bytes as the S3 and
Function URL paths do after fetching (`_result_or_error(options, fetch)`),
with default options apart from the detector, and prints the handler's own
time and the process's peak RSS.

- baseline: an ordinary 640x480 JPEG photo, per detector, measured in the same run;
- at the cap: for each detector, several contents at 6400x6240 (39.9 MP, the
  cap is 40 MP) as PNG (lossless WebP when the PNG is over 20 MB): noise, blurred noise, a tiled eye and a tiled face
  (thousands of accepted windows to group), and an 8x8 pattern hill-climbed
  until HOG accepts every window of its first level. The search copy
  (1600x1560) is then exactly that content: the image is the content scaled
  up 4x by repeating pixels, and INTER_AREA scales it back down exactly;
- decoding at the cap: noise at 6400x6240 in each format, under 20 MB (the
  byte cap): JPEG, PNG, lossless WebP, 1-bit BMP (24-bit would be 120 MB).

    PYTHONPATH=. .venv/bin/python bench/detector_worst_case.py            # amd64, every case
    PYTHONPATH=. .venv/bin/python bench/detector_worst_case.py --arch arm64 --only eye:tiled_eye

Run it alone on the shared engine: it builds an image, then runs one container at a time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path

import cv2
import docker
import numpy as np

from tests.detector_fixtures import TEST_LABEL, build_detector_image, photo, sample_path

DETECTORS = ("face", "eye", "fullbody", "upperbody", "cat_face", "people")
CAP_SIZE, SCALE = (6400, 6240), 4  # 39.94 MP; the search copy is 1600x1560
MAX_BYTES = 20 * 1024 * 1024
# An 8x8 grey pattern, hill-climbed (random pixel changes kept when the SVM score rose) until
# OpenCV's default people detector accepts every window of a plain tiling of it.
HOG_PATTERN = [
    [226, 115, 222, 176, 50, 107, 78, 247], [72, 157, 90, 123, 213, 180, 212, 37],
    [134, 128, 120, 106, 195, 119, 169, 241], [118, 112, 193, 163, 162, 168, 143, 140],
    [237, 8, 15, 195, 191, 225, 97, 153], [96, 20, 65, 50, 167, 220, 11, 199],
    [132, 127, 148, 0, 233, 156, 101, 229], [122, 100, 86, 241, 166, 163, 146, 91],
]
RUNNER = """
import json, resource, sys, time
import handler
imported_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
case = json.load(open(sys.argv[1]))
data = open(case["file"], "rb").read()
started = time.perf_counter()
result = handler._result_or_error(case["options"], lambda: data)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "imported_mb": imported_kb / 1024, "boxes": len(result.get("boxes", [])),
                  "error": result.get("error"), "timings_ms": result.get("timings_ms")}))
"""


def tiled(crop: np.ndarray, side: int, size: tuple[int, int]) -> np.ndarray:
    tile = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    width, height = size
    return np.tile(tile, (height // side + 1, width // side + 1, 1))[:height, :width].copy()


def contents(size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Candidate worst contents, as big as the search copy (width, height)."""
    width, height = size
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    blurred = cv2.GaussianBlur(noise.astype(np.float32), (0, 0), 3)
    astronaut = cv2.imread(str(sample_path("astronaut.png")))
    pattern = np.array(HOG_PATTERN, np.uint8)[..., None].repeat(3, axis=2)
    return {
        "noise": noise,
        "blurred_noise": cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8),
        "tiled_eye": tiled(astronaut[81:120, 183:222], 80, size),
        "tiled_face": tiled(astronaut[47:180, 158:291], 64, size),
        "hog_pattern": np.tile(pattern, (height // 8 + 1, width // 8 + 1, 1))[:height, :width].copy(),
    }


def at_cap(content: np.ndarray) -> np.ndarray:
    """The content scaled up SCALE times by repeating pixels: INTER_AREA scales it back exactly."""
    return np.repeat(np.repeat(content, SCALE, axis=0), SCALE, axis=1)


def write(folder: Path, name: str, data: bytes) -> str:
    assert len(data) <= MAX_BYTES, f"{name} is {len(data)} bytes, over the byte cap"
    (folder / name).write_bytes(data)
    return f"/bench/{name}"


def encoded(image: np.ndarray, ext: str, params=()) -> bytes:
    ok, data = cv2.imencode(ext, image, list(params))
    assert ok
    return data.tobytes()


def lossless_under_cap(folder: Path, name: str, image: np.ndarray) -> str:
    """PNG, or lossless WebP when the PNG is over the byte cap: the pixels must stay exact."""
    data = encoded(image, ".png", [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if len(data) <= MAX_BYTES:
        return write(folder, f"{name}.png", data)
    return write(folder, f"{name}.webp", encoded(image, ".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]))


def one_bit_bmp(image: np.ndarray) -> bytes:
    from io import BytesIO

    from PIL import Image

    out = BytesIO()
    Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)).convert("1").save(out, format="BMP")
    return out.getvalue()


def cases(folder: Path, only: set[str] | None) -> list[dict]:
    """Every case: name, detector, file inside the container, kind (baseline / cap / decode)."""
    found = []
    photo_640 = encoded(photo("astronaut.png", 640, 480), ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90])
    baseline = write(folder, "baseline.jpg", photo_640)
    candidates = contents((CAP_SIZE[0] // SCALE, CAP_SIZE[1] // SCALE))
    files = {}
    for detector in DETECTORS:
        found.append({"kind": "baseline", "detector": detector, "content": "photo 640x480", "file": baseline})
        for content, image in candidates.items():
            if only and f"{detector}:{content}" not in only:
                continue
            if content not in files:
                files[content] = lossless_under_cap(folder, content, at_cap(image))
            name = f"{content} ({Path(files[content]).suffix[1:]})"
            found.append({"kind": "cap", "detector": detector, "content": name, "file": files[content]})
    noise = at_cap(candidates["noise"])
    formats = {
        "jpeg": lambda: encoded(noise, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 75]),
        "png": lambda: encoded(noise, ".png", [cv2.IMWRITE_PNG_COMPRESSION, 9]),
        "webp": lambda: encoded(noise, ".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
        "bmp": lambda: one_bit_bmp(noise),
    }
    for fmt, encode in formats.items():
        if only and f"decode:{fmt}" not in only:
            continue
        data = encode()
        found.append({"kind": "decode", "detector": "face", "content": f"noise {fmt} {len(data) / 1e6:.1f} MB",
                      "file": write(folder, f"noise.{fmt}", data)})
    return found


def run(client, tag: str, arch: str, folder: Path, case: dict) -> dict:
    (folder / "case.json").write_text(json.dumps({"file": case["file"], "options": {"detector": case["detector"]}}))
    name = f"slipway-bench-detector-{uuid.uuid4().hex[:8]}"
    container = client.containers.run(
        tag, ["-c", RUNNER, "/bench/case.json"], entrypoint=["/usr/bin/python3"], name=name,
        platform=f"linux/{arch}", labels={TEST_LABEL: "1", "slipway.bench": "1"}, read_only=True,
        tmpfs={"/tmp": ""}, user="993:990", working_dir="/var/task", detach=True,
        nano_cpus=1_000_000_000, mem_limit="1024m", memswap_limit="1024m",
        volumes={str(folder): {"bind": "/bench", "mode": "ro"}},
    )
    try:
        status = container.wait(timeout=1800)
        output = container.logs(stdout=True, stderr=False).decode().strip().splitlines()
        if status["StatusCode"] != 0 or not output:
            container.reload()
            oom = " (OOM killed)" if container.attrs["State"]["OOMKilled"] else ""
            return {"failed": f"exit {status['StatusCode']}{oom}: {container.logs().decode(errors='replace')[-500:]}"}
        return json.loads(output[-1])
    finally:
        container.remove(force=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="amd64", choices=["amd64", "arm64"])
    parser.add_argument("--only", help="comma-separated detector:content or decode:format; baselines always run")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    client = docker.from_env(timeout=1900)
    tag = f"slipway-bench/detector:worst-{args.arch}"
    print(f"building {tag} ...", flush=True)
    build_detector_image(args.arch, tag)
    rows = []
    with tempfile.TemporaryDirectory(prefix="slipway-bench-") as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)
        for case in cases(folder, only):
            (folder / Path(case["file"]).name).chmod(0o644)
            result = run(client, tag, args.arch, folder, case)
            rows.append((case, result))
            print(json.dumps({**case, **result}), flush=True)
    report(rows, args.arch)
    return 0


def report(rows: list[tuple[dict, dict]], arch: str) -> None:
    baseline = {case["detector"]: result for case, result in rows if case["kind"] == "baseline"}
    print(f"\n{arch}, --cpus=1 --memory=1024m; handler time (decode + bounded copy + search) and peak RSS")
    print(f"{'detector':<10} {'content':<34} {'seconds':>8} {'decode s':>9} {'peak MB':>8} {'boxes':>6} "
          f"{'x baseline':>10}")
    worst = {}
    for case, result in rows:
        if "failed" in result:
            print(f"{case['detector']:<10} {case['content']:<34} FAILED {result['failed']}")
            continue
        base = baseline.get(case["detector"])
        ratio = f"{result['seconds'] / base['seconds']:.1f}x" if base and case["kind"] != "baseline" else ""
        decode = (result.get("timings_ms") or {}).get("decode", 0) / 1000
        error = f"  error {result['error']['code']}" if result.get("error") else ""
        print(f"{case['detector']:<10} {case['content']:<34} {result['seconds']:8.2f} {decode:9.2f} "
              f"{result['peak_mb']:8.0f} {result['boxes']:6d} {ratio:>10}{error}")
        so_far = worst.get(case["detector"], ({}, {"seconds": 0}))[1]["seconds"]
        if case["kind"] == "cap" and result["seconds"] > so_far:
            worst[case["detector"]] = (case, result)
    print("\nworst content at the cap, per detector:")
    for detector, (case, result) in worst.items():
        base = baseline[detector]
        ratio = result["seconds"] / base["seconds"]
        print(f"  {detector:<10} {case['content']:<14} {result['seconds']:6.2f} s ({ratio:.1f}x the 640x480 photo's "
              f"{base['seconds']:.2f} s), peak {result['peak_mb']:.0f} MB "
              f"(after imports {result['imported_mb']:.0f} MB)")


if __name__ == "__main__":
    sys.exit(main())
