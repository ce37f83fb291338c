"""Remove what the handler never loads from the dependency tree before it is copied into the image.

Runs in the deps stage of the Dockerfile, on the build platform, with nothing
but Python: Lambda's base images do not promise `find` or other tools.
"""

import shutil
import sys
from pathlib import Path

# Keep in step with HAAR_CASCADES in src/detector/detection.py: a missing one fails the cold start loudly.
CASCADES = {
    "haarcascade_frontalface_default.xml", "haarcascade_eye.xml", "haarcascade_fullbody.xml",
    "haarcascade_upperbody.xml", "haarcascade_frontalcatface.xml",
}
# The handler talks to S3 only; STS stays for role credentials outside Lambda.
BOTOCORE_SERVICES = {"s3", "sts"}
# Build helpers and headers: numpy's f2py, distutils, C headers and static libraries.
PATHS = [
    "bin", "numpy/f2py", "numpy/distutils", "numpy/_pyinstaller", "numpy/_core/include", "numpy/_core/lib",
]


def prune(root: Path) -> int:
    doomed = [root / p for p in PATHS]
    doomed += [p for p in root.rglob("tests") if p.is_dir()]
    doomed += list(root.rglob("*.pyi"))
    doomed += [p for p in (root / "cv2" / "data").glob("haarcascade_*.xml") if p.name not in CASCADES]
    models = root / "botocore" / "data"  # only when a requirement pulls botocore in
    if models.is_dir():
        doomed += [p for p in models.iterdir() if p.is_dir() and p.name not in BOTOCORE_SERVICES]
    freed = 0
    for path in doomed:
        if path.is_dir():
            freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path)
        elif path.exists():
            freed += path.stat().st_size
            path.unlink()
    return freed


if __name__ == "__main__":
    print(f"pruned {prune(Path(sys.argv[1])) / 1e6:.1f} MB")
