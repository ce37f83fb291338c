"""Approvals: which decisions count toward a protected environment's requirement.

An approval binds the digest, the environment and a fingerprint of the
environment's settings when it was given. It counts while all three still match
the deployment, before it expires (SLIPWAY_APPROVAL_TTL), when its user is not the
requester, and while its user still holds a role that may approve (owner or
approver; staff always may). The requirement is the larger of what the
environment asked when the deployment was requested and what it asks now:
raising protection applies to waiting requests, lowering it only to later ones.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from portal.deployments.models import Approval, Deployment
from portal.deployments.promotion import deployment_digest
from portal.functions import APPROVING_ROLES, Environment, Membership

# What an approval vouches for besides the digest: the settings the version is published with.
FINGERPRINTED = ("lambda_name", "alias", "memory_mb", "timeout_s", "variables", "secret_keys", "execution_role_arn")


def fingerprint(environment: Environment) -> str:
    """A hash of the environment's Lambda settings (secret values included, hashed: a changed
    secret is a changed release, and the hash reveals nothing)."""
    blob = json.dumps({name: getattr(environment, name) for name in FINGERPRINTED}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def required(deployment: Deployment) -> int:
    return max(deployment.approvals_required, deployment.environment.required_approvals)


def approvers(environment: Environment):
    """Members of the environment's function whose role may approve."""
    return Membership.objects.filter(function_id=environment.function_id, role__in=APPROVING_ROLES)


def who_may_approve(deployment: Deployment) -> list[str]:
    """The usernames of the members who may approve `deployment` (its requester never may);
    staff may too, members or not."""
    eligible = approvers(deployment.environment).filter(user__is_active=True)
    if deployment.requested_by_id:
        eligible = eligible.exclude(user_id=deployment.requested_by_id)
    return sorted(eligible.values_list("user__username", flat=True))


def counting(deployment: Deployment, at: datetime | None = None):
    """The approvals of `deployment` that count now."""
    at = at or timezone.now()
    environment = deployment.environment
    still_approvers = approvers(environment).values("user_id")
    rows = Approval.objects.filter(  # a deactivated user holds no role any more
        Q(user_id__in=still_approvers) | Q(user__is_staff=True), user__is_active=True, deployment=deployment,
        decision=Approval.Decision.APPROVED, environment=environment, digest=deployment_digest(deployment),
        settings_fingerprint=fingerprint(environment), expires_at__gt=at)
    if deployment.requested_by_id:
        rows = rows.exclude(user_id=deployment.requested_by_id)
    return rows


def satisfied(deployment: Deployment, at: datetime | None = None) -> bool:
    need = required(deployment)
    return need == 0 or counting(deployment, at).count() >= need
