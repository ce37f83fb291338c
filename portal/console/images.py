"""An image as the console accepts it: capped upload, format and pixel checks, the
bundled samples, the stored copy a run or a golden case refers to.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, SkipFile
from django.utils import timezone

from deploy.errors import SlipwayError
from portal.console.models import ConsoleImage
from portal.functions import Function

log = logging.getLogger(__name__)

FORMATS = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp", "BMP": "bmp"}
# Samples from the scikit-image wheel's bundled data (its other samples download from the internet).
SAMPLES = {
    "astronaut": {"file": "astronaut.png", "what": "a face", "options": {"detector": "face"}},
    "camera": {"file": "camera.png", "what": "a person", "options": {"detector": "people"}},
    "chelsea": {"file": "chelsea.png", "what": "a cat", "options": {"detector": "cat_face", "min_neighbors": 2}},
}



class ConsoleError(SlipwayError):
    """A request the console refuses or cannot complete; nothing was stored. `status`: the page's HTTP status.
    Its own kind: the pipeline's golden step catches it to record `golden-<code>`."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(code, message, status=status)


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
    own = str((function.first_environment.variables or {}).get("DETECTOR_MAX_PIXELS", "")).strip()
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


def checked_from_store(image: ConsoleImage) -> CheckedImage:
    return CheckedImage(bytes(image.data), image.format, image.width, image.height, image.name)
