"""Requests that start work: a row first, the task after commit.

Shared by the web UI, the API, webhooks and manage.py, so every entry point
validates the same way and leaves the same trail.
"""

from __future__ import annotations

import re

from django.db import transaction

from deploy.source import validate_ref
from portal import feedback, queue, sending
from portal import rollback as rollbacks
from portal.models import AuditEvent, Deployment, Function

_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")


class RequestRefused(Exception):
    """The request cannot be accepted; the message says why."""


def _actor(user, trigger: str) -> dict:
    return {"actor": user, "actor_label": user.get_username() if user else trigger}


def request_deploy(function: Function, *, trigger: str, user=None, ref: str = "", commit: str = "") -> Deployment:
    """Queue a deploy of `ref` (branch/tag) or `commit` (full SHA); default: the function's branch."""
    if function.is_archived:
        raise RequestRefused(f"{function.name} is archived: it accepts no deploys")
    if ref and commit:
        raise RequestRefused("give a ref or a commit, not both")
    if commit and not _FULL_SHA.match(commit):
        raise RequestRefused(f"{commit!r} is not a full 40-character commit SHA")
    try:
        validate_ref(ref or commit or function.branch)
    except Exception as exc:
        raise RequestRefused(str(getattr(exc, "message", exc))) from None
    return _queue_deploy(function, trigger=trigger, user=user, ref=ref or commit or function.branch, commit=commit)


def _queue_deploy(function: Function, *, trigger: str, user, ref: str, commit: str, supersede: bool = True,
                  locked: bool = False, **audit) -> Deployment:
    with transaction.atomic(savepoint=False):  # nothing here is retried: no savepoint round trips needed
        deployment = queue.request(function, supersede=supersede, locked=locked, trigger=trigger, requested_by=user,
                                   ref=ref, commit_sha=commit)
        AuditEvent.record("deployment.requested", function=function, deployment=deployment.pk,
                          ref=deployment.ref, trigger=trigger, **audit, **_actor(user, trigger))
    return deployment


def request_webhook_deploy(function: Function, *, ref: str, commit: str, delivery: int) -> Deployment:
    """Queue the deploy a GitLab delivery asked for: exactly `commit`, with the branch or
    tag it came from as `ref`. It supersedes nothing (see queue.request). Called inside
    the receiver's transaction, with the function row already locked."""
    if function.is_archived:
        raise RequestRefused(f"{function.name} is archived: it accepts no deploys")
    if not _FULL_SHA.match(commit):
        raise RequestRefused(f"{commit!r} is not a full 40-character commit SHA")
    return _queue_deploy(function, trigger=Deployment.Trigger.WEBHOOK, user=None, ref=ref, commit=commit,
                         supersede=False, locked=True, delivery=delivery)


def request_reconcile_deploy(function: Function, *, head: str, user=None, trigger: str = "cli"):
    """Queue a deploy of `head`, the commit the branch holds on the remote, if auto-deploy
    would have deployed it and nothing did: checked again here under the function's
    lock, so two checks at once (the button and the periodic task) queue it once.
    Like a webhook deploy it supersedes nothing; the worker skips it if it turns out
    older than one live or queued (workers/steps.stale_reason)."""
    from portal.sources import Reconciled, blocked_reason

    if not _FULL_SHA.match(head):
        raise RequestRefused(f"{head!r} is not a full 40-character commit SHA")
    with transaction.atomic():
        function = Function.objects.select_for_update().get(pk=function.pk)  # the lock queue.request takes first
        blocked = blocked_reason(function)
        if blocked:
            return blocked
        tried = (Deployment.objects.filter(function=function, commit_sha=head).exclude(kind=Deployment.Kind.ROLLBACK)
                 .order_by("-pk").first())
        if tried is not None:
            if tried.status == Deployment.Status.SUCCEEDED:
                live = (Deployment.objects.filter(function=function, status=Deployment.Status.SUCCEEDED)
                        .exclude(version="").order_by("-finished_at", "-pk").values_list("commit_sha", flat=True)
                        .first())
                also = "" if live == head else f"; {(live or '')[:12]} went live after it, explicitly"
                return Reconciled("up-to-date", f"{function.branch} is at {head[:12]}, deployed by #{tried.pk}"
                                  + also, head=head, deployment=tried)
            if not tried.is_terminal:
                return Reconciled("in-progress", f"{head[:12]} is already {tried.status} (deployment #{tried.pk})",
                                  head=head, deployment=tried)
            return Reconciled("already-tried", f"{head[:12]} was tried already: deployment #{tried.pk} "
                              f"{tried.status}; deploy it explicitly to try again", head=head, deployment=tried)
        unresolved = Deployment.objects.filter(function=function, ref=function.branch, commit_sha="",
                                               status__in=(Deployment.Status.QUEUED, *Deployment.RUNNING)).first()
        if unresolved is not None:
            return Reconciled("in-progress", f"deployment #{unresolved.pk} of {function.branch} is "
                              f"{unresolved.status}: it deploys the head", head=head, deployment=unresolved)
        deployment = _queue_deploy(function, trigger=Deployment.Trigger.RECONCILE, user=user, ref=function.branch,
                                   commit=head, supersede=False, locked=True, missed_push=head, checked_by=trigger)
    return Reconciled("deployed", f"{function.branch} is at {head[:12]}, which was never deployed: "
                      f"deployment #{deployment.pk} queued", head=head, deployment=deployment)


