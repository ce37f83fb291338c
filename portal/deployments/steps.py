"""One function per pipeline step, shared by deploy and rollback.

Each step takes the run's state and the step's log, calls deploy/ and
records what it found on the rows. The order (plan.py), the recording and
the stops between steps are the pipeline's (pipeline.py); AWS calls retry in
deploy.aws only, docker and git calls through recording.retrying.
"""

from __future__ import annotations

import time
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now

from deploy import arch, ecr, lambdas, source, ssh, testing
from deploy import build as builder
from deploy import docker as docker_seam
from deploy.errors import UserError
from portal import sources
from portal.deployments import checks, events, gates, promotion, queue, retention
from portal.deployments.models import Build, Deployment
from portal.deployments.recording import Held, StepLog, Stopped, check_stop, retrying
from portal.deployments.releases import went_live
from portal.deployments.rollback import (  # shared with the rollback, which the web runs too
    CREATING,
    RELEASE_KINDS,
    Run,
    check_owner,
    check_release,
    lambda_settings,
    remember_expected_state,
    shift_alias,
    wait_while_marked,
)
from portal.functions import Function

__all__ = ["CREATING", "RELEASE_KINDS", "Run", "check_owner", "check_release", "lambda_settings",
           "remember_expected_state", "shift_alias", "wait_while_marked"]

Status = Deployment.Status
# Deploys nobody asked for explicitly: a webhook's, a missed push's. They may name an older
# commit than one live or queued, and are then skipped as stale.
AUTOMATIC = (Deployment.Trigger.WEBHOOK, Deployment.Trigger.RECONCILE)


def work_root() -> Path:
    return Path(settings.WORK_DIR)


def workspace_name(pk: int) -> str:
    return f"deployment-{pk}"


def build_args(function: Function) -> dict[str, str]:
    """Every build arg the image is built with: the platform's, then the function's own."""
    return {**platform_build_args(function), **builder.validate_build_args(function.build_args or {})}


def platform_build_args(function: Function) -> dict[str, str]:
    """The build args Slipway's settings give every build of the function's architecture."""
    args = {}
    base = settings.SLIPWAY_BASE_IMAGES.get(function.architecture)
    if base:
        args["BASE_IMAGE"] = base
    if settings.SLIPWAY_PYTHON_VERSION:
        args["PYTHON_VERSION"] = settings.SLIPWAY_PYTHON_VERSION
    if settings.SLIPWAY_BUILDER_IMAGE:
        args["BUILDER_IMAGE"] = settings.SLIPWAY_BUILDER_IMAGE
    return args


def builder_engine(function: Function, out: StepLog) -> str:
    """The Docker engine that builds for the function's architecture: the local one,
    DOCKER_HOST, or an ssh:// builder reached through a forwarded socket whose
    host key is pinned (deploy/ssh.py)."""
    host = settings.SLIPWAY_DOCKER_HOSTS.get(function.architecture, "")
    if not ssh.is_ssh(host):
        return host
    out(f"builder: {host} (host key pinned)")
    return retrying("ssh", out, ssh.forward, host, known_hosts=settings.SLIPWAY_SSH_KNOWN_HOSTS,
                    identity_file=settings.SLIPWAY_SSH_IDENTITY_FILE)


# A fork's preview build: none of the function's build args, no layer cache, a Build of its own.
FORK_SCOPE = "fork"


def build_inputs(function: Function, *, fork: bool = False) -> dict:
    """Everything besides commit and architecture that shapes the image. `fork`: a fork's preview,
    built with the platform's build args only (the function's may hold tokens) and in a scope
    of its own (FORK_SCOPE: its Build and cache are never a non-fork build's)."""
    if not fork:
        return {"context": function.context_path, "dockerfile": function.dockerfile_path,
                "build_args": build_args(function)}
    return {"context": function.context_path, "dockerfile": function.dockerfile_path,
            "build_args": platform_build_args(function), "scope": FORK_SCOPE}


# --- Deploy -------------------------------------------------------------------------


