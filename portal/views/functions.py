"""Functions: the list, register and edit, the function page, deploy, rollback,
resume, archive, members, webhook tokens."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import OuterRef, Subquery
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from deploy import source
from portal import deployments, functions, hooks, sources
from portal.core import errors
from portal.deployments.forms import DeployForm
from portal.feedback import drift
from portal.functions import access
from portal.functions.forms import FunctionForm, MemberForm, RoleForm
from portal.hooks.forms import WebhookTokenForm
from portal.models import Deployment, Environment, Function, Membership, WebhookDelivery
from portal.views import charts, promotions, refusals

Status = Deployment.Status
PAGE_SIZE = 25

# A change the domain refuses comes back to the function's page, saying why.
_refusal_shown = refusals.shown_on("portal-function", "name")



@require_GET
@login_required
def function_list(request):
    archived = request.GET.get("archived") == "1"
    query = request.GET.get("q", "").strip()[:64]
    visible = access.visible_functions(request.user).filter(archived_at__isnull=not archived)
    if query:
        visible = visible.filter(name__icontains=query)
    # The page of ids first, then the per-row subqueries for those rows only: SQLite (and
    # Postgres without a fitting index) would otherwise compute them for every function.
    page = Paginator(visible.order_by("name").values_list("pk", flat=True), PAGE_SIZE).get_page(
        request.GET.get("page"))
    newest = Deployment.objects.filter(function=OuterRef("pk")).order_by("-created_at", "-pk")
    # What is live in, and the pause of, the first environment (the one pushes deploy to).
    first = Environment.objects.in_order().filter(function=OuterRef("pk")).order_by("position")
    live = deployments.went_live(OuterRef("first_environment_id"))
    shown = Function.objects.filter(pk__in=list(page)).annotate(
        first_environment_id=Subquery(first.values("pk")[:1]),
        paused_reason=Subquery(first.values("paused_reason")[:1])).annotate(
        live_id=Subquery(live.values("pk")[:1]), latest_id=Subquery(newest.values("pk")[:1])).order_by("name")
    wanted = {pk for f in shown for pk in (f.live_id, f.latest_id) if pk}
    found = Deployment.objects.select_related("build", "requested_by").in_bulk(wanted)
    rows = [(f, found.get(f.live_id), found.get(f.latest_id)) for f in shown]
    return render(request, "portal/function_list.html", {
        "page": page, "rows": rows, "query": query, "archived": archived,
        "can_register": access.can_register(request.user)})


@require_http_methods(["GET", "POST"])
@login_required
def function_register(request):
    if not access.can_register(request.user):
        raise PermissionDenied("only staff may register functions here")
    form = FunctionForm(request.POST or None, user=request.user,
                        initial={"ecr_repository": _first(settings.SLIPWAY_ALLOWED_ECR_PREFIXES),
                                 "lambda_name": _first(settings.SLIPWAY_ALLOWED_LAMBDA_PREFIXES)})
    if request.method == "POST" and form.is_valid():
        function = functions.register_function(form, user=request.user)
        messages.success(request, f"{function.name} registered. Its first deploy creates the ECR repository "
                                  "and the Lambda if they do not exist.")
        return redirect("portal-function", name=function.name)
    return render(request, "portal/function_form.html", {"form": form, "creating": True},
                  status=400 if form.errors else 200)


def _first(values: list[str]) -> str:
    return values[0] if values else ""


@require_http_methods(["GET", "POST"])
@login_required
def function_edit(request, name):
    function = access.function_for(request.user, name, access.ADMIN)
    form = FunctionForm(request.POST or None, instance=function, user=request.user)
    if request.method == "POST" and form.is_valid():
        functions.update_function(form, user=request.user)
        messages.success(request, "Saved. Lambda gets the new configuration at the next deploy.")
        return redirect("portal-function", name=function.name)
    return render(request, "portal/function_form.html", {"form": form, "function": function, "creating": False},
                  status=400 if form.errors else 200)


@require_GET
@login_required
def function_detail(request, name):
    function = access.function_for(request.user, name)
    environment = function.first_environment
    live = deployments.live_deployment(environment)
    history = (Deployment.objects.filter(function=function).select_related("build", "requested_by", "environment")
               .prefetch_related("steps").order_by("-created_at", "-pk"))
    page = Paginator(history, 20).get_page(request.GET.get("page"))
    environments = list(function.environments.in_order())
    serving = {}  # environment id -> the version its alias serves
    release_cards = []
    for each in environments:
        went = list(deployments.went_live(each).filter(kind__in=_RELEASE_KINDS).select_related("build")[:30])
        now = deployments.live_deployment(each) if each.pk != environment.pk else live
        serving[each.pk] = now.version if now else None
        if went:
            release_cards.append({"environment": each, "charts": charts.release_charts(went)})
    for d in page:  # a version is a version of one environment's Lambda: roll back within it
        d.may_roll_back = (d.status == Status.SUCCEEDED and bool(d.version) and serving.get(d.environment_id)
                           is not None and d.version != serving[d.environment_id])
    members = (Membership.objects.filter(function=function).select_related("user").order_by("user__username")
               if access.can(request.user, function, access.ADMIN) else [])
    return render(request, "portal/function_detail.html", {
        **promotions.columns_context(request, function),
        "function": function, "environment": environment, "environments": environments, "live": live,
        "paused": [each for each in environments if each.paused_reason],
        "page": page, "releases": bool(release_cards), "release_cards": release_cards, "members": members,
        "deploy_form": DeployForm(initial={"ref": function.branch}),
        "member_form": MemberForm(), "roles": Membership.Role.choices,
        "may_deploy": access.can(request.user, function, access.DEPLOY) and not function.is_archived,
        "may_admin": access.can(request.user, function, access.ADMIN),
        "may_restore": access.can_restore(request.user),
        "hook_url": request.build_absolute_uri(reverse("portal-webhook-gitlab", args=[function.name])),
        "last_delivery": WebhookDelivery.objects.filter(function=function).order_by("-received_at", "-pk").first(),
        "reconcile_interval": settings.SLIPWAY_RECONCILE_INTERVAL,
        "drift": drift.current(function, environment),
        "drifts": [{"environment": each, "drift": found} for each in environments
                   if (found := drift.current(function, each))],
        "attempts": (function.notification_attempts.select_related("deployment")[:10]
                     if access.can(request.user, function, access.ADMIN) else []),
    })


_RELEASE_KINDS = (Deployment.Kind.DEPLOY, Deployment.Kind.REDEPLOY, Deployment.Kind.PROMOTION)


def _mirror(function: Function):
    return sources.mirror_for(function)  # a private repository's own mirror


@require_http_methods(["GET", "POST"])
@login_required
def function_deploy(request, name):
    """GET: the confirmation, with the commits between what is live and the target
    (from the last fetch; nothing is fetched while rendering). POST: queue it."""
    function = access.function_for(request.user, name, access.DEPLOY)
    form = DeployForm(request.POST or request.GET or None, initial={"ref": function.branch})
    if request.method == "POST" and form.is_valid():
        ref = form.cleaned_data["ref"]
        is_sha = len(ref) == 40 and all(c in "0123456789abcdef" for c in ref)
        try:
            deployment = deployments.request_deploy(function, trigger=Deployment.Trigger.UI, user=request.user,
                                                 ref="" if is_sha else ref, commit=ref if is_sha else "")
        except errors.RequestRefused as exc:
            form.add_error("ref", str(exc))
        else:
            messages.success(request, f"Deployment #{deployment.pk} queued.")
            if notice := deployments.queue_notice(deployment):
                messages.warning(request, notice[:1].upper() + notice[1:] + ".")
            return redirect("portal-deployment", pk=deployment.pk)
    commits, target = None, None
    live = deployments.live_deployment(function.first_environment)
    if form.is_bound and form.is_valid():
        mirror = _mirror(function)
        target = source.resolve_cached(mirror, form.cleaned_data["ref"]) if mirror else None
        if target and live and live.commit_sha:
            commits = source.commits_between(mirror, live.commit_sha, target)
    return render(request, "portal/deploy_confirm.html", {
        "function": function, "form": form, "live": live, "target": target, "commits": commits},
        status=400 if form.errors else 200)


@require_http_methods(["GET", "POST"])
@login_required
def function_rollback(request, name, pk):
    function = access.function_for(request.user, name, access.DEPLOY)
    # The release names its environment: a version is a version of that environment's Lambda.
    release = get_object_or_404(Deployment.objects.select_related("build", "environment"), pk=pk,
                                function=function, status=Status.SUCCEEDED)
    environment = release.environment
    live = deployments.live_deployment(environment)
    error = ""
    if request.method == "POST":
        try:
            rollback = deployments.request_rollback(function, trigger=Deployment.Trigger.UI, user=request.user,
                                                 to=release.version, environment=environment.name)
        except errors.RequestRefused as exc:
            error = str(exc)
        else:
            messages.success(request, f"Rollback #{rollback.pk} of {environment.name} to version {release.version} "
                                      f"queued; {_paused_what(environment)} is paused until someone resumes it.")
            if notice := deployments.queue_notice(rollback):
                messages.warning(request, notice[:1].upper() + notice[1:] + ".")
            return redirect("portal-deployment", pk=rollback.pk)
    mirror = _mirror(function)
    going = (source.commits_between(mirror, release.commit_sha, live.commit_sha)
             if mirror and live and release.commit_sha else None)
    return render(request, "portal/rollback_confirm.html", {
        "function": function, "environment": environment, "release": release, "live": live, "going": going,
        "error": error, "several": function.environments.in_order().count() > 1,
        "first_position": function.first_environment.position},
        status=409 if error else 200)


@require_POST
@login_required
@_refusal_shown
def function_resume(request, name):
    """Lift one environment's pause (the form names it; a function with one environment need not)."""
    function = access.function_for(request.user, name, access.DEPLOY)
    chosen = request.POST.get("environment", "").strip()[:32]
    deployments.resume_auto_deploy(function, user=request.user, trigger=Deployment.Trigger.UI, environment=chosen)
    environment = deployments.environment_named(function, chosen)
    several = function.environments.in_order().count() > 1
    messages.success(request, (f"{_paused_what(environment).capitalize()} of {environment.name} resumed." if several
                               else "Auto-deploy resumed."))
    return redirect("portal-function", name=function.name)


