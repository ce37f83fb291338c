"""Environments on the function page: one column per environment in promotion order
(what is live, what waits, what the previous environment has that this one lacks),
the live fragment htmx polls, and the Promote confirmation.

Everything shown comes from the rows Slipway keeps (deployments, their builds and
commit data): no git or AWS call happens while a page renders.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from portal import deployments
from portal.core import errors
from portal.deployments import freezes, rollout, rollout_summary, strategies
from portal.functions import access
from portal.models import Deployment, Environment, Function

Status = Deployment.Status
AHEAD_SHOWN = 10  # releases listed between two environments; the rest are counted
ACTIVE_POLL, IDLE_POLL = 2, 15  # seconds between htmx polls of the columns


@dataclass
class Column:
    """One environment as its column shows it."""

    environment: Environment
    previous: Environment | None
    live: Deployment | None
    digest: str
    same_as: str  # the previous environment's name when both serve the same digest
    soaking: list[Deployment]
    active: list[Deployment]  # queued or running, oldest first
    ahead: list[Deployment] = field(default_factory=list)  # releases of `previous` this one lacks, newest first
    ahead_more: int = 0
    ahead_known: bool = True  # False: `previous` never served what this one serves, by the rows kept
    rollback_to: Deployment | None = None
    promote_from: Deployment | None = None  # what a Promote would ship: live in `previous`
    edit_url: str = ""  # the environment's settings page, once the environments pages exist
    freeze: freezes.Shown | None = None  # the freeze holding it now, else the next one
    rollout: dict | None = None  # its canary or linear rollout while one holds the alias (rollout_summary)

    @property
    def rollout_plan(self) -> str:
        """How a verified version takes its alias, in words, with the preset's name if it is one."""
        env = self.environment
        preset = strategies.preset_of(env.rollout_strategy, env.rollout_percent, env.rollout_minutes)
        described = strategies.describe(env.rollout_strategy, env.rollout_percent, env.rollout_minutes)
        return f"{described} ({preset})" if preset else described

    @property
    def is_first(self) -> bool:
        return self.previous is None


def _digest(deployment: Deployment | None) -> str:
    return deployments.deployment_digest(deployment) if deployment else ""


def _ahead(previous: Environment, live: Deployment | None) -> tuple[list[Deployment], int, bool]:
    """The releases that went live in `previous` after the one `live` serves (matched by
    digest, then by commit), distinct by commit, newest first: what a promotion would add."""
    releases, seen = [], set()
    found = False
    for done in deployments.went_live(previous).select_related("build", "requested_by")[:200]:
        if live is not None and (_digest(done) == _digest(live) or
                                 (live.commit_sha and done.commit_sha == live.commit_sha)):
            found = True
            break
        key = done.commit_sha or _digest(done)
        if key not in seen:
            seen.add(key)
            releases.append(done)
    known = found or live is None
    return releases[:AHEAD_SHOWN], max(len(releases) - AHEAD_SHOWN, 0), known


def columns(function: Function) -> list[Column]:
    """Every environment of `function`, first (where pushes deploy) to last."""
    environments = list(function.environments.in_order())
    waiting = _waiting(function)
    shown: list[Column] = []
    previous: Column | None = None
    for environment in environments:
        live = deployments.live_deployment(environment)
        digest = _digest(live)
        column = Column(
            environment=environment, previous=previous.environment if previous else None, live=live, digest=digest,
            same_as=previous.environment.name if previous and digest and digest == previous.digest else "",
            soaking=[d for d in waiting if d.environment_id == environment.pk and d.status == Status.SOAKING],
            active=[d for d in waiting if d.environment_id == environment.pk and d.status != Status.SOAKING])
        if previous is not None:
            column.ahead, column.ahead_more, column.ahead_known = _ahead(previous.environment, live)
            column.promote_from = previous.live
        column.freeze = freezes.current_or_next(environment)
        if (holding := rollout.current(environment)) is not None:
            column.rollout = {**rollout_summary.summary(holding), "deployment": holding.deployment}
        if live is not None:
            column.rollback_to = (deployments.went_live(environment).filter(build__isnull=False)
                                  .exclude(version=live.version).select_related("build").first())
        shown.append(column)
        previous = column
    return shown


def _waiting(function: Function) -> list[Deployment]:
    """Soaking, queued and running deployments of `function`, oldest first."""
    return list(Deployment.objects.filter(function=function)
                .exclude(status__in=Deployment.TERMINAL)
                .select_related("build", "requested_by", "upstream__environment").order_by("created_at", "pk"))


def columns_context(request, function: Function) -> dict:
    shown = columns(function)
    for column in shown:
        column.edit_url = reverse("portal-environment-edit", args=[function.name, column.environment.name])
    new_url = reverse("portal-environment-new", args=[function.name])
    active = any(column.soaking or column.active for column in shown)
    return {"function": function, "columns": shown, "poll_seconds": ACTIVE_POLL if active else IDLE_POLL,
            "may_deploy": access.can(request.user, function, access.DEPLOY) and not function.is_archived,
            "may_admin": access.can(request.user, function, access.ADMIN), "new_environment_url": new_url}


@require_GET
@login_required
def environments_state(request, name):
    """The columns alone: what htmx polls, every 2 s while something waits or runs, else every 15 s."""
    function = access.function_for(request.user, name)
    return render(request, "portal/_environments.html", columns_context(request, function))


@require_http_methods(["GET", "POST"])
@login_required
def environment_promote(request, name, env):
    """GET: exactly what would ship (the digest live in the previous environment, its commit,
    what the target serves now). POST: request_promotion, naming that digest as the release,
    so a change upstream between the two is refused instead of shipping something unseen."""
    function, environment = access.environment_for(request.user, name, env, access.DEPLOY)
    previous = deployments.previous_environment(environment)
    live = deployments.live_deployment(environment)
    upstream = deployments.live_deployment(previous) if previous else None
    error, status = "", 200
    if previous is None:
        error, status = (f"{environment.name} is where {function.name} deploys: deploy to it instead "
                         "(deploy-instead)"), 400
    elif upstream is None:
        error, status = f"nothing is live in {previous.name} to promote (not-verified-upstream)", 409
    if request.method == "POST" and previous is not None:
        release = request.POST.get("release", "").strip()[:100]
        try:
            promotion = deployments.request_promotion(function, environment, trigger=Deployment.Trigger.UI,
                                                      user=request.user, release=release)
        except errors.RequestRefused as exc:
            error, status = f"{exc.message} ({exc.code})", exc.status
        else:
            messages.success(request, f"Promotion #{promotion.pk} of {_digest(promotion)[:19]} to "
                                      f"{environment.name} queued.")
            if notice := deployments.queue_notice(promotion):
                messages.warning(request, notice[:1].upper() + notice[1:] + ".")
            # Back to the columns: they follow the promotion live, and link to its page.
            return redirect(reverse("portal-function", args=[function.name]) + "#environments")
    return render(request, "portal/promote_confirm.html", {
        "function": function, "environment": environment, "previous": previous, "live": live,
        "upstream": upstream, "digest": _digest(upstream), "same": bool(upstream and live and
                                                                      _digest(upstream) == _digest(live)),
        "ahead": _ahead(previous, live) if previous else ([], 0, True), "error": error,
        "may_promote": previous is not None and upstream is not None}, status=status)