def fetch_source(run: Run, out: StepLog) -> None:
    """Resolve the ref to a commit, find or make its Build, and ask ECR whether it holds it."""
    function, deployment = run.function, run.deployment
    if sources.is_private(function):
        kind = function.source_access.get_source_auth_display()
        out(f"private repository: {kind} (never in a command line or this log)")
    run.mirror = retrying("fetch", out, sources.fetch, function)
    if deployment.trigger in AUTOMATIC:
        run.stale = stale_reason(run)
        if run.stale:
            out(run.stale)
            return
    wanted = deployment.commit_sha or deployment.ref or function.branch
    sha = source.resolve(run.mirror, wanted)
    commit = source.describe(run.mirror, sha)
    known_before = bool(deployment.commit_sha)
    out(f"{wanted} is {sha}" + (f": {commit.subject} ({commit.author})" if commit else ""))
    record_build(run, sha, commit, build_inputs(function))
    if not known_before:  # a deploy of a branch or tag: GitLab hears of it now that the commit is known
        events.status_changed.send(Deployment, deployment=deployment)
    run.repository_uri = ecr.ensure_repository(function.ecr_repository)
    # Build once, deploy many: an immutable tag that ECR holds is this build's image.
    if adopt_held_image(run, out):
        run.record(kind=Deployment.Kind.REDEPLOY)


def record_build(run: Run, sha: str, commit, inputs: dict) -> Build:
    """Find or make the Build of `sha` with `inputs` (one per set of inputs, never rebuilt) and
    record it, with the commit's subject and author, on the run's deployment."""
    function = run.function
    build, _ = Build.objects.get_or_create(
        function=function, inputs_digest=Build.digest_inputs(sha, function.architecture, inputs),
        defaults={"commit_sha": sha, "architecture": function.architecture, "inputs": inputs,
                  "repository": function.ecr_repository})
    run.record(commit_sha=sha, build=build, commit_message=commit.subject if commit else "",
               commit_author=commit.author if commit else "")
    return build


def adopt_held_image(run: Run, out: StepLog) -> bool:
    """Adopt what ECR holds under the build's tag, if anything; True when it did. Another
    function on the repository may have pushed it, and its retention may be deleting it
    right now: decided under this function's lock (retention marks under every lock of
    the repository), a marked image is never adopted; this waits until the mark clears,
    then looks again (the image is gone by then, and is built anew)."""
    function, build = run.function, run.build
    repository = function.ecr_repository
    while True:
        held = ecr.find(repository, tag=build.tag)
        out(f"ECR {'holds' if held else 'does not hold'} {repository}:{build.tag}")
        if held is None:
            return False
        ecr.check_single_image(held)  # pushed by someone else, perhaps as an index: never deployed as is
        with transaction.atomic():
            Function.objects.select_for_update().get(pk=function.pk)
            if not retention.marked(repository, held.digest):
                build.adopt(held.digest, held.size, repository)
                return True
        wait_while_marked(run, out, repository, held.digest)


def stale_reason(run: Run) -> str:
    """Why a webhook deploy should not run, or "": GitLab's deliveries arrive out of
    order, so a push may name a commit older than the one live (its own commit
    included) or than one queued from another delivery. Those are skipped; the
    newest goes live. A push that moved the branch back (a force-push to an older
    commit) is what the branch holds now, and deploys. Explicit deploys from the UI,
    the API or the CLI never come here: they may go back."""
    deployment, function, mirror = run.deployment, run.function, run.mirror
    mine = deployment.commit_sha
    if deployment.kind != Deployment.Kind.DEPLOY or not mine:
        return ""
    live = went_live(run.environment).values("pk", "commit_sha").first()
    if live and live["commit_sha"] == mine:
        return f"{mine[:12]} is already live (deployment #{live['pk']}): skipped"
    head = source.resolve_cached(mirror, function.branch) if deployment.ref == function.branch else None
    newer = [(live["pk"], live["commit_sha"], "which is live")] if live else []
    newer += [(pk, sha, "queued from another delivery") for pk, sha in Deployment.objects.filter(
        environment=run.environment, trigger__in=AUTOMATIC, kind=Deployment.Kind.DEPLOY,
        status__in=(Status.QUEUED, *Deployment.RUNNING, *Deployment.ROLLOUT)).exclude(pk=deployment.pk).exclude(
            commit_sha="")
        .order_by("pk").values_list("pk", "commit_sha")]
    for pk, sha, what in newer:
        if sha == mine:
            return f"{mine[:12]} is {what} (deployment #{pk}): skipped as a repeat"
        if head != mine and source.is_ancestor(mirror, mine, sha):
            return (f"stale: {mine[:12]} is older than {sha[:12]} (deployment #{pk}, {what}); "
                    "skipped so the newer commit stays or goes live")
    return ""