def _paused_what(environment: Environment) -> str:
    """What a rollback pauses: pushes deploy to the first environment, promotions reach the others."""
    return "auto-deploy" if environment.position == environment.function.first_environment.position \
        else "automatic promotion"


@require_POST
@login_required
def function_reconcile(request, name):
    """Check for missed pushes now. The ls-remote runs here, in the request, bounded by
    SLIPWAY_RECONCILE_TIMEOUT and outside any transaction (no lock is held while the
    git host answers): the user asked a question and gets its answer on the next page,
    with no task and no polling. The periodic task does the same for every function."""
    function = access.function_for(request.user, name, access.DEPLOY)
    found = deployments.reconcile(function, user=request.user, trigger=Deployment.Trigger.UI)
    if found.outcome == "deployed":
        messages.success(request, f"Missed push found: {found.message}.")
        return redirect("portal-deployment", pk=found.deployment.pk)
    if found.outcome == "error":
        messages.error(request, f"Check for missed pushes failed ({found.code}): {found.message}")
    else:
        messages.info(request, f"Checked for missed pushes: {found.outcome.replace('-', ' ')} — {found.message}.")
    return redirect("portal-function", name=function.name)


@require_POST
@login_required
def function_archive(request, name):
    function = access.function_for(request.user, name, access.ADMIN)
    functions.archive_function(function, user=request.user)
    messages.success(request, f"{function.name} archived: it accepts no deploys or webhooks.")
    return redirect("portal-functions")