def rollback_target(function: Function, *, to: str = "") -> Deployment:
    """The successful deployment to put back: by version number, by commit SHA
    prefix, or (default) the one live before the current one."""
    done = (Deployment.objects.filter(function=function, status=Deployment.Status.SUCCEEDED, build__isnull=False)
            .exclude(version="").select_related("build").order_by("-finished_at", "-pk"))
    if to:
        if to.isdigit():
            target = done.filter(version=to).first()
        elif re.fullmatch(r"[0-9a-f]{7,40}", to):
            target = done.filter(commit_sha__startswith=to).first()
        else:
            raise RequestRefused(f"{to!r} is neither a version number nor a commit SHA")
        if target is None:
            raise RequestRefused(f"no successful deployment of {function.name} matches {to!r}")
        return target
    live = done.first()
    if live is None:
        raise RequestRefused(f"{function.name} has no successful deployment to roll back from")
    target = done.exclude(version=live.version).first()
    if target is None:
        raise RequestRefused(f"{function.name} has no earlier release than version {live.version}")
    return target


def request_rollback(function: Function, *, trigger: str, user=None, to: str = "") -> Deployment:
    """Queue a rollback; it supersedes queued deploys, stops running ones before
    their shift, and pauses auto-deploy until someone resumes it."""
    if function.is_archived:
        raise RequestRefused(f"{function.name} is archived: it accepts no rollbacks")
    with transaction.atomic():  # the function row first, as everywhere (portal/queue.py)
        # The target is read under the lock: retention marks images gone under it too.
        Function.objects.select_for_update().get(pk=function.pk)
        target = rollback_target(function, to=to)
        if target.build and target.build.image_gone_at:
            raise RequestRefused(f"the image of version {target.version} is gone from ECR: deploy its commit again")
        rollback = queue.request(
            function, locked=True, kind=Deployment.Kind.ROLLBACK, trigger=trigger, requested_by=user,
            ref=target.commit_sha, commit_sha=target.commit_sha, build=target.build, target_version=target.version,
            commit_message=target.commit_message, commit_author=target.commit_author,
        )
        who = user.get_username() if user else trigger
        Function.objects.filter(pk=function.pk).update(
            paused_reason=f"rolled back to version {target.version} by {who}; resume auto-deploy when fixed")
        AuditEvent.record("deployment.rollback_requested", function=function, deployment=rollback.pk,
                          to_version=target.version, commit=target.commit_sha, **_actor(user, trigger))
    spending = sending.current()
    if spending is not None and sending.unsent(rollback.pk) and not transaction.get_connection().in_atomic_block:
        # The broker did not take it in time: put the release back from here (an alias move only).
        rollbacks.run_without_queue(rollback, spending.failure)
        rollback.refresh_from_db()
    return rollback


def queue_notice(deployment: Deployment) -> str:
    """What the requester is told when this request could not hand `deployment` to the queue."""
    if not sending.unsent(deployment.pk):
        return ""
    deployment.refresh_from_db()
    if deployment.task_id.startswith(rollbacks.WITHOUT_QUEUE):
        return (f"the queue is not answering: the web process ran rollback #{deployment.pk} itself "
                f"({deployment.status})")
    if deployment.status == Deployment.Status.QUEUED:
        return (f"the queue is not answering: deployment #{deployment.pk} stays queued and starts when "
                "the queue is back")
    return ""