def local_tag(run: Run) -> str:
    return f"slipway/{run.function.name}:{run.build.tag}"


def build_image(run: Run, out: StepLog) -> None:
    """Check the commit out into a workspace of its own and build it with BuildKit."""
    function, build = run.function, run.build
    build.start()
    with source.workspace(work_root(), workspace_name(run.deployment.pk)) as workspace:
        source.export(run.mirror, build.commit_sha, workspace)
        context = source.inside(workspace, function.context_path, "build context")
        dockerfile = source.inside(context, function.dockerfile_path, "Dockerfile")
        result = builder.build(
            builder=settings.SLIPWAY_BUILDKIT_DOCKER, context=context, dockerfile=dockerfile,
            platform=arch.get(function.architecture).platform, tag=local_tag(run),
            build_args=build.inputs.get("build_args", {}),
            docker_host=builder_engine(function, out),
            labels={"slipway.function": function.name, "slipway.commit": build.commit_sha,
                    "slipway.deployment": str(run.deployment.pk)},
            on_line=out, timeout=settings.TASK_SOFT_TIME_LIMIT,
            no_cache=build.inputs.get("scope") == FORK_SCOPE,
        )
    out(f"built {result.image_id} in {result.seconds:.1f} s ({result.cache_hits} cached steps)")
    Build.objects.filter(pk=build.pk).update(cache_hits=result.cache_hits, cache_misses=result.cache_misses,
                                             log="\n".join(out.lines)[-64_000:])


def push_image(run: Run, out: StepLog) -> None:
    """Refuse the wrong architecture, push the build's tag, record its digest."""
    function, build = run.function, run.build
    tag = local_tag(run)
    docker = retrying("docker", out, docker_seam.client, builder_engine(function, out))
    attrs = ecr.check_architecture(docker, tag, function.architecture)
    host = ecr.registry_host(run.repository_uri, settings.SLIPWAY_REGISTRY_HOST)
    retrying("login", out, ecr.login, docker, host)
    image = retrying("push", out, ecr.push, docker, tag, run.repository_uri, build.tag,
                     host_override=settings.SLIPWAY_REGISTRY_HOST, on_line=out)
    out(f"pushed {function.ecr_repository}:{build.tag} = {image.digest}")
    build.succeed(repository=function.ecr_repository, digest=image.digest, size_bytes=attrs.get("Size") or image.size,
                  platform=f"{attrs.get('Os')}/{attrs.get('Architecture')}",
                  image_uri=ecr.image_uri(run.repository_uri, image.digest))


# --- Promotion ---------------------------------------------------------------------------


def check_promotion(run: Run, out: StepLog) -> None:
    """A promotion's check step: the previous environment's alias still serves the pinned
    digest (else it ends cancelled `not-verified-upstream`), and ECR still holds it (else
    it fails `image-missing`)."""
    out(served_upstream(run))
    digest = run.digest
    repository = run.build.repository or run.function.ecr_repository
    wait_while_marked(run, out, repository, digest)  # retention never deletes a pinned digest; a stale mark may linger
    if ecr.find(repository, digest=digest) is None:
        Build.objects.filter(pk=run.build.pk, image_gone_at__isnull=True).update(image_gone_at=Now())
        raise UserError("image-missing", f"ECR no longer holds {repository}@{digest}: deploy its commit again")
    out(f"ECR still holds {repository}@{digest}")
    run.repository_uri = ecr.ensure_repository(repository)


