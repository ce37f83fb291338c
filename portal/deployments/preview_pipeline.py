"""A merge request's preview, in the order of its step plan (plan.PREVIEW): source (the MR's
head from refs/merge-requests/<iid>/head, which must be the delivery's last_commit), build,
push, the deploy's Lambda steps on the preview Lambda (pipeline.ship: they serialize on that
Lambda's lock with every other MR's), then the alias mr-<iid> and the function URL.

Isolation: the preview Lambda is the preview environment's (its own role, no secret values);
production's alias and $LATEST are never touched. A fork's build gets none of the function's
build args and no layer cache (steps.build_inputs), and its URL is never public.

Close and merge race the pipeline: the alias step is entered only while the preview is open,
in the same UPDATE that enters it (`enter_alias`), so a build that finishes after the close
creates no alias; one that entered before is cleaned up after it ends (preview_cleanup.py
waits for the MR's running rows). The cap on live previews is applied in the source step,
under the preview environment's row lock (`make_room`).
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models import Exists
from django.db.models.functions import Now

from deploy import ecr, lambdas, source
from deploy.errors import UserError
from portal import sources
from portal.deployments import events, preview_cleanup, steps
from portal.deployments.models import Deployment, Preview
from portal.deployments.pipeline import build_and_push, ship
from portal.deployments.recording import Recorder, StepLog, Stopped, check_stop, retrying, settle
from portal.functions import Environment, Function, PreviewPolicy

Status, Kind = Deployment.Status, Deployment.Kind
State = Preview.State
CLOSED = "preview-closed"
CAP = "preview-cap"
NOT_APPROVED = "preview-not-approved"


def preview(deployment: Deployment) -> str:
    """Run a claimed preview to its end; the status it ended in. A preview closed meanwhile is
    removed now (its removal did nothing while this ran)."""
    try:
        return settle(deployment, lambda: _preview(steps.Run(deployment), Recorder(deployment)))
    finally:
        preview_cleanup.after_deployment(deployment)


def _preview(run: steps.Run, rec: Recorder) -> None:
    with rec.step("source") as out:
        fetch_head(run, out)
    if run.stale:
        events.stale.send(Deployment, deployment=run.deployment, reason=run.stale)
        raise Stopped(Status.SUPERSEDED, "stale", run.stale)
    check_open(run)
    build_and_push(run, rec, lambda: check_open(run), held=run.adopted)
    check_open(run)
    ship(run, rec)
    enter_alias(run)
    with rec.step("alias") as out:
        point_alias(run, out)
    auth = url_auth(run)
    if not auth:
        rec.skip("url", "no function URL: the preview policy asks for none")
        return
    with rec.step("url") as out:
        make_url(run, out, auth)


def fetch_head(run: steps.Run, out: StepLog) -> None:
    """Fetch the MR's head; a head other than the delivery's last_commit is stale (a newer
    delivery carries it). A fork's head must be the one a deployer approved. Then the cap,
    then the Build (a fork's in its own scope) and whether ECR holds it already."""
    deployment, function, preview = run.deployment, run.function, run.deployment.preview
    wanted = deployment.commit_sha or preview.head_sha
    run.adopted = False  # True: ECR holds the build's image (another MR or function built it)
    run.mirror = retrying("fetch", out, sources.fetch, function, merge_request=preview.mr_iid)
    head = source.merge_request_head(run.mirror, preview.mr_iid)
    out(f"{source.merge_request_ref(preview.mr_iid)} is {head}")
    if head != wanted:
        run.stale = (f"stale: the merge request's head is {(head or 'nothing')[:12]}, not {wanted[:12]} "
                     "(this delivery's last commit); skipped, the delivery that moved it deploys it")
        out(run.stale)
        return
    if preview.fork and preview.approved_sha != wanted:
        raise Stopped(Status.CANCELLED, NOT_APPROVED, f"{wanted[:12]} of a fork's merge request is not approved: "
                      "a deployer approves each new head before it builds")
    out(make_room(preview))
    commit = source.describe(run.mirror, wanted)
    inputs = steps.build_inputs(function, fork=preview.fork)
    if preview.fork:
        out("a fork's merge request: built without the function's build args and without the layer cache")
    steps.record_build(run, wanted, commit, inputs)
    run.repository_uri = ecr.ensure_repository(function.ecr_repository)
    run.adopted = steps.adopt_held_image(run, out)


def check_open(run: steps.Run) -> None:
    """A step boundary: stop if a stop was asked for, or the preview closed meanwhile."""
    check_stop(run.deployment)
    state = Preview.objects.values_list("state", flat=True).get(pk=run.deployment.preview_id)
    if state != State.OPEN:
        raise Stopped(Status.CANCELLED, CLOSED, f"the merge request's preview is {state}: stopped, nothing created")


def make_room(preview: Preview) -> str:
    """At most SLIPWAY_PREVIEW_CAP open previews per function: a preview that holds no alias yet
    takes a place, closing the oldest idle one (its alias and URL removed by the clean-up);
    none idle: this one is removed and refused (`preview-cap`, the MR note says why). Under the
    preview environment's row lock, so two new previews never both take the last place."""
    cap = settings.SLIPWAY_PREVIEW_CAP
    with transaction.atomic():
        Function.objects.select_for_update().get(pk=preview.function_id)  # the lock order
        Environment.objects.select_for_update().get(pk=preview.environment_id)
        if preview.version:
            return f"{preview.alias} is live already: no new place taken"
        others = Preview.objects.filter(environment_id=preview.environment_id, state=State.OPEN).exclude(pk=preview.pk)
        count = others.count()
        if count < cap:
            return f"{count + 1} of {cap} previews open"
        oldest = preview_cleanup.idle(others).order_by("last_commit_at", "created_at", "pk").first()
        why = f"{count} previews are open (the cap is {cap}) and none is idle"
        if oldest is None:
            Preview.objects.filter(pk=preview.pk).update(state=State.REMOVED, removed_at=Now(),
                                                         removed_reason=f"refused: {why}")
        else:
            Preview.objects.select_for_update().get(pk=oldest.pk)
            preview_cleanup.close(oldest, f"cap: the oldest idle preview, closed to make room for !{preview.mr_iid}")
    if oldest is None:  # raised once the refusal is committed
        raise UserError(CAP, f"{why}: this merge request gets no preview; close one, or push again later")
    return f"{count} previews open (the cap is {cap}): closed !{oldest.mr_iid}, the oldest idle one"


def enter_alias(run: steps.Run) -> None:
    """SHIFTING in one UPDATE that also requires the preview to be open and no stop asked for:
    a close committed before finds this refused (nothing created), one after finds the alias
    step entered and its clean-up waits for this row to end."""
    deployment = run.deployment
    still_open = Preview.objects.filter(pk=deployment.preview_id, state=State.OPEN)
    if Deployment.objects.filter(Deployment.NOT_STOPPED, Exists(still_open), pk=deployment.pk,
                                 status__in=Deployment.RUNNING).update(status=Status.SHIFTING, heartbeat_at=Now()):
        deployment.status = Status.SHIFTING
        return
    check_open(run)  # the cancel, or the close
    raise Deployment.TransitionError(f"deployment {deployment.pk} could not enter its alias step")


def point_alias(run: steps.Run, out: StepLog) -> None:
    preview, name, version = run.deployment.preview, run.environment.lambda_name, run.deployment.version
    previous = lambdas.point_alias(name, preview.alias, version)
    out(f"{preview.alias}: {previous or '(new)'} -> {version} on {name}")
    run.record(previous_version=previous or "")
    Preview.objects.filter(pk=preview.pk).update(version=version)
    preview.version = version


def url_auth(run: steps.Run) -> str:
    """The URL's auth type the policy asks for ("" none); a fork's is never NONE."""
    policy = PreviewPolicy.objects.filter(environment_id=run.environment.pk).first()
    auth = policy.url_auth if policy else ""
    if auth == PreviewPolicy.UrlAuth.NONE and run.deployment.preview.fork:
        return PreviewPolicy.UrlAuth.AWS_IAM
    return auth


def make_url(run: steps.Run, out: StepLog, auth: str) -> None:
    preview, name = run.deployment.preview, run.environment.lambda_name
    if auth == PreviewPolicy.UrlAuth.NONE:
        out("public URL (auth NONE): anyone with the address can call this merge request's code")
    url = lambdas.ensure_url(name, preview.alias, auth)
    out(f"{url} (auth {auth})")
    Preview.objects.filter(pk=preview.pk).update(url=url, url_id=lambdas.url_id(url))
