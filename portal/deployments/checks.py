"""What a new version must answer: the smoke event without an error, and every golden
case's boxes. Shared by the verify step (steps.py, which fails on the first problem)
and a rollout's probes (health.py, which counts them against a limit)."""

from __future__ import annotations

from collections.abc import Callable

from deploy import lambdas
from deploy.errors import AppError, UserError
from portal import console
from portal.console import ConsoleRun, GoldenCase
from portal.functions import Environment, Function

Out = Callable[[str], None]


def smoke_problem(version: str, invocation: lambdas.Invocation) -> UserError | None:
    """Why the smoke event's answer fails the version (a function error, or a result
    carrying "error"); None when it passes."""
    preview = str(invocation.result)[:500]
    if invocation.error:
        return UserError("smoke-function-error", f"version {version} raised {invocation.error}: {preview}")
    if isinstance(invocation.result, dict) and "error" in invocation.result:
        return UserError("smoke-error-result", f"version {version} answered the smoke event with an error: {preview}")
    return None


def golden_failures(function: Function, environment: Environment, version: str, out: Out, *,
                    unanswered_fail: bool = False) -> tuple[int, list[str]]:
    """Run each golden case against `version`, logging each to `out`: (cases run, one line
    per failed case). A case the console could not send raises AppError golden-<code>
    (the verify step retries later), or with `unanswered_fail` counts as failed (a probe
    counts what did not answer)."""
    cases = list(GoldenCase.objects.filter(function=function).select_related("image"))
    if not cases:
        out("no golden cases")
        return 0, []
    failed = []
    for case in cases:
        try:
            answer = console.invoke_image(function, version, bytes(case.image.data), case.options, attempts=None,
                                          environment=environment)
        except console.ConsoleError as exc:
            if not unanswered_fail:
                raise AppError(f"golden-{exc.code}", f"golden case {case.name!r}: {exc.message}") from None
            out(f"golden case {case.name!r}: not answered ({exc.code}): {exc.message}"[:500])
            failed.append(f"{case.name}: not answered ({exc.code})")
            continue
        title = f"golden case {case.name!r} (#{case.pk}, {len(case.boxes)} box(es), IoU >= {function.golden_iou})"
        if answer.outcome != ConsoleRun.Outcome.OK:
            lines = [f"answered {answer.outcome}: {answer.error_code} {answer.error_message}"[:500]]
        else:
            lines = console.diff(case.boxes, answer.boxes, function.golden_iou)
        out(f"{title}: {'FAILED' if lines else 'passed'} ({answer.round_trip_ms:.0f} ms)")
        for line in lines:
            out(f"  {line}")
        if lines:
            failed.append(f"{case.name}: {lines[0]}" + (f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""))
    return len(cases), failed
