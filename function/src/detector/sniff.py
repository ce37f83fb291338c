"""The image's format and size, read from its header before a byte of pixel data is decoded,
and whether the file is complete; then the decode itself, capped at MAX_PIXELS.

JPEG, PNG, WebP and BMP are accepted; GIF and TIFF are named and refused.
"""

from __future__ import annotations

import os
import struct

import cv2
import numpy as np

from detector.errors import BadInput

# Decoded BGR costs 3 bytes a pixel: 40 MP is ~120 MB before the grayscale
# copy, which still fits the smallest memory size the function is deployed with.
MAX_PIXELS = int(os.environ.get("DETECTOR_MAX_PIXELS", 40_000_000))

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# SOF markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
OTHER_IMAGE_MAGIC = {b"GIF87a": "gif", b"GIF89a": "gif", b"II*\x00": "tiff", b"MM\x00*": "tiff"}
SUPPORTED = "JPEG, PNG, WebP or BMP"
# BMP compressions whose pixel array has a size known from the header: BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS.
BMP_UNCOMPRESSED = frozenset({0, 3, 6})


def decode(data: bytes) -> tuple[np.ndarray, str]:
    if not data:
        raise BadInput("empty_image", "the image is empty (0 bytes)")
    fmt, width, height = inspect(data)
    if width * height > MAX_PIXELS:  # from the header, before a byte of pixel data is decoded
        raise BadInput("image_too_large", f"{width}x{height} is over the {MAX_PIXELS} pixel limit")
    # IMREAD_COLOR applies the EXIF orientation, as cv2.imread does for the same file.
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise BadInput("corrupt_image", f"OpenCV cannot decode this {fmt.upper()} file")
    return image, fmt


def inspect(data: bytes) -> tuple[str, int, int]:
    """Format and size from the header, and whether the file is complete."""
    if data.startswith(b"\xff\xd8\xff"):
        return ("jpeg", *_jpeg_size(data))
    if data.startswith(PNG_SIGNATURE):
        return ("png", *_png_size(data))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ("webp", *_webp_size(data))
    if data.startswith(b"BM"):
        return ("bmp", *_bmp_size(data))
    for magic, name in OTHER_IMAGE_MAGIC.items():
        if data.startswith(magic):
            raise BadInput("unsupported_format", f"{name.upper()} images are not supported; send {SUPPORTED}")
    raise BadInput("not_an_image", f"the file is not a {SUPPORTED} image")


def _png_size(data: bytes) -> tuple[int, int]:
    # Walk the chunks to IEND: libpng would otherwise fail late, or return a partly black image.
    pos, size, end = len(PNG_SIGNATURE), None, len(data)
    while True:
        if pos + 8 > end:
            raise BadInput("truncated_image", "the PNG file is truncated")
        length, kind = struct.unpack_from(">I4s", data, pos)
        if pos + 12 + length > end:
            raise BadInput("truncated_image", "the PNG file is truncated")
        if size is None:
            if kind != b"IHDR" or length < 13:
                raise BadInput("corrupt_image", "the PNG file has no IHDR header")
            size = struct.unpack_from(">II", data, pos + 8)
        if kind == b"IEND":
            break
        pos += 12 + length
    if not all(size):
        raise BadInput("corrupt_image", "the PNG header says the image is empty")
    return size


def _jpeg_size(data: bytes) -> tuple[int, int]:
    # Walk the segments to the first scan; the frame header (SOFn) before it holds the size.
    pos, size, end = 2, None, len(data)
    while True:
        if pos + 4 > end:
            raise BadInput("truncated_image", "the JPEG file is truncated")
        if data[pos] != 0xFF:
            raise BadInput("corrupt_image", "the JPEG file has a broken segment structure")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if marker == 0xD9:
            raise BadInput("corrupt_image", "the JPEG file ends before any image data")
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            raise BadInput("corrupt_image", "the JPEG file has a broken segment structure")
        if pos + 2 + length > end:
            raise BadInput("truncated_image", "the JPEG file is truncated")
        if marker in JPEG_SOF and length >= 7:
            height, width = struct.unpack_from(">HH", data, pos + 5)
            size = (width, height)
        if marker == 0xDA:
            break
        pos += 2 + length
    if not size or not all(size):
        raise BadInput("corrupt_image", "the JPEG file has no usable frame header")
    # libjpeg pads a cut-off scan with grey and only warns. Entropy-coded data
    # never contains FF D9, so a complete file has one after the first scan.
    if data.rfind(b"\xff\xd9", pos) == -1:
        raise BadInput("truncated_image", "the JPEG file is truncated (no end-of-image marker)")
    return size


def _webp_size(data: bytes) -> tuple[int, int]:
    """The canvas of an extended WebP (VP8X), else the frame size of its lossy (VP8) or lossless (VP8L) bitstream.

    libwebp refuses a still VP8X whose bitstream differs from its canvas, and keeps animation frames inside it.
    """
    if len(data) < 30 or struct.unpack_from("<I", data, 4)[0] + 8 > len(data):
        raise BadInput("truncated_image", "the WebP file is truncated")
    kind = data[12:16]
    if kind == b"VP8X":
        width, height = (int.from_bytes(data[at:at + 3], "little") + 1 for at in (24, 27))
    elif kind == b"VP8L" and data[20] == 0x2F:
        bits = struct.unpack_from("<I", data, 21)[0]
        width, height = (bits & 0x3FFF) + 1, (bits >> 14 & 0x3FFF) + 1
    elif kind == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = (v & 0x3FFF for v in struct.unpack_from("<HH", data, 26))
    else:
        raise BadInput("corrupt_image", "the WebP file has no VP8, VP8L or VP8X header")
    if not width or not height:
        raise BadInput("corrupt_image", "the WebP header says the image is empty")
    return width, height


def _bmp_size(data: bytes) -> tuple[int, int]:
    if len(data) < 26:
        raise BadInput("truncated_image", "the BMP file is truncated")
    offset, header_size = struct.unpack_from("<II", data, 10)
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sizes
        (width, height, bits), compression = struct.unpack_from("<HHxxH", data, 18), 0
    elif header_size >= 40 and len(data) >= 34:  # BITMAPINFOHEADER and its successors
        width, height, bits, compression = struct.unpack_from("<iixxHI", data, 18)
        height = abs(height)  # negative: rows stored top-down
    else:
        raise BadInput("corrupt_image", "the BMP file has no usable header")
    if width <= 0 or height == 0:
        raise BadInput("corrupt_image", "the BMP header says the image is empty")
    if compression in BMP_UNCOMPRESSED and width * height <= MAX_PIXELS:
        row = (width * bits + 31) // 32 * 4
        if offset + row * height > len(data):
            raise BadInput("truncated_image", "the BMP file is truncated")
    return width, height
