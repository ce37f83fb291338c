"""The test console: check an image, invoke a deployed detector with it, keep the answer.

The invoke is deploy.lambdas' (RequestResponse, LogType=Tail, through the one
boto3 seam in deploy.aws), the same call on the local plane and on AWS. An
event over Lambda's synchronous payload limit goes through the console bucket
as `{"bucket", "key"}` and the object is deleted afterwards; the local plane
does not refuse an oversized payload (it hands the function a truncated
event), so the limit is checked here. The pipeline's verify step calls
`invoke_image` for golden cases too, so both see the same answers.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import logging
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, SkipFile
from django.db import transaction
from django.utils import timezone

from deploy import aws, lambdas
from deploy.errors import DeployError
from portal.models import ConsoleImage, ConsoleRun, Deployment, Function

log = logging.getLogger(__name__)

# What function/src/handler.py offers (the web side never imports the handler: it loads OpenCV).
DETECTORS = ("face", "eye", "fullbody", "upperbody", "cat_face", "people")
DEFAULTS = {  # the handler's defaults, shown in the form; an empty field sends nothing
    "haar": {"scale_factor": 1.1, "min_neighbors": 5, "min_size": "30x30", "max_size": "", "max_side": ""},
    "people": {"scale_factor": 1.05, "min_neighbors": "", "min_size": "30x30", "max_size": "", "max_side": ""},
}
FORMATS = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp", "BMP": "bmp"}
# Samples from the scikit-image wheel's bundled data (its other samples download from the internet).
SAMPLES = {
    "astronaut": {"file": "astronaut.png", "what": "a face", "options": {"detector": "face"}},
    "camera": {"file": "camera.png", "what": "a person", "options": {"detector": "people"}},
    "chelsea": {"file": "chelsea.png", "what": "a cat", "options": {"detector": "cat_face", "min_neighbors": 2}},
}


class ConsoleError(Exception):
    """A request the console refuses or cannot complete; nothing was stored. `status`: the page's HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


# --- Input ---------------------------------------------------------------------------------


class CappedUpload(FileUploadHandler):
    """Keep an upload in memory up to the cap, never on disk; past the cap the file
    is skipped (the rest of the body is read and dropped) and `too_large` is set."""

    def __init__(self, request=None, cap: int | None = None):
        super().__init__(request)
        self.cap = cap or settings.SLIPWAY_CONSOLE_MAX_UPLOAD
        self.too_large = False
        self.buffer = io.BytesIO()

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.buffer = io.BytesIO()

    def receive_data_chunk(self, raw_data, start):
        if start + len(raw_data) > self.cap:
            self.too_large = True
            raise SkipFile()
        self.buffer.write(raw_data)
        return None

    def file_complete(self, file_size):
        from django.core.files.uploadedfile import InMemoryUploadedFile

        self.buffer.seek(0)
        return InMemoryUploadedFile(self.buffer, self.field_name, self.file_name, self.content_type, file_size,
                                    self.charset, self.content_type_extra)


@dataclass
class CheckedImage:
    data: bytes
    format: str  # jpeg, png, webp, bmp
    width: int
    height: int
    name: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def pixel_cap(function: Function) -> int:
    """The detector's pixel cap: the setting, or the function's own DETECTOR_MAX_PIXELS when lower."""
    cap = settings.SLIPWAY_CONSOLE_MAX_PIXELS
    own = str((function.environment or {}).get("DETECTOR_MAX_PIXELS", "")).strip()
    return min(cap, int(own)) if own.isdigit() and int(own) > 0 else cap


