"""Requests that start work: a row first, the task after commit.

Shared by the web UI, the API, webhooks and manage.py, so every entry point
validates the same way and leaves the same trail.
"""

from __future__ import annotations

import re

from django.db import transaction

from deploy.source import validate_ref
from portal.core import sending
from portal.core.errors import RequestRefused
from portal.deployments import events, gates, queue
from portal.deployments import rollback as rollbacks
from portal.deployments import rollout as rollouts
from portal.deployments.models import Deployment
from portal.deployments.releases import went_live
from portal.functions import AuditEvent, Environment, Function

FULL_SHA = re.compile(r"^[0-9a-f]{40}$")


def _actor(user, trigger: str) -> dict:
    return {"actor": user, "actor_label": user.get_username() if user else trigger}


def environment_named(function: Function, name: str = "", *, deploying: bool = False) -> Environment:
    """The environment a request names. Unnamed: a deploy goes to the first (where pushes
    deploy); anything else to the only one, and a function with several must name it
    (`environment-required`). A deploy to any but the first is refused (`promote-instead`):
    what reaches a later environment is the digest verified before it, never a new build."""
    environments = list(function.environments.in_order())
    if name:
        found = next((env for env in environments if env.name == name), None)
        if found is None:
            known = ", ".join(env.name for env in environments)
            raise RequestRefused(f"{function.name} has no environment {name!r} (it has {known})", status=404,
                                 code="environment-unknown")
    elif deploying or len(environments) == 1:
        found = environments[0]
    else:
        raise RequestRefused(f"{function.name} has {len(environments)} environments "
                             f"({', '.join(env.name for env in environments)}): name one", status=400,
                             code="environment-required")
    if deploying and found.position != environments[0].position:
        raise RequestRefused(f"{found.name} is not where {function.name} deploys: pushes deploy to "
                             f"{environments[0].name}, and a release reaches {found.name} by promotion of the "
                             "digest verified before it", status=400, code="promote-instead")
    return found


def request_deploy(function: Function, *, trigger: str, user=None, ref: str = "", commit: str = "",
                   environment: str = "") -> Deployment:
    """Queue a deploy of `ref` (branch/tag) or `commit` (full SHA); default: the function's branch.
    `environment`: its name, which may only be the first's (environment_named)."""
    if function.is_archived:
        raise RequestRefused(f"{function.name} is archived: it accepts no deploys")
    environment_named(function, environment, deploying=True)
    if ref and commit:
        raise RequestRefused("give a ref or a commit, not both", status=400)
    if commit and not FULL_SHA.match(commit):
        raise RequestRefused(f"{commit!r} is not a full 40-character commit SHA", status=400)
    try:
        validate_ref(ref or commit or function.branch)
    except Exception as exc:
        raise RequestRefused(str(getattr(exc, "message", exc)), status=400) from None
    return queue_deploy(function, trigger=trigger, user=user, ref=ref or commit or function.branch, commit=commit)


def queue_deploy(function: Function, *, trigger: str, user, ref: str, commit: str, supersede: bool = True,
                  locked: bool = False, **audit) -> Deployment:
    # A freeze refuses it up front where the environment says so; otherwise it builds and
    # pushes, and its gates are asked before its update step (gates.py).
    gates.refuse_if_frozen(function.first_environment, "deploy")
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
    if not FULL_SHA.match(commit):
        raise RequestRefused(f"{commit!r} is not a full 40-character commit SHA")
    return queue_deploy(function, trigger=Deployment.Trigger.WEBHOOK, user=None, ref=ref, commit=commit,
                         supersede=False, locked=True, delivery=delivery)


def rollback_target(function: Function, *, to: str = "", environment=None) -> Deployment:
    """The successful deployment to put back in `environment` (default: the function's
    first): by version number, by commit SHA prefix, or (default) the one live there
    before the current one."""
    environment = environment or function.first_environment
    done = went_live(environment).filter(build__isnull=False).select_related("build")
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
    several = function.environments.in_order().count() > 1
    where = f"{function.name} ({environment.name})" if several else function.name
    if live is None:
        raise RequestRefused(f"{where} has no successful deployment to roll back from")
    target = done.exclude(version=live.version).first()
    if target is None:
        raise RequestRefused(f"{where} has no earlier release than version {live.version}")
    return target


def request_rollback(function: Function, *, trigger: str, user=None, to: str = "",
                     environment: str = "") -> Deployment:
    """Queue a rollback of one environment (named, or the only one); it supersedes that
    environment's queued requests, stops its running deploys before their shift, and
    pauses its auto-deploy (or automatic promotion into it) until someone resumes it."""
    if function.is_archived:
        raise RequestRefused(f"{function.name} is archived: it accepts no rollbacks")
    chosen = environment_named(function, environment)
    with transaction.atomic():  # the function row first, then the environment's, as everywhere (queue.py)
        # The target is read under the lock: retention marks images gone under it too.
        Function.objects.select_for_update().get(pk=function.pk)
        environment = Environment.objects.select_for_update().get(pk=chosen.pk)
        rolling = rollouts.current(environment)
        if rolling is not None and not to:  # the stable version, not the release before it
            to = rolling.stable_version
        target = rollback_target(function, to=to, environment=environment)
        if target.build and target.build.image_gone_at:
            raise RequestRefused(f"the image of version {target.version} is gone from ECR: deploy its commit again")
        rollback = queue.request(
            function, environment=environment, locked=True, kind=Deployment.Kind.ROLLBACK, trigger=trigger,
            requested_by=user,
            ref=target.commit_sha, commit_sha=target.commit_sha, build=target.build, target_version=target.version,
            commit_message=target.commit_message, commit_author=target.commit_author,
        )
        who = user.get_username() if user else trigger
        Environment.objects.filter(pk=environment.pk).update(  # its own environment's auto-deploy only
            paused_reason=f"rolled back to version {target.version} by {who}; resume auto-deploy when fixed")
        # Never blocked: its audit entry says which gates it went past (a freeze, approvals, a soak).
        AuditEvent.record("deployment.rollback_requested", function=function, deployment=rollback.pk,
                          environment=environment.name, to_version=target.version, commit=target.commit_sha,
                          passed_gates=gates.passed_by(environment), **_actor(user, trigger))
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
        transaction.on_commit(lambda: queue.dispatch(deployment.environment_id))
        events.status_changed.send(Deployment, deployment=deployment)  # canceled
    AuditEvent.record("deployment.cancel_requested", function=deployment.function, deployment=deployment.pk,
                      **_actor(user, trigger))
    return True


def resume_auto_deploy(function: Function, *, user=None, trigger: str = "cli", environment: str = "") -> None:
    """Lift the pause a rollback put on one environment (named, or the only one): pushes
    deploy to the first again, automatic promotion reaches a later one again."""
    chosen = environment_named(function, environment)
    Environment.objects.filter(pk=chosen.pk).update(paused_reason="")
    AuditEvent.record("function.auto_deploy_resumed", function=function, environment=chosen.name,
                      **_actor(user, trigger))
    events.resumed.send(Deployment, function=function, by=user.get_username() if user else trigger,
                        environment=chosen)
