"""Gates end to end on the real local stack: the session's Celery worker, a beat of this
module's own (SLIPWAY_GATE_TICK=1), Docker with BuildKit, Redis and the local AWS plane.
One function (amd64), staging then production: a protected production holds a promotion
until a valid approval; a freeze holds promotions, lets a rollback through at once, and
when it ends the newest held request runs and the older one is superseded; an approval
whose approver lost the role before the request was released no longer counts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from deploy import lambdas
from portal.deployments import approvals, gates, request_promotion
from portal.deployments.requesting import request_deploy, request_rollback
from portal.models import Approval, AuditEvent, Deployment, Environment, FreezeWindow, Membership
from tests.conftest import wait_for
from tests.integration.conftest import own_beat
from tests.integration.test_promotion import (
    image_of,
    lambdas_removed,  # noqa: F401 - a fixture
    live,
    two_environments,
)

pytestmark = pytest.mark.integration
Status, Kind = Deployment.Status, Deployment.Kind


@pytest.fixture(scope="module")
def beat(tmp_path_factory):
    """A celery beat of this module's own: gates_due every second, the other entries held off."""
    with own_beat(tmp_path_factory.mktemp("gates-beat"), SLIPWAY_GATE_TICK=1) as process:
        yield process


def member(function, name: str, role: str):
    user = get_user_model().objects.create_user(name, f"{name}@example.org", "password-" + name)
    Membership.objects.create(function=function, user=user, role=role)
    return user


def approval(deployment: Deployment, user, digest: str) -> Approval:
    """What the approve view writes (portal/deployments/approving.py), made directly here."""
    environment = deployment.environment
    return Approval.objects.create(deployment=deployment, user=user, decision=Approval.Decision.APPROVED,
                                   environment=environment, digest=digest,
                                   settings_fingerprint=approvals.fingerprint(environment),
                                   expires_at=timezone.now() + timedelta(hours=1))


def status_of(deployment: Deployment) -> str:
    return Deployment.objects.values_list("status", flat=True).get(pk=deployment.pk)


def test_approvals_and_a_freeze_hold_production_and_a_rollback_passes_them(
        worker, beat, fixture_function, lambdas_removed, repo):  # noqa: F811
    function = fixture_function
    staging, production = two_environments(function)
    alice, bob, carol = member(function, "alice", "owner"), member(function, "bob", "approver"), \
        member(function, "carol", "approver")
    repo.release("one")
    one = live(request_deploy(function, trigger="cli"))

    # (a) A protected production holds the promotion until an approval of its digest.
    Environment.objects.filter(pk=production.pk).update(required_approvals=1)
    first = request_promotion(function, "production", trigger="api", user=alice)
    assert (first.status, first.approvals_required, first.digest) == (Status.AWAITING_APPROVAL, 1, one.build.digest)
    approval(first, carol, "sha256:" + "0" * 64)  # for another digest: releases nothing
    assert gates.reconsider(first.pk).status == Status.AWAITING_APPROVAL
    approval(first, bob, first.digest)
    assert gates.reconsider(first.pk) is not None  # queued (or, if the beat got there first, no longer held)
    first = live(first)
    assert image_of(production, first.version).endswith("@" + one.build.digest)
    assert lambdas.alias_version(production.lambda_name, production.alias) == first.version

    # A second release in production, unprotected now, so that a rollback has something to go back to.
    Environment.objects.filter(pk=production.pk).update(required_approvals=0)
    repo.release("two")
    two = live(request_deploy(function, trigger="cli"))
    second = live(request_promotion(function, "production", trigger="api", user=alice))
    assert second.digest == two.build.digest

    # (b) A freeze holds promotions; a rollback runs at once.
    now = timezone.now()
    window = FreezeWindow.objects.create(environment=production, reason="launch", starts_at=now - timedelta(minutes=1),
                                         ends_at=now + timedelta(hours=1))
    held = request_promotion(function, "production", trigger="api", user=alice)
    assert held.status == Status.FROZEN
    back = live(request_rollback(function, trigger="cli", environment="production"))
    assert back.version == first.version
    assert lambdas.alias_version(production.lambda_name, production.alias) == first.version
    held.refresh_from_db()
    assert (held.status, held.superseded_by_id) == (Status.SUPERSEDED, back.pk)  # the rollback replaced it
    passed = AuditEvent.objects.get(action="deployment.rollback_requested", detail__deployment=back.pk)
    assert passed.detail["passed_gates"] == [gates.describe(window)]

    older = request_promotion(function, "production", trigger="api", user=alice)
    newer = request_promotion(function, "production", trigger="api", user=alice)
    assert (status_of(older), status_of(newer)) == (Status.FROZEN, Status.FROZEN)
    FreezeWindow.objects.filter(pk=window.pk).update(ends_at=timezone.now() - timedelta(seconds=1))  # it ends
    newer = live(newer)  # released by the beat's gates_due
    older.refresh_from_db()
    assert (older.status, older.superseded_by_id, older.error_code) == (Status.SUPERSEDED, newer.pk, "superseded")
    assert lambdas.alias_version(production.lambda_name, production.alias) == newer.version
    assert image_of(production, newer.version).endswith("@" + two.build.digest)
    assert function.builds.count() == 2  # promotions built nothing

    # (c) An approval counts only while its approver still may approve when the request is
    # released: given during a freeze, its approver demoted before the freeze ends.
    Environment.objects.filter(pk=production.pk).update(required_approvals=1)
    window = FreezeWindow.objects.create(environment=production, reason="month-end",
                                         starts_at=timezone.now() - timedelta(minutes=1),
                                         ends_at=timezone.now() + timedelta(hours=1))
    third = request_promotion(function, "production", trigger="api", user=alice)
    assert (third.status, third.approvals_required) == (Status.FROZEN, 1)
    approval(third, bob, third.digest)
    Membership.objects.filter(function=function, user=bob).update(role=Membership.Role.DEPLOYER)
    FreezeWindow.objects.filter(pk=window.pk).update(ends_at=timezone.now() - timedelta(seconds=1))
    wait_for(lambda: status_of(third) == Status.AWAITING_APPROVAL, 30, "the thawed promotion to await approval")
    assert gates.reconsider(third.pk).status == Status.AWAITING_APPROVAL  # bob's approval no longer counts
    approval(third, carol, third.digest)
    gates.reconsider(third.pk)
    third = live(third)
    assert lambdas.alias_version(production.lambda_name, production.alias) == third.version
