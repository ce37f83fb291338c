"""The step plan: which steps a deployment of each kind runs, in order, and the status
its row is in while each runs. Data, read by the pipeline's recorder (recording.Recorder
moves the row into a step's status, and refuses a step its kind's plan lacks) and by
the deployment page (the steps still to come).

A deploy: source, build, push, then the Lambda steps (update, wait, publish, verify)
and the alias shift. A redeploy runs the same plan with build and push recorded as
skipped (ECR already holds its image). A rollback checks the release and shifts the
alias; when its version is gone, its fallback ships the image again with the deploy's
Lambda steps in between. A promotion checks the release upstream, then runs the
Lambda steps and the shift with its pinned digest. A preview runs a deploy's steps, then
moves its merge request's alias and makes its URL.
"""

from __future__ import annotations

from dataclasses import dataclass

from portal.deployments.models import Deployment

Status, Kind = Deployment.Status, Deployment.Kind


@dataclass(frozen=True)
class Step:
    name: str
    status: str  # the deployment's status while the step runs
    # Moved into `status` before the step is recorded by a transition that guards itself
    # (the claim; Deployment.enter_lambda through queue.enter_lambda_steps; enter_shift),
    # never by the recorder.
    guarded: bool = False


SOURCE = Step("source", Status.SOURCE, guarded=True)
BUILD = Step("build", Status.BUILDING)
PUSH = Step("push", Status.PUSHING)
# The Lambda steps, a deploy's and a rollback's fallback alike (pipeline.ship).
SHIP = (Step("update", Status.UPDATING, guarded=True), Step("wait", Status.WAITING),
        Step("publish", Status.PUBLISHING), Step("verify", Status.VERIFYING))
SHIFT = Step("shift", Status.SHIFTING, guarded=True)
CHECK = Step("check", Status.CHECKING, guarded=True)

DEPLOY = (SOURCE, BUILD, PUSH, *SHIP, SHIFT)
# A promotion checks that the previous environment's alias still serves its pinned digest,
# then ships that digest: no source, build or push.
PROMOTION = (CHECK, *SHIP, SHIFT)
ROLLBACK = (CHECK, SHIFT)
ROLLBACK_FALLBACK = (CHECK, *SHIP, SHIFT)
# A merge request's preview (preview_pipeline.py): a deploy's steps on the preview Lambda, then its
# own alias mr-<iid> (entered only while the preview is open, in the same UPDATE) and its function
# URL (recorded as skipped when the policy wants none). Never the environment's alias.
ALIAS = Step("alias", Status.SHIFTING, guarded=True)
URL = Step("url", Status.SHIFTING)
PREVIEW = (SOURCE, BUILD, PUSH, *SHIP, ALIAS, URL)

# Recorded as skipped, first, when the web process ran a rollback itself (rollback.run_without_queue):
# it tells who ran it, and is never a step to come.
WITHOUT_QUEUE = "without-queue"


class NotPlanned(Exception):
    """A step its deployment's kind does not run: the pipeline and this plan disagree."""


def steps(kind: str, *, fallback: bool = False) -> tuple[Step, ...]:
    """The steps a deployment of `kind` runs, in order; `fallback`: a rollback whose version is gone."""
    if kind == Kind.ROLLBACK:
        return ROLLBACK_FALLBACK if fallback else ROLLBACK
    if kind in (Kind.DEPLOY, Kind.REDEPLOY):
        return DEPLOY
    if kind == Kind.PROMOTION:
        return PROMOTION
    if kind == Kind.PREVIEW:
        return PREVIEW
    raise NotPlanned(f"no step plan for a {kind!r} deployment")


def names(kind: str, *, fallback: bool = False) -> list[str]:
    return [step.name for step in steps(kind, fallback=fallback)]


def step(kind: str, name: str) -> Step:
    """The planned step `name` of a `kind` deployment (a rollback's fallback included)."""
    for planned in steps(kind, fallback=True):
        if planned.name == name:
            return planned
    raise NotPlanned(f"a {kind} runs no step {name!r}; its plan is {', '.join(names(kind, fallback=True))} "
                     "(portal/deployments/plan.py)")
