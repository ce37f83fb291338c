"""Deployments: every attempt to ship a function — requests, the queue, the
pipeline's steps, rollback, reconcile of missed pushes, retention of old releases.

Owns: models Build, Deployment, DeploymentStep, ImageDeletion; requesting (what
the entry points call); queue (lock order, dispatch); plan (the steps of each
kind, as data); pipeline and steps (does I/O: git, Docker, ECR, Lambda, through
deploy/); recording; rollback (does I/O;
also runs in the web when the queue does not answer); reconciling; retention
(does I/O); sweeper; releases; events (signals the packages above receive);
progressive delivery: routing (the step planner and the routing rules, pure), rollout
(start at the shift step, the tick, abort, completion, manual control; does I/O), health
(alarms and probes; does I/O).
May import: portal.console, portal.functions, portal.sources, portal.core,
deploy/. Never portal.feedback or portal.hooks: they listen to events.
Other packages use it through this module only.
"""

from portal.deployments.approvals import counting as counting_approvals
from portal.deployments.approvals import required as approvals_required
from portal.deployments.approvals import who_may_approve
from portal.deployments.approving import decidable as approval_decidable
from portal.deployments.events import (
    decided,
    finished,
    freeze_overridden,
    lambda_entered,
    preview_changed,
    preview_closed,
    resumed,
    shifted,
    stale,
    status_changed,
    superseding,
)
from portal.deployments.models import Deployment, Preview, alias_for
from portal.deployments.previews import (
    MergeRequest,
    Received,
    approve_preview,
    live_previews,
    redeploy_preview,
    remove_preview,
)
from portal.deployments.previews import receive as receive_merge_request
from portal.deployments.promotion import (
    cancel_soaks_from,
    deployment_digest,
    next_environment,
    previous_environment,
    promote_due,
    request_promotion,
    verified_upstream,
)
from portal.deployments.reconciling import reconcile
from portal.deployments.releases import live_deployment, resolve_target, targets, went_live
from portal.deployments.requesting import (
    cancel,
    environment_named,
    queue_deploy,
    queue_notice,
    request_deploy,
    request_rollback,
    request_webhook_deploy,
    resume_auto_deploy,
)
from portal.deployments.rollout import current as current_rollout
from portal.deployments.rollout import pause as pause_rollout
from portal.deployments.rollout import promote_now as promote_rollout_now
from portal.deployments.rollout import request_abort as abort_rollout
from portal.deployments.rollout import resume as resume_rollout

__all__ = [
    "Deployment",
    "abort_rollout",
    "MergeRequest",
    "Received",
    "approve_preview",
    "live_previews",
    "receive_merge_request",
    "redeploy_preview",
    "remove_preview",
    "Preview",
    "alias_for",
    "approval_decidable",
    "approvals_required",
    "cancel",
    "cancel_soaks_from",
    "counting_approvals",
    "current_rollout",
    "decided",
    "deployment_digest",
    "environment_named",
    "finished",
    "preview_changed",
    "freeze_overridden",
    "preview_closed",
    "lambda_entered",
    "live_deployment",
    "next_environment",
    "pause_rollout",
    "previous_environment",
    "promote_due",
    "promote_rollout_now",
    "queue_deploy",
    "queue_notice",
    "reconcile",
    "request_deploy",
    "request_promotion",
    "request_rollback",
    "request_webhook_deploy",
    "resume_auto_deploy",
    "resume_rollout",
    "resolve_target",
    "resumed",
    "shifted",
    "stale",
    "status_changed",
    "superseding",
    "targets",
    "verified_upstream",
    "went_live",
    "who_may_approve",
]