def check_image(data: bytes, name: str, *, max_pixels: int, max_bytes: int | None = None) -> CheckedImage:
    """Format and size from the header, the pixel cap before any pixel is decoded,
    then a complete file (a truncated one is refused here, not half-detected)."""
    from PIL import Image, UnidentifiedImageError

    max_bytes = max_bytes or settings.SLIPWAY_CONSOLE_MAX_UPLOAD
    if not data:
        raise ConsoleError("empty-image", f"{name or 'the file'} is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ConsoleError("upload-too-large", f"{name or 'the file'} is {len(data):,} bytes, over the "
                           f"{max_bytes:,} byte upload cap")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            if isinstance(exc, UnidentifiedImageError):
                raise ConsoleError("not-an-image", f"{name or 'the file'} is not an image "
                                   "(JPEG, PNG, WebP or BMP)") from None
            raise ConsoleError("image-too-large", f"{name or 'the image'} is over the {max_pixels:,} pixel "
                               "limit") from None
        except Exception as exc:  # a header Pillow cannot read at all
            raise ConsoleError("corrupt-image", f"{name or 'the file'} cannot be read as an image: {exc}") from None
        fmt = FORMATS.get(image.format or "")
        if fmt is None:
            raise ConsoleError("unsupported-format", f"{name or 'the file'} is a {image.format} image; "
                               "send JPEG, PNG, WebP or BMP")
        width, height = image.size
        if width * height > max_pixels:
            raise ConsoleError("image-too-large", f"{name or 'the image'} is {width}x{height} "
                               f"({width * height:,} pixels), over the {max_pixels:,} pixel limit")
        try:
            _check_complete(image, data, fmt)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
            raise ConsoleError("truncated-image", f"{name or 'the image'} is truncated or damaged "
                               f"({fmt.upper()}: {exc})") from None
    return CheckedImage(data, fmt, width, height, name)