def served_upstream(run: Run) -> str:
    """What the previous environment's alias serves, checked with GetAlias: a line for the
    step's log when it is the pinned digest; otherwise the promotion stops, cancelled
    `not-verified-upstream` (a rollback, a deploy or a change behind Slipway's back moved it)."""
    previous = promotion.previous_environment(run.environment)
    if previous is None:
        raise Stopped(Status.CANCELLED, promotion.NOT_VERIFIED,
                      f"{run.environment.name} is now the first environment: nothing upstream vouches for "
                      f"{run.digest}")
    version, serving = lambdas.alias_digest(previous.lambda_name, previous.alias)
    where = f"{previous.name}'s alias {previous.alias} ({previous.lambda_name})"
    if version is None:
        raise Stopped(Status.CANCELLED, promotion.NOT_VERIFIED, f"{where} does not exist: nothing upstream vouches "
                      f"for {run.digest}")
    if serving != run.digest:
        raise Stopped(Status.CANCELLED, promotion.NOT_VERIFIED,
                      f"{where} serves version {version} ({serving or 'an image Lambda does not name'}), not "
                      f"{run.digest}: the promotion ships only what {previous.name} serves")
    return f"{where} serves version {version} = {serving}"


def enter_promotion_shift(run: Run) -> str:
    """GetAlias once more, then SHIFTING in an UPDATE that a pending (or newer) rollback of the
    previous environment refuses (Deployment.enter_promotion_shift); refused: cancelled
    `not-verified-upstream`. Returns the GetAlias line for the shift step's log."""
    deployment = run.deployment
    line = served_upstream(run)
    previous = promotion.previous_environment(run.environment)
    if deployment.enter_promotion_shift(previous.pk):
        return line
    check_stop(deployment)
    rollback = deployment.upstream_rollbacks(previous.pk).order_by("-pk").first()
    if rollback is None:  # refused by the stop condition alone, which check_stop did not raise for
        raise Deployment.TransitionError(f"deployment {deployment.pk} could not enter its shift step")
    raise Stopped(Status.CANCELLED, promotion.NOT_VERIFIED,
                  f"rollback #{rollback.pk} of {previous.name} is {rollback.status}: {run.digest} is no longer "
                  f"what {previous.name} vouches for; the alias of {run.environment.name} was not moved")


# --- Shared by deploy and rollback ------------------------------------------------------


def enter_lambda_steps(run: Run) -> float:
    """Wait until no other deployment writes to the environment's Lambda, then
    move to UPDATING; returns the seconds waited. Stops if superseded or cancelled
    meanwhile, up to the move itself (Deployment.enter_lambda)."""
    testing.pause("enter-lambda-steps", run.function.name)  # tests only: hold here while a cancel lands
    started = time.monotonic()
    while not queue.enter_lambda_steps(run.deployment, gate=gates.hold_reason):
        if run.deployment.status in Deployment.GATED:  # a gate holds it: it waits without its task
            raise Held(run.deployment.status)
        check_stop(run.deployment)
        time.sleep(0.5)
    return time.monotonic() - started


def resume_pushed(run: Run, out: StepLog) -> None:
    """A deploy released by its gates ships the digest it pinned when held (pushed before):
    ECR must still hold it (retention keeps a held row's digest; else `image-missing`)."""
    repository = run.build.repository or run.function.ecr_repository
    digest = run.digest
    out(f"released by its gates: ships {repository}@{digest}, built and pushed before it was held")
    wait_while_marked(run, out, repository, digest)
    if ecr.find(repository, digest=digest) is None:
        Build.objects.filter(pk=run.build.pk, image_gone_at__isnull=True).update(image_gone_at=Now())
        raise UserError("image-missing", f"ECR no longer holds {repository}@{digest}: deploy its commit again")
    run.repository_uri = ecr.ensure_repository(repository)