def cancel(deployment: Deployment, *, user=None, trigger: str = "cli") -> bool:
    """Cancel a queued deployment at once, or a running one before its update step."""
    if not deployment.request_cancel():
        return False
    if deployment.is_terminal:  # it was queued: whatever waited behind it may go now
        transaction.on_commit(lambda: queue.dispatch(deployment.function_id))
        feedback.report_status(deployment)  # canceled
    AuditEvent.record("deployment.cancel_requested", function=deployment.function, deployment=deployment.pk,
                      **_actor(user, trigger))
    return True


def resume_auto_deploy(function: Function, *, user=None, trigger: str = "cli") -> None:
    """Lift the pause a rollback put on auto-deploy."""
    Function.objects.filter(pk=function.pk).update(paused_reason="")
    AuditEvent.record("function.auto_deploy_resumed", function=function, **_actor(user, trigger))
    feedback.notify(function, feedback.RESUME, by=user.get_username() if user else trigger)


# --- Functions and members -------------------------------------------------------------

AUDITED_FIELDS = ("description", "repository_url", "branch", "context_path", "dockerfile_path", "build_args",
                  "architecture", "ecr_repository", "lambda_name", "alias", "memory_mb", "timeout_s",
                  "execution_role_arn", "smoke_event", "auto_deploy", "tag_pattern", "golden_iou",
                  "shares_images_with")


def _changes(before: Function | None, after: Function) -> dict:
    """What changed, as the audit log may show it: secret values never."""
    changed = {}
    for field in AUDITED_FIELDS:
        old, new = (getattr(before, field) if before else None), getattr(after, field)
        if old != new:
            changed[field] = new if field != "smoke_event" else "(changed)"
    old_env = before.environment if before else {}
    old_secret = set(before.secret_keys) if before else set()
    for key in sorted(set(old_env) | set(after.environment)):
        if old_env.get(key) != after.environment.get(key) or (key in old_secret) != (key in after.secret_keys):
            if key not in after.environment:
                changed[f"env.{key}"] = "(removed)"
            else:
                changed[f"env.{key}"] = "(secret)" if key in after.secret_keys else after.environment[key]
    changed.update(_source_changes(before, after))
    return changed


def _source_changes(before: Function | None, after: Function) -> dict:
    """The repository's credentials in the audit log: kind and username, never the secret."""
    changed = {}
    for field in ("source_auth", "source_username"):
        old = getattr(before, field) if before else Function._meta.get_field(field).default
        new = getattr(after, field)
        if old != new:
            changed[field] = new
    if (before.source_known_hosts if before else "") != after.source_known_hosts:
        changed["source_known_hosts"] = "(changed)" if after.source_known_hosts else "(removed)"
    old_secret = before.source_secret if before else ""
    if old_secret != after.source_secret:
        changed["source_secret"] = ("(removed)" if not after.source_secret else
                                    "(replaced)" if old_secret else "(set)")
    return changed


def register_function(form, *, user) -> Function:
    """Save a new function; its registrant becomes its owner."""
    from portal.models import Membership

    with transaction.atomic():
        function = form.apply()
        function.save()
        Membership.objects.create(function=function, user=user, role=Membership.Role.OWNER)
        AuditEvent.record("function.registered", function=function, actor=user, **_changes(None, function))
    return function


def update_function(form, *, user) -> Function:
    """Save an edit; it reaches Lambda at the next deploy."""
    with transaction.atomic():
        before = Function.objects.select_for_update().get(pk=form.instance.pk)
        function = form.apply()
        changed = _changes(before, function)
        function.save()
        if changed:
            AuditEvent.record("function.edited", function=function, actor=user, **changed)
    return function


def archive_function(function: Function, *, user) -> None:
    from django.db.models.functions import Now

    Function.objects.filter(pk=function.pk, archived_at__isnull=True).update(archived_at=Now())
    AuditEvent.record("function.archived", function=function, actor=user)


def restore_function(function: Function, *, user) -> None:
    Function.objects.filter(pk=function.pk).update(archived_at=None)
    AuditEvent.record("function.restored", function=function, actor=user)