def _check_complete(image, data: bytes, fmt: str) -> None:
    if fmt == "png":
        image.verify()  # walks every chunk with its CRC up to IEND: no pixel is decompressed
        return
    if fmt == "jpeg":
        image.draft("L", (max(1, image.width // 8), max(1, image.height // 8)))  # decoded at 1/8 scale: cheap
    image.load()  # raises on a file cut short (LOAD_TRUNCATED_IMAGES stays off)


def sample(name: str) -> CheckedImage:
    """A sample image from the scikit-image wheel, found without importing skimage."""
    found = SAMPLES.get(name)
    spec = importlib.util.find_spec("skimage")
    if found is None or spec is None or not spec.submodule_search_locations:
        raise ConsoleError("no-such-sample", f"no sample image {name!r}")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / found["file"]
    return check_image(path.read_bytes(), found["file"], max_pixels=settings.SLIPWAY_CONSOLE_MAX_PIXELS)


def store_image(function: Function, checked: CheckedImage) -> ConsoleImage:
    """The function's stored copy of this content, made once; marked used now."""
    image, created = ConsoleImage.objects.get_or_create(
        function=function, sha256=checked.sha256,
        defaults={"data": checked.data, "format": checked.format, "width": checked.width, "height": checked.height,
                  "size_bytes": len(checked.data), "name": checked.name[:200]})
    if not created:
        ConsoleImage.objects.filter(pk=image.pk).update(last_used_at=timezone.now())
    return image


# --- Targets -------------------------------------------------------------------------------


def published_versions(function: Function) -> dict[str, str]:
    """Version -> the status of the deployment that published it, newest first. A version
    whose deploy failed its verify step is there too: it is the one worth looking at."""
    found: dict[str, str] = {}
    rows = (Deployment.objects.filter(function=function, version_gone=False).exclude(version="")
            .order_by("-pk").values_list("version", "status"))
    for version, status in rows:
        if found.get(version) != Deployment.Status.SUCCEEDED:
            found[version] = status
    return dict(sorted(found.items(), key=lambda item: int(item[0]) if item[0].isdigit() else 0, reverse=True))


def targets(function: Function) -> list[tuple[str, str]]:
    """(value, label) choices: the alias first, then each published version. None until
    something was published."""
    versions = published_versions(function)
    if not versions:
        return []
    labels = [(v, f"version {v}" + ("" if status == Deployment.Status.SUCCEEDED else f" (its deploy {status})"))
              for v, status in versions.items()]
    return [(function.alias, f"{function.alias} (what is live)"), *labels]


# --- Invoke --------------------------------------------------------------------------------


@dataclass
class Answer:
    """One invoke's outcome, before it is stored."""

    target: str
    outcome: str
    result: object
    request: dict
    via_s3: bool
    round_trip_ms: float
    executed_version: str = ""
    error_code: str = ""
    error_message: str = ""
    log_tail: str = ""
    report: lambdas.Report = field(default_factory=lambdas.Report)

    @property
    def boxes(self) -> list[dict]:
        return list(self.result.get("boxes") or []) if self.outcome == ConsoleRun.Outcome.OK else []


def ensure_bucket() -> str:
    """The console bucket; on the local plane it is created when missing. On AWS it must exist."""
    name = settings.SLIPWAY_CONSOLE_BUCKET
    if not name:
        raise ConsoleError("no-console-bucket", "this image needs the console bucket (its event is over Lambda's "
                           "6 MB payload limit) and SLIPWAY_CONSOLE_BUCKET is not set", 502)
    s3 = aws.client("s3")
    if settings.LOCAL_MODE and aws.call("looking for the console bucket", s3.head_bucket, prefix="s3",
                                       missing=("404", "NoSuchBucket", "NotFound"), Bucket=name) is None:
        aws.call("creating the console bucket", s3.create_bucket, prefix="s3", Bucket=name)
    return name


def _timeout(function: Function) -> float:
    return float(function.timeout_s) + 10  # the function's own limit answers first


def invoke_image(function: Function, target: str, data: bytes, options: dict, *, attempts: int | None = 1) -> Answer:
    """Send `data` with `options` to `target` (the alias or a version) and classify the answer.
    A ConsoleError when no answer came (plane down, no such version); the answer otherwise,
    a function error or a structured error included. `attempts`: 1 for a person, who may
    press again; None (deploy.aws's bound, transient errors retried) for the verify step."""
    encoded = base64.b64encode(data).decode()
    payload = json.dumps({"image_base64": encoded, **options}).encode()
    request = {"image_base64": f"<{len(encoded):,} characters of base64: the image's {len(data):,} bytes>",
               **options}
    key = ""
    if len(payload) > settings.SLIPWAY_CONSOLE_PAYLOAD_LIMIT:
        bucket = ensure_bucket()
        key = f"console/{function.name}/{uuid.uuid4().hex}"
        try:
            aws.call("uploading the image to the console bucket", aws.client("s3").put_object, prefix="s3",
                     Bucket=bucket, Key=key, Body=data)
        except DeployError as exc:
            raise _refused(function, target, exc) from None
        request = {"bucket": bucket, "key": key, **options}
        payload = json.dumps(request).encode()
        request = {**request, "_note": f"the inline event would be {len(encoded) + 20:,} bytes, over Lambda's "
                                       f"{settings.SLIPWAY_CONSOLE_PAYLOAD_LIMIT:,} byte limit: sent through S3"}
    started = time.perf_counter()
    try:
        invocation = lambdas.invoke(function.lambda_name, target, payload, tail=True, timeout=_timeout(function),
                                    attempts=attempts or aws.MAX_ATTEMPTS)
    except DeployError as exc:
        raise _refused(function, target, exc) from None
    finally:
        round_trip = (time.perf_counter() - started) * 1000
        if key:
            _delete(settings.SLIPWAY_CONSOLE_BUCKET, key)
    return classify(function, target, invocation, request, bool(key), round_trip)


def _delete(bucket: str, key: str) -> None:
    try:
        aws.call("deleting the image from the console bucket", aws.client("s3").delete_object, prefix="s3",
                 Bucket=bucket, Key=key)
    except DeployError as exc:  # the answer still counts; the object is named in the log for cleanup
        log.warning("console: s3://%s/%s was not deleted: %s", bucket, key, exc)


def _refused(function: Function, target: str, exc: DeployError) -> ConsoleError:
    where = f"{function.lambda_name}:{target}"
    if exc.code in ("aws-unreachable", "aws-credentials"):
        plane = settings.AWS_ENDPOINT_URL or "AWS"
        return ConsoleError("aws-unreachable", f"could not reach {plane} to invoke {where}: {exc.message}", 502)
    if exc.code.endswith("ResourceNotFoundException"):
        return ConsoleError("no-such-target", f"{where} does not exist: {exc.message}", 404)
    return ConsoleError(exc.code, f"invoking {where} failed: {exc.message}", 502)


def classify(function: Function, target: str, invocation: lambdas.Invocation, request: dict, via_s3: bool,
             round_trip_ms: float) -> Answer:
    result = invocation.result
    answer = Answer(target=target, outcome=ConsoleRun.Outcome.OK, result=result, request=request, via_s3=via_s3,
                    round_trip_ms=round_trip_ms, executed_version=invocation.executed_version,
                    log_tail=invocation.log_tail[-4096:], report=lambdas.parse_report(invocation.log_tail))
    body = result if isinstance(result, dict) else {}
    if invocation.error:
        answer.error_code = str(body.get("errorType") or invocation.error)
        answer.error_message = str(body.get("errorMessage") or result or "")[:4000]
        timed_out = answer.error_code == "Sandbox.Timedout" or "Task timed out" in answer.error_message
        if timed_out:
            answer.outcome = ConsoleRun.Outcome.TIMEOUT
            answer.error_message = (f"the function ran past its {function.timeout_s} s timeout "
                                    f"({answer.error_message})")
        else:
            answer.outcome = ConsoleRun.Outcome.FUNCTION_ERROR
    elif isinstance(body.get("error"), dict):
        answer.outcome = ConsoleRun.Outcome.ERROR_RESULT
        answer.error_code = str(body["error"].get("code", ""))
        answer.error_message = str(body["error"].get("message", ""))[:4000]
    elif not isinstance(body.get("boxes"), list):
        answer.outcome = ConsoleRun.Outcome.UNEXPECTED
        answer.error_code = "not-a-detector-answer"
        answer.error_message = "the answer has no boxes list: is this function the detector?"
    return answer


def save_run(function: Function, user, image: ConsoleImage, answer: Answer, options: dict,
             compared_with: ConsoleRun | None = None) -> ConsoleRun:
    return ConsoleRun.objects.create(
        function=function, user=user, image=image, image_name=image.name, image_width=image.width,
        image_height=image.height, target=answer.target, executed_version=answer.executed_version,
        options=options, request=answer.request, via_s3=answer.via_s3, outcome=answer.outcome,
        result=answer.result, error_code=answer.error_code, error_message=answer.error_message,
        box_count=len(answer.boxes) if answer.outcome == ConsoleRun.Outcome.OK else None,
        round_trip_ms=answer.round_trip_ms, init_ms=answer.report.init_ms, duration_ms=answer.report.duration_ms,
        billed_ms=answer.report.billed_ms, memory_used_mb=answer.report.memory_used_mb, log_tail=answer.log_tail,
        compared_with=compared_with)


def run(function: Function, user, checked: CheckedImage, options: dict, targets_: list[str]) -> ConsoleRun:
    """Invoke each target (one, or two to compare) with the image; the image and the runs
    are stored together once every answer is in, or nothing is."""
    answers = [invoke_image(function, target, checked.data, options) for target in targets_]
    with transaction.atomic():
        image = store_image(function, checked)
        first = save_run(function, user, image, answers[0], options)
        for answer in answers[1:]:
            save_run(function, user, image, answer, options, compared_with=first)
    return first


def checked_from_store(image: ConsoleImage) -> CheckedImage:
    return CheckedImage(bytes(image.data), image.format, image.width, image.height, image.name)
