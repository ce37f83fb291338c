"""Where the image comes from: inline base64 (a data: URL too) or an S3 object, each capped at MAX_BYTES."""

from __future__ import annotations

import base64
import binascii
import os

import boto3
import botocore.exceptions

from detector.errors import BadInput

# Synchronous invokes cap the payload at 6 MB; S3 objects are capped here so a
# wrong key cannot make the function stream a video into memory.
MAX_BYTES = int(os.environ.get("DETECTOR_MAX_BYTES", 20 * 1024 * 1024))

S3 = boto3.client("s3")


def fetch(event: dict) -> bytes:
    inline = "image_base64" in event
    from_s3 = "bucket" in event or "key" in event
    if inline and from_s3:
        raise BadInput("conflicting_input", "send either image_base64 or bucket and key, not both")
    if inline:
        return b64decode(event["image_base64"], "image_base64")
    if from_s3:
        return _fetch_s3(event)
    raise BadInput("missing_input", "send image_base64, or bucket and key of an S3 object")


def b64decode(text, field: str) -> bytes:
    if not isinstance(text, str):
        raise BadInput("invalid_input", f"{field} must be a base64 string")
    if text.startswith("data:") and "," in text:  # a data: URL as browsers produce it
        text = text.split(",", 1)[1]
    if len(text) > (MAX_BYTES // 3 + 1) * 4 + 1024:  # checked before decoding, whitespace allowed for
        raise BadInput("payload_too_large", f"the image is over the {MAX_BYTES} byte limit")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadInput("invalid_base64", f"{field} is not valid base64 ({exc})") from None
    if len(data) > MAX_BYTES:
        raise BadInput("payload_too_large", f"the image is over the {MAX_BYTES} byte limit")
    return data


def _fetch_s3(event: dict) -> bytes:
    bucket, key = event.get("bucket"), event.get("key")
    if not bucket or not key:
        raise BadInput("missing_input", "an S3 image needs both bucket and key")
    if not isinstance(bucket, str) or not isinstance(key, str):
        raise BadInput("invalid_input", "bucket and key must be strings")
    where = f"s3://{bucket}/{key}"
    try:
        obj = S3.get_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ParamValidationError as exc:
        raise BadInput("invalid_input", f"bad S3 location {where}: {exc}") from None
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "NoSuchBucket", "404", "NotFound"):
            raise BadInput("s3_object_not_found", f"{where} does not exist") from None
        if code in ("AccessDenied", "403", "Forbidden"):
            raise BadInput("s3_access_denied", f"the function may not read {where}") from None
        raise  # throttling, 5xx: the platform's problem, reported as a FunctionError
    body = obj["Body"]
    try:
        if obj.get("ContentLength", 0) > MAX_BYTES:
            raise BadInput("s3_object_too_large",
                           f"{where} is {obj['ContentLength']} bytes, over the {MAX_BYTES} byte limit")
        data = body.read(MAX_BYTES + 1)  # bounded even if ContentLength was missing
    finally:
        body.close()
    if len(data) > MAX_BYTES:
        raise BadInput("s3_object_too_large", f"{where} is over the {MAX_BYTES} byte limit")
    return data
