"""Back to GitLab for previews: one note per function on the merge request, and the commit
status, which is opt-in.

The note is marked `<!-- slipway:preview:<function> -->` and edited in place: its id is kept on
the Preview; a PUT answered 403 (only a note's author may edit it: the token changed) or 404
(deleted) posts a new one. One poster at a time per preview (note_lease_until, a conditional
UPDATE): two previews finishing together never post two notes; the holder composes the body
from the rows as they are when it posts, and once more after, if they moved meanwhile.

A commit status is sent only when the preview policy asks for one (GitLab attaches an external
status to a pipeline: a failed preview could block merges under "Pipelines must succeed"); a
fork's names its ref explicitly (refs/merge-requests/<iid>/head: the commit is on no branch of
the project). Previews never go to GitLab's Deployments API (gitlab_deployments.wanted).
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField as DateTimeOutput
from django.db.models import ExpressionWrapper, Q
from django.db.models.functions import Now

from deploy import outbound
from portal import functions
from portal.celery import PREVIEW_NOTE_TASK
from portal.core import crypto, sending
from portal.deployments import Deployment, Preview
from portal.feedback import delivery
from portal.feedback import status as feedback
from portal.feedback.models import NotificationAttempt

log = logging.getLogger(__name__)
Status = Deployment.Status
ROUNDS = 3


def marker(function_name: str) -> str:
    return f"<!-- slipway:preview:{function_name} -->"


def request(preview_pk: int) -> None:
    """After commit: bring the merge request's note up to date (the feedback queue's work)."""
    def send():
        try:
            sending.send_task(PREVIEW_NOTE_TASK, args=[preview_pk])
        except Exception as exc:  # a lost note, never a failed preview
            log.warning("could not send the note of preview %s: %s", preview_pk, exc)
    transaction.on_commit(send)


def compose(preview: Preview) -> str:
    """The note's body, from the preview and its newest deployment."""
    latest = Deployment.objects.filter(preview=preview).order_by("-pk").first()
    lines = [marker(preview.function.name), f"**Slipway preview of `{preview.function.name}`**", ""]
    if preview.state == Preview.State.REMOVED:
        lines.append(f"Removed: {preview.removed_reason or 'the merge request closed'}.")
    elif preview.state == Preview.State.CLOSED:
        lines.append(f"Closed ({preview.removed_reason or 'the merge request closed'}); its alias is being removed.")
    elif latest is None:
        lines.append("Waiting for the first build.")
    elif latest.status == Status.SUCCEEDED:
        lines.append(f"`{latest.commit_sha[:12]}` is live as version {preview.version} behind alias "
                     f"`{preview.alias}` of `{preview.environment.lambda_name}`.")
        if preview.url:
            lines.append(f"Function URL: {preview.url}")
    elif latest.status == Status.FAILED:
        lines.append(f"The preview of `{latest.commit_sha[:12]}` failed: {latest.error_code}: {latest.error_message}")
        if preview.version:
            lines.append(f"Alias `{preview.alias}` still serves version {preview.version}.")
    elif latest.is_terminal:
        lines.append(f"The preview of `{latest.commit_sha[:12]}` ended {latest.status}: "
                     f"{latest.error_message or latest.error_code}")
    else:
        lines.append(f"`{latest.commit_sha[:12] or preview.head_sha[:12]}` is {latest.get_status_display().lower()}.")
    if latest is not None:
        link = feedback.deployment_link(latest.pk)
        if link:
            lines += ["", f"[Deployment #{latest.pk}]({link})"]
    return functions.scrub("\n".join(lines), preview.function)[:10_000]


def report(preview_pk: int) -> str:
    """Post or edit the merge request's note, under the preview's note lease."""
    until = ExpressionWrapper(Now() + timedelta(seconds=delivery.lease_seconds()), output_field=DateTimeOutput())
    free = Q(note_lease_until__isnull=True) | Q(note_lease_until__lt=Now())
    if not Preview.objects.filter(free, pk=preview_pk).update(note_lease_until=until):
        return "busy: the lease holder posts the newest state when it is done"
    posted, outcome = None, "nothing to report"
    try:
        for _ in range(ROUNDS):
            preview = Preview.objects.select_related("function", "environment").filter(pk=preview_pk).first()
            if preview is None or not feedback.gitlab_configured(preview.function):
                return "nothing to report"
            body = compose(preview)
            if body == posted:
                break
            outcome = _post(preview, body)
            posted = body
    finally:
        Preview.objects.filter(pk=preview_pk).update(note_lease_until=None)
    return outcome


def _post(preview: Preview, body: str) -> str:
    function = preview.function
    reports = function.feedback_settings
    secrets = functions.secret_values(function)
    target = f"{outbound.project_url(reports.gitlab_api_url, reports.gitlab_project)}/merge_requests/{preview.mr_iid}"
    record = delivery.recorder(function.pk, None, NotificationAttempt.Channel.GITLAB, "preview-note",
                               outbound.where(target), secrets)
    try:
        token = crypto.decrypt(reports.gitlab_status_token)
    except crypto.Unavailable as exc:
        record(1, outbound.Answer(None, f"not posted: {exc}", 0.0))
        return "not posted"
    common = {"timeout": settings.SLIPWAY_NOTIFY_TIMEOUT, "allowed": settings.SLIPWAY_OUTBOUND_ALLOWED_NETWORKS}
    if preview.note_id:
        answers = []
        delivery.with_attempts(lambda: _kept(answers, outbound.edit_mr_note(
            reports.gitlab_api_url, reports.gitlab_project, token, preview.mr_iid, preview.note_id, body=body,
            **common)), record)
        if answers and answers[-1].ok:
            return f"edited note {preview.note_id}"
        if not answers or answers[-1].status not in (403, 404):
            return "not edited"
    answers = []
    delivery.with_attempts(lambda: _kept(answers, outbound.post_mr_note(
        reports.gitlab_api_url, reports.gitlab_project, token, preview.mr_iid, body=body, **common)), record)
    if not answers or not answers[-1].ok:
        return "not posted"
    try:
        note_id = int(json.loads(answers[-1].body)["id"])
    except (ValueError, KeyError, TypeError):
        return "posted, but GitLab's answer has no note id"
    Preview.objects.filter(pk=preview.pk).update(note_id=note_id)
    return f"posted note {note_id}"


def _kept(answers: list, answer: outbound.Answer) -> outbound.Answer:
    answers.append(answer)
    return answer
