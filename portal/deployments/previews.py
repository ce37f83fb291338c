"""Merge requests' previews: what a merge request event, or a person, asks of one.

A Preview row per (function, MR iid) holds the merge request's newest state as Slipway
heard it. Its deployments (kind preview) queue per merge request (queue.queue_of): a
new head supersedes only the queued previews of the same MR. Deliveries arrive out of
order and a rebase breaks ancestry, so the newest is decided by the MR's updated_at,
and on a tie by the later delivery. Close and merge mark the preview closed under its
row lock (the alias step is conditional on it being open in the same UPDATE, so a build
finishing later creates nothing that survives) and announce it (events.preview_closed:
the clean-up). An update after a close is ignored; a reopen opens it again.

A fork's head builds only once a deployer approved that very commit (approve_preview).
Lock order as everywhere: the function row, the environment row, the preview row, then
deployment rows.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.db import transaction
from django.db.models.functions import Now

from deploy import testing
from portal.core.errors import RequestRefused
from portal.deployments import events, queue
from portal.deployments.models import Deployment, Preview
from portal.functions import AuditEvent, Environment, Function

Status, Kind = Deployment.Status, Deployment.Kind
OPENING = ("open", "reopen", "update")
CLOSING = ("close", "merge")
REMOVED_BY = "removed by "  # removed_reason of a preview a person removed: Redeploy brings it back
# The preview deployments that still count for a head: one waiting, running, or done.
STANDING = (*Deployment.WAITING, *Deployment.RUNNING, Status.SUCCEEDED)


@dataclass(frozen=True)
class MergeRequest:
    """What a merge request event says (portal/hooks/merge_requests.py parses it)."""

    iid: int
    action: str  # open, reopen, update (with new commits), close, merge
    updated_at: datetime.datetime
    author: str = ""  # the event's user: who acted
    title: str = ""
    source_project_id: int | None = None
    target_project_id: int | None = None
    source_branch: str = ""
    target_branch: str = ""
    fork: bool = False
    head_sha: str = ""
    commit_message: str = ""
    commit_author: str = ""


@dataclass(frozen=True)
class Received:
    """What Slipway did with a merge request event: `accepted` False means ignored, with why."""

    accepted: bool
    detail: str
    preview: Preview | None = None
    deployment: Deployment | None = None


def _locked(function: Function, mr_iid: int, *, create: bool = True) -> tuple[Environment, Preview | None]:
    """The lock order: the function row, the preview environment's row, the preview's row."""
    Function.objects.select_for_update().get(pk=function.pk)
    environment = Environment.objects.select_for_update().filter(function=function, preview=True).first()
    if environment is None:
        raise RequestRefused(f"previews are off for {function.name}", code="previews-off")
    preview = Preview.objects.select_for_update().filter(function=function, mr_iid=mr_iid).first()
    if preview is None and create:
        preview = Preview.objects.create(function=function, environment=environment, mr_iid=mr_iid)
    return environment, preview


def _older(preview: Preview, mr: MergeRequest, delivery: int | None) -> bool:
    """Whether the event is older than what the preview already holds: by the MR's updated_at,
    and on a tie by the delivery that arrived first."""
    if preview.mr_updated_at is None:
        return False
    if mr.updated_at != preview.mr_updated_at:
        return mr.updated_at < preview.mr_updated_at
    return delivery is not None and preview.delivery_id is not None and delivery < preview.delivery_id


def _stale(preview: Preview) -> str:
    return (f"older than what preview !{preview.mr_iid} holds (updated {preview.mr_updated_at:%Y-%m-%d %H:%M:%S}"
            + (f", delivery #{preview.delivery_id}" if preview.delivery_id else "") + "): ignored")


def receive(function: Function, mr: MergeRequest, *, delivery: int | None = None) -> Received:
    """A merge request event (the receiver's transaction; `delivery` is its log row)."""
    if function.is_archived:
        raise RequestRefused(f"{function.name} is archived: it accepts no previews")
    if mr.action in CLOSING:
        return close_preview(function, mr, delivery=delivery)
    return request_preview(function, mr, delivery=delivery)


def request_preview(function: Function, mr: MergeRequest, *, delivery: int | None = None) -> Received:
    """Open, reopen or update (new commits): the preview takes the MR's head, and a preview
    deployment of it is queued — unless the event is older than what the preview holds, the
    MR was closed (an update after a close), the head is already previewed, or it comes from
    a fork and waits for a deployer's approval of that commit."""
    with transaction.atomic():
        environment, preview = _locked(function, mr.iid)
        if mr.fork and not environment.preview_policy.allow_forks:
            raise RequestRefused(f"!{mr.iid} is from a fork, and {function.name}'s owners do not allow forks' "
                                 "previews", code="fork-refused")
        created = preview.mr_updated_at is None
        if _older(preview, mr, delivery):
            return Received(False, _stale(preview), preview)
        if preview.state != Preview.State.OPEN and mr.action == "update" and not created:
            return Received(False, f"preview !{mr.iid} is {preview.state}: an update after a close is ignored "
                                   "(a reopen opens it again)", preview)
        head_moved = preview.head_sha != mr.head_sha
        repeat = (not head_moved and preview.state == Preview.State.OPEN and mr.action != "reopen"
                  and preview.deployments.filter(commit_sha=mr.head_sha, status__in=STANDING).exists())
        _take(preview, mr, delivery, head_moved)
        testing.pause("preview-locked", function.name)  # tests only: a close waits here for this lock
        if repeat:
            return Received(False, f"{mr.head_sha[:12]} is already previewed or queued for !{mr.iid}", preview)
        if preview.awaiting_approval:
            AuditEvent.record("preview.awaiting_approval", function=function, actor_label=mr.author or "webhook",
                              preview=preview.pk, mr_iid=mr.iid, commit=mr.head_sha,
                              source_project_id=mr.source_project_id)
            return Received(True, f"!{mr.iid} from a fork: {mr.head_sha[:12]} waits for a deployer's approval",
                            preview)
        deployment = _queue(function, environment, preview, trigger=Deployment.Trigger.WEBHOOK, user=None,
                            actor_label=mr.author or "webhook")
    return Received(True, f"!{mr.iid} {mr.action}: preview {mr.head_sha[:12]}", preview, deployment)


def _take(preview: Preview, mr: MergeRequest, delivery: int | None, head_moved: bool) -> None:
    fields = {"state": Preview.State.OPEN, "title": mr.title[:255], "author": mr.author[:255],
              "source_project_id": mr.source_project_id, "target_project_id": mr.target_project_id,
              "source_branch": mr.source_branch[:255], "target_branch": mr.target_branch[:255], "fork": mr.fork,
              "head_sha": mr.head_sha, "mr_updated_at": mr.updated_at, "delivery_id": delivery,
              "closed_at": None, "removed_at": None, "removed_reason": ""}
    if head_moved or preview.last_commit_at is None:
        fields["last_commit_at"] = Now()
    Preview.objects.filter(pk=preview.pk).update(**fields)
    preview.refresh_from_db()


def _queue(function: Function, environment: Environment, preview: Preview, *, trigger: str, user,
           actor_label: str = "") -> Deployment:
    """A preview deployment of the preview's head, in its merge request's queue (the caller
    holds the lock order). It replaces the queued ones of the same MR only."""
    deployment = queue.request(
        function, environment=environment, locked=True, kind=Kind.PREVIEW, trigger=trigger, requested_by=user,
        preview=preview, approvals_required=0, ref=preview.source_branch, commit_sha=preview.head_sha)
    AuditEvent.record("preview.requested", function=function, actor=user,
                      actor_label=actor_label or (user.get_username() if user else trigger),
                      deployment=deployment.pk, preview=preview.pk, mr_iid=preview.mr_iid, commit=preview.head_sha)
    return deployment


def close_preview(function: Function, mr: MergeRequest, *, delivery: int | None = None) -> Received:
    """Close or merge: the preview is closed under its lock, what waits in its queue is
    cancelled, what runs is told to stop, and the clean-up is announced."""
    with transaction.atomic():
        _, preview = _locked(function, mr.iid, create=False)
        if preview is None:
            return Received(False, f"!{mr.iid} has no preview: nothing to remove")
        if _older(preview, mr, delivery):
            return Received(False, _stale(preview), preview)
        Preview.objects.filter(pk=preview.pk).update(mr_updated_at=mr.updated_at, delivery_id=delivery)
        if preview.state != Preview.State.OPEN:
            preview.refresh_from_db()
            return Received(False, f"preview !{mr.iid} is already {preview.state}", preview)
        what = "merged" if mr.action == "merge" else "closed"
        _close(preview, f"merge request {what}", actor_label=mr.author or "webhook")
    return Received(True, f"!{mr.iid} {what}: preview closed, its alias and URL are removed", preview)


def _close(preview: Preview, reason: str, *, actor=None, actor_label: str = "") -> None:
    """Mark the preview closed (the caller holds its row lock), stop its deployments, announce the clean-up."""
    Preview.objects.filter(pk=preview.pk).update(state=Preview.State.CLOSED, closed_at=Now(), removed_reason=reason)
    preview.refresh_from_db()
    for deployment in preview.deployments.exclude(status__in=Deployment.TERMINAL):
        deployment.request_cancel()
    AuditEvent.record("preview.closed", function=preview.function, actor=actor, actor_label=actor_label,
                      preview=preview.pk, mr_iid=preview.mr_iid, reason=reason)
    events.preview_closed.send(Preview, preview=preview)


def _refuse_unless_open(preview: Preview, what: str) -> None:
    if preview.state != Preview.State.OPEN:
        raise RequestRefused(f"preview !{preview.mr_iid} is {preview.state}: nothing to {what}",
                             code="preview-closed")


def approve_preview(preview: Preview, *, user, commit: str, trigger: str = Deployment.Trigger.UI) -> Deployment:
    """A deployer lets a fork's head build: exactly `commit`, the head they were shown. Audited."""
    with transaction.atomic():
        environment, preview = _locked(preview.function, preview.mr_iid, create=False)
        _refuse_unless_open(preview, "approve")
        if not preview.fork:
            raise RequestRefused(f"!{preview.mr_iid} is not from a fork: it needs no approval", status=400,
                                 code="not-a-fork")
        if commit != preview.head_sha:
            raise RequestRefused(f"!{preview.mr_iid}'s head is now {preview.head_sha[:12]}, not {commit[:12]}: "
                                 "look at it again before approving", code="head-moved")
        if preview.approved_sha == commit:
            raise RequestRefused(f"{commit[:12]} is already approved", code="already-approved")
        Preview.objects.filter(pk=preview.pk).update(approved_sha=commit, approved_by=user)
        preview.refresh_from_db()
        AuditEvent.record("preview.approved", function=preview.function, actor=user, preview=preview.pk,
                          mr_iid=preview.mr_iid, commit=commit, source_project_id=preview.source_project_id)
        return _queue(preview.function, environment, preview, trigger=trigger, user=user)


def redeploy_preview(preview: Preview, *, user, trigger: str = Deployment.Trigger.UI) -> Deployment:
    """Build and publish the preview's head again (a failed verify, a removed preview)."""
    with transaction.atomic():
        environment, preview = _locked(preview.function, preview.mr_iid, create=False)
        if preview.state != Preview.State.OPEN:
            if not preview.removed_reason.startswith(REMOVED_BY):
                raise RequestRefused(f"!{preview.mr_iid} was {preview.removed_reason or preview.state}: reopen "
                                     "the merge request to preview it again", code="preview-closed")
            Preview.objects.filter(pk=preview.pk).update(state=Preview.State.OPEN, closed_at=None, removed_at=None,
                                                         removed_reason="", last_commit_at=Now())
            preview.refresh_from_db()
        if not preview.head_sha:
            raise RequestRefused(f"!{preview.mr_iid} has no head commit yet", code="no-head")
        if preview.awaiting_approval:
            raise RequestRefused(f"{preview.head_sha[:12]} of !{preview.mr_iid} (a fork) waits for a deployer's "
                                 "approval first", code="approval-needed")
        return _queue(preview.function, environment, preview, trigger=trigger, user=user)


def remove_preview(preview: Preview, *, user) -> Preview:
    """A person removes a preview: closed like a merge request's close (Redeploy brings it back)."""
    with transaction.atomic():
        _, preview = _locked(preview.function, preview.mr_iid, create=False)
        _refuse_unless_open(preview, "remove")
        _close(preview, REMOVED_BY + user.get_username(), actor=user)
    return preview


def live_previews(function: Function):
    """The open previews with a version behind their alias, newest MR first (the console's targets)."""
    return Preview.objects.filter(function=function, state=Preview.State.OPEN).exclude(version="")
