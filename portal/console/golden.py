"""Golden cases: a console run kept as a case every later deploy must pass.
"""

from __future__ import annotations

from django.db import transaction

from portal.core.errors import RequestRefused
from portal.functions import AuditEvent


def save_golden_case(run, name: str, *, user):
    """Keep a console run's image, options and boxes as a case every later deploy must pass."""
    from portal.console.models import ConsoleRun, GoldenCase

    if run.outcome != ConsoleRun.Outcome.OK:
        raise RequestRefused("only an answer with boxes can become a golden case; this run answered "
                             f"{run.get_outcome_display().lower()}")
    if run.image_id is None:
        raise RequestRefused("this run's image was removed by the retention rule: send it again first")
    with transaction.atomic():
        case = GoldenCase.objects.create(function=run.function, name=name, image_id=run.image_id,
                                         options=run.options, boxes=run.boxes, saved_from=run,
                                         version=run.executed_version, created_by=user)
        AuditEvent.record("golden_case.saved", function=run.function, actor=user, case=case.pk, name=name,
                          boxes=len(case.boxes), version=case.version)
    return case


def delete_golden_case(case, *, user) -> None:
    with transaction.atomic():
        AuditEvent.record("golden_case.deleted", function=case.function, actor=user, case=case.pk, name=case.name)
        case.delete()
