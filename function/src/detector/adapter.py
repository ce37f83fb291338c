"""The Lambda handler and its HTTP face: a direct event, or a Function URL / API Gateway request
whose body is the image (options in the query string) or the same event as JSON.

Bad input gets `{"error": {"code", "message"}}` with a stable code (see `BadInput`); anything else
raises, so that Lambda reports a FunctionError and the pipeline's verify step fails loudly instead of
passing on a half-answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import cv2

from detector import detection, inputs, options, sniff
from detector.errors import BadInput, show

__version__ = "1.0.0"

HTTP_STATUS = {
    "payload_too_large": 413,
    "image_too_large": 413,
    "s3_object_too_large": 413,
    "s3_access_denied": 403,
    "s3_object_not_found": 404,
}


def process_image(event, context=None):
    if _is_http(event):
        return _http_response(event)
    if not isinstance(event, dict):
        return BadInput("invalid_input", "the event must be a JSON object").result()
    return _result_or_error(event, lambda: inputs.fetch(event))


def _result_or_error(request: dict, fetch: Callable[[], bytes]) -> dict:
    try:
        return _detect(request, fetch)
    except BadInput as exc:
        return exc.result()


def _detect(request: dict, fetch: Callable[[], bytes]) -> dict:
    started = time.perf_counter()
    detector, params = options.parse(request)  # before fetching: a typo should not cost an S3 download
    data = fetch()
    fetched = time.perf_counter()
    image, fmt = sniff.decode(data)
    height, width = image.shape[:2]
    decoded = time.perf_counter()
    boxes = detection.run(detector, image, params)
    detected = time.perf_counter()
    return {
        "boxes": boxes,
        "image": {"width": width, "height": height, "format": fmt},
        "detector": detector,
        "params": params,
        "timings_ms": {
            "fetch": _ms(fetched - started),
            "decode": _ms(decoded - fetched),
            "detect": _ms(detected - decoded),
            "total": _ms(detected - started),
        },
        "versions": {"opencv": cv2.__version__, "function": __version__},
    }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


# --- Function URL / API Gateway ------------------------------------------------------------------

def _is_http(event) -> bool:
    return isinstance(event, dict) and "requestContext" in event and (
        "body" in event or "httpMethod" in event or "rawPath" in event
    )


def _http_response(event: dict) -> dict:
    """Binary body = the image, options in the query string; a JSON body = the same event as direct."""
    try:
        headers = {str(k).lower(): v for k, v in _http_map(event, "headers").items()}
        content_type = str(headers.get("content-type", "")).split(";")[0].strip().lower()
        options = _http_map(event, "queryStringParameters")
        raw = _http_body(event.get("body"), bool(event.get("isBase64Encoded")))
        if content_type == "application/json":
            request = _json_object(raw)
            result = _result_or_error(request, lambda: inputs.fetch(request))
        elif raw is None:
            raise BadInput("missing_input", "send the image as the request body")
        else:
            result = _result_or_error(options, lambda: raw)
    except BadInput as exc:
        result = exc.result()
    status = HTTP_STATUS.get(result["error"]["code"], 400) if "error" in result else 200
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(result),
        "isBase64Encoded": False,
    }


def _http_map(event: dict, field: str) -> dict:
    value = event.get(field) or {}
    if not isinstance(value, dict):
        raise BadInput("invalid_input", f"{field} must be an object, not {show(value)}")
    return value


def _http_body(body, is_base64: bool) -> bytes | None:
    if body is None:
        return None
    if is_base64:
        return inputs.b64decode(body, "body")
    return body.encode("utf-8") if isinstance(body, str) else b""


def _json_object(raw: bytes | None) -> dict:
    """Strict JSON (RFC 8259): no NaN or Infinity literals, and no key twice, since parsers
    disagree on which duplicate wins and the request would mean different things to each."""
    try:
        request = json.loads(raw or b"", parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except BadInput:
        raise
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise BadInput("invalid_input", "the request body is not valid JSON") from None
    if not isinstance(request, dict):
        raise BadInput("invalid_input", "the request body must be a JSON object")
    return request


def _refuse_constant(name: str):
    raise BadInput("invalid_input", f"the request body is not strict JSON ({name} is not a JSON number)")


def _unique_keys(pairs: list) -> dict:
    request = {}
    for key, value in pairs:
        if key in request:
            raise BadInput("invalid_input", f"the request body has the key {show(key)} more than once")
        request[key] = value
    return request
