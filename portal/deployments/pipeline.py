"""The deploy pipeline, in the order of its step plan (plan.py: source, build, push,
then the Lambda steps update, wait, publish, verify, and the alias shift), with a
stop check between steps, each step recorded under the status the plan gives it
(a step the plan lacks is refused), the row always settled. A promotion checks its
pinned digest upstream, then ships it with the same Lambda steps and shifts. A
rollback runs portal/deployments/rollback.py, whose fallback for a version that is
gone ships again with the same Lambda steps.

Gates (gates.py): a claim that a gate holds moves the row to its held status instead
of running it; so does the transaction that enters the Lambda steps, where a deploy
that has pushed pins its digest and ends its task (Held: no finish, no lock held, no
heartbeat). Released and claimed again with resume_at="update", it skips source,
build and push (on its timeline already) and ships the pinned digest.

Does I/O (git, Docker, ECR, Lambda) through deploy/. Run by the worker's tasks
(workers/tasks.py), which only claim the row and call in here.
"""

from __future__ import annotations

from collections.abc import Callable

from portal.deployments import events, gates, plan, queue, rollout, steps
from portal.deployments import rollback as rollbacks
from portal.deployments.models import Build, Deployment
from portal.deployments.recording import Held, Recorder, Stopped, check_stop, settle

Status = Deployment.Status
RESUME_AT_UPDATE = "update"
__all__ = ["Held", "claimed", "deploy", "promote", "rollback", "ship", "shift"]


def claimed(pk: int, first: str | None, task_id: str) -> Deployment | None:
    """Claim the queued row into `first`: None means the status of the first step of its
    kind's plan (a deploy's source, a promotion's check)."""
    deployment = Deployment.objects.select_related("function", "environment", "build").filter(pk=pk).first()
    if deployment is None:
        return None
    if first is None:
        first = plan.steps(deployment.kind)[0].status
        if deployment.resume_at == RESUME_AT_UPDATE:  # released by its gates after its push: straight to the Lambda
            first = Status.CHECKING
    if not queue.claim(deployment, first, task_id or "", gate=gates.at_claim):
        queue.dispatch(deployment.environment_id)  # it ended or waits: let the queue move on
        return None
    return deployment


def deploy(deployment: Deployment) -> str:
    """Run a claimed deploy to its end; the status it ended in."""
    return settle(deployment, lambda: _deploy(steps.Run(deployment), Recorder(deployment)))


def _deploy(run: steps.Run, rec: Recorder) -> None:
    deployment = run.deployment
    if deployment.resume_at == RESUME_AT_UPDATE:
        _resume(run, rec)
        return
    with rec.step("source") as out:
        steps.fetch_source(run, out)
    if run.stale:  # an older commit than one live or queued: the delivery's log says why
        events.stale.send(Deployment, deployment=deployment, reason=run.stale)
        raise Stopped(Status.SUPERSEDED, "stale", run.stale)
    check_stop(deployment)
    build_and_push(run, rec, lambda: check_stop(deployment),
                   held=deployment.kind == Deployment.Kind.REDEPLOY)  # a redeploy: ECR holds this build's image
    check_stop(deployment)
    ship(run, rec)
    rollbacks.enter_shift(deployment)  # the last moment a rollback can still win
    shift(run, rec)


def build_and_push(run: steps.Run, rec: Recorder, between: Callable[[], None], *, held: bool) -> None:
    """build -> push, `between` (the caller's stop check) between them; `held`: ECR already holds
    the build's image, both recorded as skipped. A build that did not reach ECR ends failed."""
    if held:
        rec.skip("build", f"ECR already holds {run.function.ecr_repository}:{run.build.tag} "
                          f"({run.build.digest}); not rebuilt")
        rec.skip("push", "nothing to push")
        return
    try:
        with rec.step("build") as out:
            steps.build_image(run, out)
        between()
        with rec.step("push") as out:
            steps.push_image(run, out)
    finally:
        Build.fail_unfinished(run.build.pk)  # a no-op once pushed; otherwise it never stays building


def _resume(run: steps.Run, rec: Recorder) -> None:
    """A deploy its gates held after its push, released: the Lambda steps and the shift with
    the digest it pinned when it was held."""
    ship(run, rec, resumed=True)
    rollbacks.enter_shift(run.deployment)
    shift(run, rec)


def promote(deployment: Deployment) -> str:
    """Run a claimed promotion to its end; the status it ended in."""
    return settle(deployment, lambda: _promote(steps.Run(deployment), Recorder(deployment)))


def _promote(run: steps.Run, rec: Recorder) -> None:
    """check (the previous environment's alias serves the pinned digest; ECR holds it), then
    the same Lambda steps as a deploy with that digest, then the shift, entered only if the
    previous environment still serves it and no rollback there is pending or newer."""
    with rec.step("check") as out:
        steps.check_promotion(run, out)
    check_stop(run.deployment)
    ship(run, rec)
    served = steps.enter_promotion_shift(run)
    shift(run, rec, served)


def shift(run: steps.Run, rec: Recorder, note: str = "") -> None:
    """The alias move: all at once, or the first weight of a canary or linear rollout
    (rollout.start), after which the task ends and the beat's ticks take the row on (Held)."""
    with rec.step("shift") as out:
        if note:
            out(note)
        rolling = rollout.start(run.deployment, out)
        if rolling:
            steps.remember_expected_state(run)  # $LATEST as written; drift waits while it rolls out
        else:
            steps.shift_alias(run, out)
    if rolling:
        raise Held(Status.ROLLING_OUT, f"rolling out: {run.environment.alias} weighted, ticks take it on")


def ship(run: steps.Run, rec: Recorder, *, resumed: bool = False) -> None:
    """update -> wait -> publish -> verify: the same steps for a deploy and a rollback's fallback.
    Entering them asks the gates (Held ends the task); `resumed`: a deploy released by its
    gates, whose pinned image is checked and located in the update step."""
    waited = steps.enter_lambda_steps(run)
    with rec.step("update") as out:
        if resumed:
            steps.resume_pushed(run, out)
        if waited >= 0.5:
            out(f"waited {waited:.1f} s for another deployment of {run.function.name} to leave the Lambda")
        steps.update_function(run, out)
    with rec.step("wait") as out:
        steps.wait_updated(run, out)
    check_stop(run.deployment)
    with rec.step("publish") as out:
        steps.publish_version(run, out)
    check_stop(run.deployment)
    with rec.step("verify") as out:
        # Golden cases gate deploys only: a rollback's fallback verifies with the smoke event.
        steps.verify_version(run, out, golden=run.deployment.kind != Deployment.Kind.ROLLBACK)
    check_stop(run.deployment)


def rollback(deployment: Deployment) -> str:
    """Run a claimed rollback; the worker adds the fallback for a version that is gone."""
    return rollbacks.perform(deployment, ship=ship)
