"""The test console: send an image to a deployed version, see its boxes; compare two
targets; golden cases. Deployers and owners invoke, viewers see the history, owners
keep and delete golden cases."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import cache_control
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from portal import console, deployments
from portal.console import boxes
from portal.console.forms import ConsoleForm, GoldenCaseForm
from portal.core.errors import RequestRefused
from portal.deployments import rollout
from portal.functions import access
from portal.models import ConsoleImage, ConsoleRun, Environment, GoldenCase
from portal.views import refusals

HISTORY = 20
# One colour per label, in the order labels first appear; readable on photos.
PALETTE = ["#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#af52de", "#ff9500", "#00c7be", "#ff2d55"]
STATE_COLOURS = {"same": "#34c759", "moved": "#ff9500", "unmatched": "#ff3b30"}


def _environment(function, name: str) -> Environment:
    """The environment `?environment=` names (default: the first, where pushes deploy): the
    console targets its Lambda's alias and versions."""
    if not name:
        return function.first_environment
    preview = function.environments.filter(preview=True, name=name[:32]).first()
    if preview is not None:  # not in the promotion order, but its aliases are targets
        return preview
    try:
        return deployments.environment_named(function, name[:32])
    except RequestRefused:
        raise Http404("no such environment") from None


def rollout_targets(environment: Environment, targets: list[tuple[str, str]]) -> tuple[list, dict, object]:
    """During a rollout the alias serves two versions (and the local plane ignores the weights):
    the console then sends to the canary and the stable version side by side, each named by its
    share. (targets relabelled, the form's initial target and compare_with, the rollout or None)."""
    holding = rollout.current(environment)
    if holding is None:
        return targets, {"target": environment.alias}, None
    share = round(holding.weight * 100)
    names = {holding.new_version: f"version {holding.new_version} (canary, {share} %)",
             holding.stable_version: f"version {holding.stable_version} (stable, {100 - share} %)"}
    relabelled = [(value, names.get(value, label)) for value, label in targets]
    relabelled += [(version, label) for version, label in names.items() if version not in dict(targets)]
    return relabelled, {"target": holding.new_version, "compare_with": holding.stable_version}, holding


def _initial(request, environment, targets) -> dict:
    """The form's first choices: the target the link named (Try in console on the Previews
    page), else the alias; a preview is compared with what is live."""
    values = [value for value, _ in targets]
    asked = request.GET.get("target", "")
    initial = {"target": asked if asked in values else values[0] if environment.preview else environment.alias,
               "detector": "face"}
    if environment.preview and ":" in values[-1]:
        initial["compare_with"] = values[-1]
    return initial


def _context(request, function, form=None, error=None, environment=None) -> dict:
    environment = environment or _environment(function, request.GET.get("environment", ""))
    targets, initial, holding = rollout_targets(environment, deployments.targets(environment))
    may_invoke = access.can(request.user, function, access.DEPLOY) and not function.is_archived
    if may_invoke and form is None and targets:
        chosen = _initial(request, environment, targets) if holding is None else {**initial, "detector": "face"}
        form = ConsoleForm(targets=targets, initial=chosen)
    return {
        "rollout": holding,
        "function": function, "environment": environment, "environments": list(function.environments.all()),
        "form": form if may_invoke else None, "targets": targets,
        "error": error,
        "may_invoke": may_invoke, "may_admin": access.can(request.user, function, access.ADMIN),
        "history": ConsoleRun.objects.filter(function=function).select_related("user", "environment")[:HISTORY],
        "golden_cases": GoldenCase.objects.filter(function=function).select_related("created_by", "image")
        .defer("image__data"),
        "samples": console.SAMPLES, "max_upload": settings.SLIPWAY_CONSOLE_MAX_UPLOAD,
        "max_pixels": f"{console.pixel_cap(function):,}",
    }


@csrf_exempt  # checked by _invoke once the upload handler is in place (Django's documented pattern)
@require_http_methods(["GET", "POST"])
@login_required
def console_page(request, name):
    if request.method == "POST":
        request.upload_handlers = [console.CappedUpload(request)]  # before anything reads the body
        return _invoke(request, name)
    function = access.function_for(request.user, name)
    return render(request, "portal/console.html", _context(request, function))