def set_member(function: Function, member, role: str, *, user) -> None:
    """Add `member` with `role`, or change their role; the last owner cannot be demoted."""
    from portal.models import Membership

    with transaction.atomic():
        Function.objects.select_for_update().get(pk=function.pk)
        current = Membership.objects.filter(function=function, user=member).first()
        if current and current.role == Membership.Role.OWNER and role != Membership.Role.OWNER:
            _refuse_last_owner(function, member)
        Membership.objects.update_or_create(function=function, user=member, defaults={"role": role})
        AuditEvent.record("membership.added" if current is None else "membership.changed", function=function,
                          actor=user, member=member.get_username(), role=role)


def remove_member(function: Function, member, *, user) -> None:
    from portal.models import Membership

    with transaction.atomic():
        Function.objects.select_for_update().get(pk=function.pk)
        current = Membership.objects.filter(function=function, user=member).first()
        if current is None:
            raise RequestRefused(f"{member.get_username()} is not a member of {function.name}")
        if current.role == Membership.Role.OWNER:
            _refuse_last_owner(function, member)
        current.delete()
        AuditEvent.record("membership.removed", function=function, actor=user, member=member.get_username())


def transfer_ownership(function: Function, member, *, user) -> None:
    """`member` becomes an owner and `user` a deployer, in one step."""
    from portal.models import Membership

    if member == user:
        raise RequestRefused("you already own it")
    with transaction.atomic():
        Function.objects.select_for_update().get(pk=function.pk)
        Membership.objects.update_or_create(function=function, user=member,
                                            defaults={"role": Membership.Role.OWNER})
        Membership.objects.filter(function=function, user=user).update(role=Membership.Role.DEPLOYER)
        AuditEvent.record("membership.transferred", function=function, actor=user, to=member.get_username())


def _refuse_last_owner(function: Function, member) -> None:
    from portal.models import Membership

    owners = Membership.objects.filter(function=function, role=Membership.Role.OWNER).exclude(user=member)
    if not owners.exists():
        raise RequestRefused(f"{member.get_username()} is the last owner of {function.name}: "
                             "make someone else an owner first")


# --- Webhooks ---------------------------------------------------------------------------


def set_webhook_secret(function: Function, *, user) -> str:
    """A new secret token (replacing any other at once); returns it to be shown once.
    Only its SHA-256 is kept, and the audit log never sees it."""
    from portal import gitlab

    raw = gitlab.new_secret_token()
    with transaction.atomic():
        before = Function.objects.select_for_update().get(pk=function.pk)
        Function.objects.filter(pk=function.pk).update(webhook_secret_hash=gitlab.digest(raw))
        AuditEvent.record("function.webhook_secret_rotated" if before.webhook_secret_hash
                          else "function.webhook_secret_created", function=function, actor=user)
    return raw


def set_webhook_signing_token(function: Function, *, user) -> str:
    """A new signing token (whsec_…), kept Fernet-encrypted: verifying needs the key itself."""
    from portal import gitlab

    return _store_new_secret(function, "webhook_signing_key", gitlab.new_signing_token(), user=user,
                             audit="function.webhook_signing_token")


def _store_new_secret(function: Function, field: str, raw: str, *, user, audit: str) -> str:
    """Keep `raw` Fernet-encrypted in `field`, replacing any other at once, audited as
    `<audit>_created` or `<audit>_rotated`; returns it to be shown once."""
    from portal import crypto

    try:
        sealed = crypto.encrypt(raw)
    except crypto.Unavailable as exc:
        raise RequestRefused(str(exc)) from None
    with transaction.atomic():
        before = Function.objects.select_for_update().get(pk=function.pk)
        Function.objects.filter(pk=function.pk).update(**{field: sealed})
        AuditEvent.record(f"{audit}_rotated" if getattr(before, field) else f"{audit}_created",
                          function=function, actor=user)
    return raw


def remove_webhook_token(function: Function, kind: str, *, user) -> bool:
    """Remove the secret token (`secret`) or the signing token (`signing`); False if none was set.
    With neither left, the function refuses every delivery."""
    field = {"secret": "webhook_secret_hash", "signing": "webhook_signing_key"}[kind]
    removed = Function.objects.filter(pk=function.pk).exclude(**{field: ""}).update(**{field: ""})
    if removed:
        AuditEvent.record(f"function.webhook_{'secret' if kind == 'secret' else 'signing_token'}_removed",
                          function=function, actor=user)
    return bool(removed)


