"""Invoking a function's alias or version with an image and classifying the answer:
S3 for large payloads, Lambda invoke, through deploy/ (does I/O). The web's console
and the worker's golden check both call it.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from deploy import aws, lambdas
from deploy.errors import DeployError
from portal.console.images import CheckedImage, ConsoleError, log, store_image
from portal.console.models import ConsoleImage, ConsoleRun
from portal.functions import Environment, Function


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


def _timeout(environment: Environment) -> float:
    return float(environment.timeout_s) + 10  # the function's own limit answers first


def invoke_image(function: Function, target: str, data: bytes, options: dict, *, attempts: int | None = 1,
                 environment: Environment | None = None) -> Answer:
    """Send `data` with `options` to `target` (the alias or a version) of `environment`'s
    Lambda (default: the function's first) and classify the answer.
    A ConsoleError when no answer came (plane down, no such version); the answer otherwise,
    a function error or a structured error included. `attempts`: 1 for a person, who may
    press again; None (deploy.aws's bound, transient errors retried) for the verify step."""
    environment = environment or function.first_environment
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
            raise _refused(environment, target, exc) from None
        request = {"bucket": bucket, "key": key, **options}
        payload = json.dumps(request).encode()
        request = {**request, "_note": f"the inline event would be {len(encoded) + 20:,} bytes, over Lambda's "
                                       f"{settings.SLIPWAY_CONSOLE_PAYLOAD_LIMIT:,} byte limit: sent through S3"}
    started = time.perf_counter()
    try:
        invocation = lambdas.invoke(environment.lambda_name, target, payload, tail=True, timeout=_timeout(environment),
                                    attempts=attempts or aws.MAX_ATTEMPTS)
    except DeployError as exc:
        raise _refused(environment, target, exc) from None
    finally:
        round_trip = (time.perf_counter() - started) * 1000
        if key:
            _delete(settings.SLIPWAY_CONSOLE_BUCKET, key)
    return classify(environment, target, invocation, request, bool(key), round_trip)


def _delete(bucket: str, key: str) -> None:
    try:
        aws.call("deleting the image from the console bucket", aws.client("s3").delete_object, prefix="s3",
                 Bucket=bucket, Key=key)
    except DeployError as exc:  # the answer still counts; the object is named in the log for cleanup
        log.warning("console: s3://%s/%s was not deleted: %s", bucket, key, exc)


def _refused(environment: Environment, target: str, exc: DeployError) -> ConsoleError:
    where = f"{environment.lambda_name}:{target}"
    if exc.code in ("aws-unreachable", "aws-credentials"):
        plane = settings.AWS_ENDPOINT_URL or "AWS"
        return ConsoleError("aws-unreachable", f"could not reach {plane} to invoke {where}: {exc.message}", 502)
    if exc.code.endswith("ResourceNotFoundException"):
        return ConsoleError("no-such-target", f"{where} does not exist: {exc.message}", 404)
    return ConsoleError(exc.code, f"invoking {where} failed: {exc.message}", 502)


def classify(environment: Environment, target: str, invocation: lambdas.Invocation, request: dict, via_s3: bool,
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
            answer.error_message = (f"the function ran past its {environment.timeout_s} s timeout "
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
             compared_with: ConsoleRun | None = None, environment: Environment | None = None) -> ConsoleRun:
    return ConsoleRun.objects.create(
        function=function, environment=environment or function.first_environment, user=user, image=image,
        image_name=image.name, image_width=image.width,
        image_height=image.height, target=answer.target, executed_version=answer.executed_version,
        options=options, request=answer.request, via_s3=answer.via_s3, outcome=answer.outcome,
        result=answer.result, error_code=answer.error_code, error_message=answer.error_message,
        box_count=len(answer.boxes) if answer.outcome == ConsoleRun.Outcome.OK else None,
        round_trip_ms=answer.round_trip_ms, init_ms=answer.report.init_ms, duration_ms=answer.report.duration_ms,
        billed_ms=answer.report.billed_ms, memory_used_mb=answer.report.memory_used_mb, log_tail=answer.log_tail,
        compared_with=compared_with)


def run(function: Function, user, checked: CheckedImage, options: dict,
        targets_: list[str | tuple[Environment, str]], environment: Environment | None = None) -> ConsoleRun:
    """Invoke each target (one, or two to compare) of `environment`'s Lambda (default: the
    function's first) with the image; a target given as (environment, target) is another
    environment's (a preview compared with what is live). The image and the runs are stored
    together once every answer is in, or nothing is."""
    environment = environment or function.first_environment
    pairs = [target if isinstance(target, tuple) else (environment, target) for target in targets_]
    answers = [invoke_image(function, target, checked.data, options, environment=where) for where, target in pairs]
    with transaction.atomic():
        image = store_image(function, checked)
        first = save_run(function, user, image, answers[0], options, environment=pairs[0][0])
        for (where, _), answer in zip(pairs[1:], answers[1:], strict=True):
            save_run(function, user, image, answer, options, compared_with=first, environment=where)
    return first