@csrf_protect
def _invoke(request, name):
    """The console's one handler: a ConsoleError is shown in the page's error box, with its status."""
    function = access.function_for(request.user, name, access.DEPLOY)
    environment = _environment(function, request.GET.get("environment", ""))  # the form's action names it
    targets = deployments.targets(environment)
    form = None
    try:
        if function.is_archived:
            raise console.ConsoleError("archived", f"{function.name} is archived", 409)
        if not targets:
            raise console.ConsoleError("nothing-deployed", f"{function.name} has no deployment in "
                                       f"{environment.name} yet: deploy or promote to it first, then try the "
                                       "console", 409)
        upload = request.upload_handlers[0]
        form = ConsoleForm(request.POST, request.FILES, targets=targets)  # reads the body through the handler
        if upload.too_large:
            raise console.ConsoleError("upload-too-large", f"the upload is over the "
                                       f"{settings.SLIPWAY_CONSOLE_MAX_UPLOAD:,} byte cap", 413)
        if not form.is_valid():
            message = "; ".join(f"{'' if field == '__all__' else field + ': '}{error}"
                                for field, errors in form.errors.items() for error in errors)
            raise console.ConsoleError("invalid-input", message, 400)
        checked = _image(function, form)
        chosen = _resolved(environment, [form.cleaned_data["target"]] + (
            [form.cleaned_data["compare_with"]] if form.cleaned_data.get("compare_with") else []))
        run = console.run(function, request.user, checked, form.options(), chosen, environment=environment)
    except console.ConsoleError as exc:
        return render(request, "portal/console.html", _context(request, function, form, error={
            "code": exc.code, "message": exc.message}, environment=environment), status=exc.status)
    return redirect("portal-console-run", name=function.name, pk=run.pk)


def _resolved(environment: Environment, values: list[str]) -> list[tuple[Environment, str]]:
    try:
        return [deployments.resolve_target(environment, value) for value in values]
    except ValueError as exc:  # an environment renamed since the form was shown
        raise console.ConsoleError("no-such-target", str(exc), 404) from None


def _image(function, form: ConsoleForm) -> console.CheckedImage:
    data = form.cleaned_data
    if data.get("sample"):
        return console.sample(data["sample"])
    if data.get("image_id") is not None:
        stored = ConsoleImage.objects.filter(function=function, pk=data["image_id"]).first()
        if stored is None:
            raise console.ConsoleError("image-gone", "that image is no longer kept: upload it again")
        return console.checked_from_store(stored)
    upload = data["image"]
    return console.check_image(upload.read(), upload.name, max_pixels=console.pixel_cap(function))


def drawn(run: ConsoleRun, matching: boxes.Matching | None = None, side: str = "left") -> list[dict]:
    """The run's boxes as the page draws them: colour by label (or by match state in
    compare mode), and where the label sits."""
    labels: list[str] = []
    shown = []
    size = max(12, round(max(run.image_width, run.image_height) / 45))
    for index, box in enumerate(run.boxes):
        label = str(box.get("label", ""))
        if label not in labels:
            labels.append(label)
        state = matching.state_of(side, index) if matching else ""
        colour = STATE_COLOURS[state] if state else PALETTE[labels.index(label) % len(PALETTE)]
        above = box["y"] >= size + 4
        shown.append({**box, "index": index, "colour": colour, "state": state, "font": size,
                      "text_y": box["y"] - 4 if above else box["y"] + size, "text_x": box["x"] + (0 if above else 3),
                      "score": box.get("score", 0)})
    return shown


def _timings(run: ConsoleRun) -> list[tuple[str, str]]:
    local = bool(settings.AWS_ENDPOINT_URL)
    unmeasured = "not measured locally" if local else "not reported"

    def ms(value):
        return f"{value:.1f} ms" if value is not None else unmeasured

    rows = [("round trip: portal → Lambda → portal", f"{run.round_trip_ms:.1f} ms")]
    rows += [(f"function: {name}", f"{value} ms") for name, value in run.function_timings.items()]
    rows.append(("invoke duration (REPORT)", ms(run.duration_ms)))
    if run.init_ms is not None:
        rows.append(("cold start: init duration", f"{run.init_ms:.1f} ms"))
    else:
        rows.append(("cold start: init duration", "warm start: no init" if run.duration_ms is not None
                     else unmeasured))
    rows.append(("billed duration", ms(run.billed_ms)))
    rows.append(("memory used", f"{run.memory_used_mb} MB" if run.memory_used_mb is not None else unmeasured))
    return rows