@require_POST
@login_required
def function_restore(request, name):
    function = access.function_for(request.user, name, access.VIEW)
    if not access.can_restore(request.user):
        raise PermissionDenied("only staff restore archived functions")
    functions.restore_function(function, user=request.user)
    messages.success(request, f"{function.name} restored.")
    return redirect("portal-function", name=function.name)


def _member(function: Function, user_id: int):
    membership = Membership.objects.filter(function=function, user_id=user_id).select_related("user").first()
    if membership is None:
        raise Http404("no such member")
    return membership.user


def _refused(request, function: Function, exc: Exception):
    messages.error(request, str(exc))
    return redirect("portal-function", name=function.name)


@require_POST
@login_required
@_refusal_shown
def member_add(request, name):
    function = access.function_for(request.user, name, access.ADMIN)
    form = MemberForm(request.POST)
    if not form.is_valid():
        return _refused(request, function, "; ".join(e for errors in form.errors.values() for e in errors))
    return _set_role(request, function, form.cleaned_data["user"], form.cleaned_data["role"])


@require_POST
@login_required
@_refusal_shown
def member_role(request, name, user_id):
    function = access.function_for(request.user, name, access.ADMIN)
    member = _member(function, user_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        return _refused(request, function, "choose viewer, deployer, approver or owner")
    return _set_role(request, function, member, form.cleaned_data["role"])


def _set_role(request, function: Function, member, role: str):
    """Adding a member and changing one's role are the same change: `member` gets `role`."""
    functions.set_member(function, member, role, user=request.user)
    messages.success(request, f"{member.get_username()} is now {role}.")
    return redirect("portal-function", name=function.name)


@require_POST
@login_required
@_refusal_shown
def member_remove(request, name, user_id):
    function = access.function_for(request.user, name, access.ADMIN)
    member = _member(function, user_id)
    functions.remove_member(function, member, user=request.user)
    messages.success(request, f"{member.get_username()} removed.")
    if member == request.user and not access.can(request.user, function, access.VIEW):
        return redirect("portal-functions")
    return redirect("portal-function", name=function.name)


@require_POST
@login_required
@_refusal_shown
def member_transfer(request, name, user_id):
    function = access.function_for(request.user, name, access.ADMIN)
    member = get_object_or_404(get_user_model(), pk=user_id, is_active=True)
    functions.transfer_ownership(function, member, user=request.user)
    messages.success(request, f"{member.get_username()} now owns {function.name}; you are a deployer.")
    return redirect("portal-function", name=function.name)


@require_POST
@login_required
def webhook_secret_token(request, name):
    return _webhook_token(request, name, "secret")


@require_POST
@login_required
def webhook_signing_token(request, name):
    return _webhook_token(request, name, "signing")


@_refusal_shown
def _webhook_token(request, name: str, kind: str):
    """Generate (rotate) or remove a webhook token. A new token is shown on this
    response only: never stored in clear, never put in a message or a redirect."""
    function = access.function_for(request.user, name, access.ADMIN)
    form = WebhookTokenForm(request.POST)
    what = "secret token" if kind == "secret" else "signing token"
    if not form.is_valid():
        return _refused(request, function, "choose generate or remove")
    if form.cleaned_data["action"] == "remove":
        if hooks.remove_webhook_token(function, kind, user=request.user):
            messages.success(request, f"The webhook {what} is removed; GitLab deliveries that send it are refused"
                             + ("" if Function.objects.get(pk=function.pk).hook_keys.configured
                                else " — with no token left, every delivery is refused") + ".")
        return redirect("portal-function", name=function.name)
    if function.is_archived:
        return _refused(request, function, f"{function.name} is archived: it accepts no webhooks")
    token = (hooks.set_webhook_secret if kind == "secret" else hooks.set_webhook_signing_token)(
        function, user=request.user)
    response = render(request, "portal/webhook_token.html", {
        "function": function, "token": token, "kind": kind, "what": what,
        "hook_url": request.build_absolute_uri(reverse("portal-webhook-gitlab", args=[function.name]))})
    response["Cache-Control"] = "no-store"
    return response