def update_function(run: Run, out: StepLog) -> None:
    """Create the Lambda on the first deploy; otherwise configuration first, then code, by digest."""
    function = run.function
    config = lambda_settings(run.environment)
    run.image_uri = ecr.image_uri(run.repository_uri, run.digest, settings.SLIPWAY_REGISTRY_HOST)
    current = lambdas.get_configuration(config.name)
    if current is None:
        out(f"{CREATING.format(name=config.name)}{run.image_uri}")
        created = lambdas.create(config, run.image_uri, description(run))
        lambdas.tag(created["FunctionArn"], {lambdas.OWNER_TAG: function.name})
        return
    check_owner(run, out, current)
    changes = lambdas.configuration_changes(current, config)
    if changes:
        out(f"configuration changes: {', '.join(sorted(changes))}")
        lambdas.update_configuration(config, changes)
    out(f"code -> {run.image_uri}")
    lambdas.update_code(config, run.image_uri)


# The update step's line when it creates the Lambda: Slipway's own record that it did
# (a Lambda created before Slipway tagged what it creates is tagged on its next deploy).
def wait_updated(run: Run, out: StepLog) -> None:
    run.after_update = lambdas.wait_updated(run.environment.lambda_name)
    config = run.after_update.get("Configuration", {})
    out(f"LastUpdateStatus={config.get('LastUpdateStatus', '?')} RevisionId={config.get('RevisionId', '?')}")


def description(run: Run) -> str:
    prefix = {Deployment.Kind.ROLLBACK: "rollback to ", Deployment.Kind.PROMOTION: "promotion of "}.get(
        run.deployment.kind, "")
    return f"{prefix}{run.build.commit_sha[:12]} {run.digest}"


def publish_version(run: Run, out: StepLog) -> None:
    """Publish, guarded by the RevisionId the wait saw: the version holds our image or nothing."""
    version = lambdas.publish(run.environment.lambda_name, description(run), after=run.after_update,
                              image_uri=run.image_uri)
    out(f"published version {version}")
    run.record(version=version)


def verify_version(run: Run, out: StepLog, *, golden: bool = True) -> None:
    """Invoke the new version with the smoke event, then (`golden`: deploys, not a
    rollback's fallback) with every golden case; an error or boxes that no longer
    match keep the alias where it is. The smoke invoke's log tail gives the release
    card's cold start, duration and memory."""
    function, version = run.function, run.deployment.version
    if not function.smoke_event:
        out("no smoke event configured; invoking with {}")
    invocation = lambdas.invoke(run.environment.lambda_name, version, function.smoke_event or {}, tail=True)
    report = lambdas.parse_report(invocation.log_tail)
    run.record(init_ms=report.init_ms, duration_ms=report.duration_ms, memory_used_mb=report.memory_used_mb)
    out(f"result: {str(invocation.result)[:500]}")
    out(f"init {_ms(report.init_ms)}, duration {_ms(report.duration_ms)}, memory used "
        f"{f'{report.memory_used_mb} MB' if report.memory_used_mb is not None else 'not measured'}")
    problem = checks.smoke_problem(version, invocation)
    if problem:
        raise problem
    if golden:
        verify_golden_cases(run, out)
    else:
        out("golden cases not run: a rollback is never blocked by a case saved after its release")


def verify_golden_cases(run: Run, out: StepLog) -> None:
    """Each golden case against the new version: the same boxes (count, label, IoU at
    least the function's threshold), or the step fails with the diff."""
    version = run.deployment.version
    cases, failed = checks.golden_failures(run.function, run.environment, version, out)
    if failed:
        raise UserError("golden-mismatch", f"version {version} fails {len(failed)} of {cases} golden case(s): "
                        + "; ".join(failed))


def _ms(value: float | None) -> str:
    return f"{value:.1f} ms" if value is not None else "not measured"