def _side(run: ConsoleRun, matching=None, side="left") -> dict:
    scores = [b.get("score", 0) for b in run.boxes]
    return {"run": run, "boxes": drawn(run, matching, side), "timings": _timings(run),
            # The slider reaches one past the best score: every box can be filtered out.
            "max_score": max(scores, default=0) + 1, "min_score": min(scores, default=0),
            "image_url": reverse("portal-console-image", args=[run.function.name, run.image_id])
            if run.image_id else ""}


@require_GET
@login_required
def console_run(request, name, pk):
    function = access.function_for(request.user, name)
    run = get_object_or_404(ConsoleRun.objects.select_related("user", "environment"), pk=pk, function=function)
    partner = run.partner
    if partner and run.compared_with_id:  # always show the first request on the left
        run, partner = partner, run
    sides, matching = [], None
    if partner:
        matching = boxes.match(run.boxes, partner.boxes, function.golden_iou)
        sides = [_side(run, matching, "left"), _side(partner, matching, "right")]
    else:
        sides = [_side(run)]
    # Sending again goes to the environment the run went to (unless the page names another).
    environment = (_environment(function, request.GET["environment"]) if request.GET.get("environment")
                   else run.environment or function.first_environment)
    context = _context(request, function, environment=environment)
    if context["form"] is not None and run.image_id:
        context["form"] = ConsoleForm(targets=context["targets"], initial={
            "image_id": run.image_id, "target": run.target, "compare_with": partner.target if partner else "",
            **{k: ("x".join(map(str, v)) if isinstance(v, list) else v) for k, v in run.options.items()}})
    context.update({"run": run, "partner": partner, "sides": sides, "matching": matching,
                    "golden_form": GoldenCaseForm(initial={"name": run.image_name}),
                    "may_save_golden": context["may_admin"] and run.image_id
                    and run.outcome == ConsoleRun.Outcome.OK})
    return render(request, "portal/console_run.html", context)


@require_GET
@login_required
@cache_control(private=True, max_age=3600)
def console_image(request, name, pk):
    function = access.function_for(request.user, name)
    image = get_object_or_404(ConsoleImage, pk=pk, function=function)
    response = HttpResponse(bytes(image.data), content_type=image.content_type)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


@require_GET
@login_required
@cache_control(private=True, max_age=86400)
def console_sample(request, sample):
    try:
        checked = console.sample(sample)
    except console.ConsoleError:
        raise Http404("no such sample") from None
    response = HttpResponse(checked.data, content_type=ConsoleImage.CONTENT_TYPES[checked.format])
    response["X-Content-Type-Options"] = "nosniff"
    return response


@require_POST
@login_required
@refusals.shown_on("portal-console-run", "name", "pk")
def golden_save(request, name, pk):
    function = access.function_for(request.user, name, access.ADMIN)
    run = get_object_or_404(ConsoleRun, pk=pk, function=function)
    form = GoldenCaseForm(request.POST)
    if not form.is_valid():
        messages.error(request, "name the golden case")
        return redirect("portal-console-run", name=function.name, pk=run.pk)
    case = console.save_golden_case(run, form.cleaned_data["name"], user=request.user)
    messages.success(request, f"Golden case “{case.name}” saved: every deploy of {function.name} must find "
                              f"these {len(case.boxes)} box(es) (IoU ≥ {function.golden_iou}) before its alias moves.")
    return redirect("portal-golden", name=function.name, pk=case.pk)


@require_GET
@login_required
def golden_detail(request, name, pk):
    function = access.function_for(request.user, name)
    case = get_object_or_404(GoldenCase.objects.select_related("image", "created_by"), pk=pk, function=function)
    image = case.image
    fake = ConsoleRun(function=function, outcome=ConsoleRun.Outcome.OK, result={"boxes": case.boxes},
                      image_width=image.width, image_height=image.height, round_trip_ms=0)
    return render(request, "portal/golden_detail.html", {
        "function": function, "case": case, "boxes": drawn(fake),
        "image_url": reverse("portal-console-image", args=[function.name, image.pk]),
        "may_admin": access.can(request.user, function, access.ADMIN)})


@require_POST
@login_required
def golden_delete(request, name, pk):
    function = access.function_for(request.user, name, access.ADMIN)
    case = get_object_or_404(GoldenCase, pk=pk, function=function)
    console.delete_golden_case(case, user=request.user)
    messages.success(request, f"Golden case “{case.name}” deleted.")
    return redirect("portal-console", name=function.name)