def replay_delivery(delivery, *, user):
    """Process a logged delivery again as a new, explicit request by `user`: a UI deploy
    (auto-deploy being off or paused does not stop it), not subject to dedupe. The
    replay is logged as a delivery of its own that names the original."""
    import json

    from portal import gitlab
    from portal.models import WebhookDelivery

    function = delivery.function
    if function is None or function.is_archived:
        raise RequestRefused("the function is archived: it accepts no deploys")
    if not delivery.authenticated:
        raise RequestRefused("only deliveries that were authenticated can be replayed")
    try:
        payload = json.loads(delivery.body)
        if not isinstance(payload, dict):
            raise ValueError("not a JSON object")
        decision = gitlab.decide(function, delivery.event_type, payload, explicit=True)
    except (ValueError, RecursionError, gitlab.Malformed) as exc:
        raise RequestRefused(f"delivery #{delivery.pk} cannot be replayed: {exc}") from None
    with transaction.atomic():
        replay = WebhookDelivery.objects.create(
            function=function, event_uuid=delivery.event_uuid, event_type=delivery.event_type,
            headers=delivery.headers, body=delivery.body, body_bytes=delivery.body_bytes, replay_of=delivery,
            replayed_by=user, outcome=WebhookDelivery.Outcome.ACCEPTED if decision.deploy
            else WebhookDelivery.Outcome.IGNORED, detail=gitlab.clean_text(decision.detail, 500))
        if decision.deploy:
            replay.deployment = _queue_deploy(function, trigger=Deployment.Trigger.UI, user=user, ref=decision.ref,
                                              commit=decision.commit, delivery=replay.pk)
            replay.save(update_fields=["deployment"])
        AuditEvent.record("webhook.replayed", function=function, actor=user, delivery=delivery.pk,
                          replay=replay.pk, deployment=replay.deployment_id)
    return replay
# --- Golden cases ----------------------------------------------------------------------


def save_golden_case(run, name: str, *, user):
    """Keep a console run's image, options and boxes as a case every later deploy must pass."""
    from portal.models import ConsoleRun, GoldenCase

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


# --- Feedback: GitLab commit status, notifications, drift (issue 12, second half) -------------


def update_feedback(form, *, user) -> Function:
    """Save where a function reports. The GitLab token is encrypted (Fernet) and the audit
    log says only that it was set or removed."""
    from portal import crypto

    data = form.cleaned_data
    sealed = None
    if data.get("gitlab_token"):
        try:
            sealed = crypto.encrypt(data["gitlab_token"])
        except crypto.Unavailable as exc:
            raise RequestRefused(str(exc)) from None
    with transaction.atomic():
        before = Function.objects.select_for_update().get(pk=form.instance.pk)
        old_members = sorted(before.notify_members.values_list("username", flat=True))
        function = form.save(commit=False)
        if sealed is not None:
            function.gitlab_status_token = sealed
        elif data.get("remove_gitlab_token"):
            function.gitlab_status_token = ""
        function.save(update_fields=["gitlab_api_url", "gitlab_project", "notify_webhook_url", "gitlab_status_token",
                                     "updated_at"])
        form.save_m2m()
        changed = {field: getattr(function, field) for field in ("gitlab_api_url", "gitlab_project",
                                                                 "notify_webhook_url")
                   if getattr(before, field) != getattr(function, field)}
        if sealed is not None:
            changed["gitlab_token"] = "(set)"
        elif before.gitlab_status_token and not function.gitlab_status_token:
            changed["gitlab_token"] = "(removed)"
        members = sorted(function.notify_members.values_list("username", flat=True))
        if members != old_members:
            changed["notify_members"] = members
        if changed:
            AuditEvent.record("function.feedback_edited", function=function, actor=user, **changed)
    return function


def set_notify_webhook_secret(function: Function, *, user) -> str:
    """A new signing secret for the notification webhook (replacing any other at once),
    kept Fernet-encrypted; returned to be shown once."""
    from portal import feedback

    return _store_new_secret(function, "notify_webhook_secret", feedback.new_webhook_secret(), user=user,
                             audit="function.notify_secret")
