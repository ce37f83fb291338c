"""The gates engine (portal/deployments/gates.py and where the queue and the pipeline ask
it): what holds a request and where it waits, what releases it, what supersedes it, and
that a rollback passes every gate. Celery's send_task and deploy.aws.client are the only
seams patched. End to end with a real worker: tests/integration/test_gates.py."""

from datetime import timedelta
from unittest import mock

import pytest
from botocore.exceptions import ClientError
from django.conf import settings
from django.utils import timezone

from portal.celery import GATES_DUE_TASK
from portal.core.errors import RequestRefused
from portal.deployments import approvals, gates, pipeline, queue, retention, steps, sweeper
from portal.deployments.promotion import request_promotion
from portal.deployments.recording import Recorder, settle
from portal.deployments.requesting import request_deploy, request_rollback
from portal.feedback.status import PENDING, gitlab_state
from portal.models import Approval, AuditEvent, Build, Deployment, Environment, FreezeWindow
from tests.conftest import released, staged

# Transactional: a request sends its task after commit, and the tests count what was sent.
pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
Status, Kind = Deployment.Status, Deployment.Kind
DIGEST = "sha256:" + "bb" * 32


@pytest.fixture
def envs(function):
    """staging (team-hello-stg) serving release 2 (b…), then production (team-hello)."""
    staging, production = staged(function)
    released(function, "2", "b" * 40, environment=staging)
    return staging, production


def freeze(environment=None, *, reason="launch week", minutes=30) -> FreezeWindow:
    """A one-off window around now (of `environment`, or global), ending in `minutes`."""
    now = timezone.now()
    return FreezeWindow.objects.create(environment=environment, reason=reason, starts_at=now - timedelta(minutes=5),
                                       ends_at=now + timedelta(minutes=minutes))


def thaw(window: FreezeWindow) -> None:
    FreezeWindow.objects.filter(pk=window.pk).update(ends_at=timezone.now() - timedelta(seconds=1))


def protect(environment, count: int = 1, **fields) -> Environment:
    Environment.objects.filter(pk=environment.pk).update(required_approvals=count, **fields)
    environment.refresh_from_db()
    return environment


def approve(deployment: Deployment, user, *, digest: str | None = None) -> Approval:
    deployment.refresh_from_db()
    environment = deployment.environment
    return Approval.objects.create(deployment=deployment, user=user, decision=Approval.Decision.APPROVED,
                                   environment=environment, digest=digest or deployment.digest,
                                   settings_fingerprint=approvals.fingerprint(environment),
                                   expires_at=timezone.now() + timedelta(hours=1))


def sent_pks(sent) -> list[int]:
    return [c.kwargs["args"][0] for c in sent.call_args_list]


# --- hold_reason ---------------------------------------------------------------------------------


def test_a_freeze_holds_a_promotion_and_an_override_passes_it(function, envs):
    staging, production = envs
    window = freeze(production)
    promotion = Deployment(function=function, environment=production, kind=Kind.PROMOTION, digest=DIGEST)
    assert gates.hold_reason(promotion) == (Status.FROZEN, "frozen: launch week (production)")
    assert gates.hold_reason(promotion, at=window.ends_at) is None  # the window ends at ends_at
    promotion.override_reason = "hotfix for the launch"
    assert gates.hold_reason(promotion) is None


def test_a_global_freeze_holds_every_environment(function, envs):
    staging, _ = envs
    freeze(reason="year end")
    deploy = Deployment(function=function, environment=staging, kind=Kind.DEPLOY)
    assert gates.hold_reason(deploy) == (Status.FROZEN, "frozen: year end (every environment)")


def test_an_approval_rule_holds_what_has_a_digest_and_not_a_deploy_before_its_push(function, envs, sent):
    staging, production = envs
    protect(production)
    promotion = request_promotion(function, production, trigger="api")
    assert gates.hold_reason(promotion) == (Status.AWAITING_APPROVAL, "awaiting approval: 0 of 1 in production")
    protect(staging)
    unbuilt = Deployment(function=function, environment=staging, kind=Kind.DEPLOY, approvals_required=1)
    assert gates.hold_reason(unbuilt) is None  # nothing to approve yet: asked again before its update step


def test_a_rollback_is_never_held(function, envs):
    _, production = envs
    freeze(production)
    protect(production, 2)
    rollback = Deployment(function=function, environment=production, kind=Kind.ROLLBACK, digest=DIGEST)
    assert gates.hold_reason(rollback) is None


# --- Held at request -----------------------------------------------------------------------------


def test_a_promotion_requested_during_a_freeze_waits_frozen_and_is_not_sent(function, envs, sent):
    _, production = envs
    protect(production, 2)
    freeze(production)
    promotion = request_promotion(function, production, trigger="api")
    promotion.refresh_from_db()
    assert (promotion.status, promotion.approvals_required, promotion.digest) == (Status.FROZEN, 2, DIGEST)
    assert promotion.gated_since is not None and promotion.gated_since <= timezone.now()
    assert sent.call_count == 0
    audit = AuditEvent.objects.get(action="deployment.promotion_requested")
    assert audit.detail["held"] == "frozen: launch week (production)"


def test_a_protected_environment_holds_a_promotion_awaiting_approval(function, envs, sent):
    _, production = envs
    protect(production)
    promotion = request_promotion(function, production, trigger="api")
    assert (promotion.status, promotion.approvals_required) == (Status.AWAITING_APPROVAL, 1)
    assert sent.call_count == 0 and promotion not in Deployment.objects.filter(status__in=Deployment.RUNNING)


def test_a_refusing_environment_refuses_a_promotion_during_a_freeze_naming_the_window(function, envs, sent):
    _, production = envs
    Environment.objects.filter(pk=production.pk).update(during_freeze=Environment.DuringFreeze.REFUSE)
    window = freeze(production)
    with pytest.raises(RequestRefused) as refused:
        request_promotion(function, "production", trigger="api")
    assert refused.value.code == "frozen" and refused.value.status == 409
    assert f"production is frozen by freeze window #{window.pk} 'launch week' (environment production, from " \
           in refused.value.message
    assert "refuses promotion requests during a freeze" in refused.value.message
    assert not Deployment.objects.filter(environment=production).exclude(status=Status.SUCCEEDED).exists()


def test_a_refusing_first_environment_refuses_deploys_during_a_freeze(function, envs, sent):
    staging, _ = envs
    Environment.objects.filter(pk=staging.pk).update(during_freeze=Environment.DuringFreeze.REFUSE)
    freeze(reason="month end")
    with pytest.raises(RequestRefused) as refused:
        request_deploy(function, trigger="api")
    assert refused.value.code == "frozen" and "'month end' (every environment" in refused.value.message
    assert not Deployment.objects.filter(kind=Kind.DEPLOY, status=Status.QUEUED).exists()


def test_a_deploy_request_snapshots_the_approvals_its_environment_requires(function, envs, sent):
    staging, _ = envs
    protect(staging, 2)
    deploy = request_deploy(function, trigger="api")
    assert (deploy.status, deploy.approvals_required) == (Status.QUEUED, 2)
    protect(staging, 0)  # lowering applies to later requests only
    assert approvals.required(Deployment.objects.get(pk=deploy.pk)) == 2


# --- Held at claim, and before the Lambda steps -----------------------------------------------------


def test_a_freeze_found_at_claim_holds_the_row_instead_of_running_it(function, envs, sent):
    _, production = envs
    promotion = request_promotion(function, production, trigger="api")
    assert promotion.status == Status.QUEUED
    freeze(production)
    assert pipeline.claimed(promotion.pk, None, "task-1") is None
    promotion.refresh_from_db()
    assert (promotion.status, promotion.started_at, promotion.heartbeat_at) == (Status.FROZEN, None, None)
    assert promotion.gated_since is not None
    held = AuditEvent.objects.get(action="deployment.held")
    assert held.detail["status"] == Status.FROZEN and held.detail["reason"] == "frozen: launch week (production)"


def test_a_soaked_promotion_into_a_protected_environment_awaits_approval_when_claimed(function, sent):
    staging, production = staged(function, promotion="automatic", soak_seconds=30)
    protect(production)
    upstream = released(function, "2", "b" * 40, environment=staging)
    soak = request_promotion(function, production, trigger="promotion", upstream=upstream, soak=True)
    assert (soak.status, soak.approvals_required) == (Status.SOAKING, 1)
    Deployment.objects.filter(pk=soak.pk).update(promote_at=timezone.now())
    assert queue.release_soak(soak.pk).status == Status.QUEUED
    assert pipeline.claimed(soak.pk, None, "task-1") is None
    soak.refresh_from_db()
    assert (soak.status, soak.started_at) == (Status.AWAITING_APPROVAL, None)


def pushed(function, environment, **fields) -> Deployment:
    """A deploy that has built and pushed (its build holds its digest), about to ship."""
    build = Build.objects.create(function=function, commit_sha="c" * 40, architecture="arm64", inputs_digest="c" * 40,
                                 status=Build.Status.SUCCEEDED, digest="sha256:" + "cc" * 32, repository="team/hello")
    return Deployment.objects.create(function=function, environment=environment, trigger="cli", kind=Kind.DEPLOY,
                                     status=Status.PUSHING, build=build, commit_sha="c" * 40, started_at=timezone.now(),
                                     heartbeat_at=timezone.now(), **fields)


def ship(deployment: Deployment) -> str:
    deployment = Deployment.objects.select_related("function", "environment", "build").get(pk=deployment.pk)
    return settle(deployment, lambda: pipeline.ship(steps.Run(deployment), Recorder(deployment)))


def test_a_deploy_held_after_its_push_pins_its_digest_and_its_task_ends_without_finishing(function, envs, sent):
    staging, _ = envs
    protect(staging)
    deploy = pushed(function, staging, approvals_required=1)
    with mock.patch("deploy.aws.client", autospec=True) as client:
        assert ship(deploy) == Status.AWAITING_APPROVAL
    client.assert_not_called()  # nothing touched the Lambda
    deploy.refresh_from_db()
    assert (deploy.status, deploy.resume_at, deploy.digest) == (Status.AWAITING_APPROVAL, "update", deploy.build.digest)
    assert deploy.finished_at is None and deploy.gated_since is not None
    assert not deploy.steps.filter(name="update").exists()
    assert not deploy.beat()  # no heartbeat for a held row: it is not running


def test_a_released_deploy_resumes_at_its_update_step_with_its_pinned_digest(function, envs, sent, cast):
    staging, _ = envs
    protect(staging)
    deploy = pushed(function, staging, approvals_required=1, requested_by=cast["bob"])
    ship(deploy)
    approve(deploy, cast["alice"])
    assert gates.reconsider(deploy.pk).status == Status.QUEUED
    assert sent_pks(sent) == [deploy.pk]
    claimed = pipeline.claimed(deploy.pk, None, "task-2")
    assert claimed.status == Status.CHECKING  # not source: built and pushed before it was held
    with mock.patch("deploy.aws.client", autospec=True) as client:  # ECR lost the image meanwhile
        client.return_value.describe_images.side_effect = ClientError(
            {"Error": {"Code": "ImageNotFoundException", "Message": "gone"}}, "DescribeImages")
        assert pipeline.deploy(claimed) == Status.FAILED
    client.return_value.describe_images.assert_called_once_with(
        repositoryName="team/hello", imageIds=[{"imageDigest": "sha256:" + "cc" * 32}])
    claimed.refresh_from_db()
    assert claimed.error_code == "image-missing"
    update = claimed.steps.get(name="update")
    assert update.output.startswith("released by its gates: ships team/hello@sha256:cccc")
    assert not claimed.steps.filter(name__in=("source", "build", "push")).exists()


def test_the_gates_are_asked_again_in_the_transaction_that_enters_the_lambda_steps(function, envs, sent):
    _, production = envs
    promotion = request_promotion(function, production, trigger="api")
    claimed = pipeline.claimed(promotion.pk, None, "task-1")
    assert claimed.status == Status.CHECKING
    freeze(production)  # froze while it checked upstream
    assert queue.enter_lambda_steps(claimed, gate=gates.hold_reason) is False
    claimed.refresh_from_db()
    assert (claimed.status, claimed.error_code, claimed.resume_at) == (Status.FROZEN, "", "")  # held, not failed
    rollback = Deployment.objects.create(function=function, environment=production, trigger="cli",
                                         kind=Kind.ROLLBACK, status=Status.CHECKING)
    assert queue.enter_lambda_steps(rollback, gate=gates.hold_reason) is True  # a rollback's fallback passes


def test_a_cancel_that_came_first_wins_over_a_hold(function, envs):
    staging, _ = envs
    freeze(staging)
    deploy = pushed(function, staging)
    assert deploy.request_cancel()
    assert ship(deploy) == Status.CANCELLED


# --- Superseding -------------------------------------------------------------------------------------


def test_a_newer_request_supersedes_one_awaiting_approval(function, envs, sent):
    _, production = envs
    protect(production)
    older = request_promotion(function, production, trigger="api")
    newer = request_promotion(function, production, trigger="api")
    older.refresh_from_db()
    assert (older.status, older.superseded_by_id, older.error_code) == (Status.SUPERSEDED, newer.pk, "superseded")
    assert newer.status == Status.AWAITING_APPROVAL


def test_frozen_requests_wait_together_and_a_rollback_supersedes_them(function, envs, sent):
    _, production = envs
    released(function, "1", "a" * 40, environment=production)
    released(function, "2", "e" * 40, environment=production)
    freeze(production)
    older = request_promotion(function, production, trigger="api")
    newer = request_promotion(function, production, trigger="api")
    assert Deployment.objects.get(pk=older.pk).status == Status.FROZEN  # the freeze's end decides
    rollback = request_rollback(function, trigger="ui", environment="production")
    assert (rollback.status, sent_pks(sent)) == (Status.QUEUED, [rollback.pk])  # at once
    for row in (older, newer):
        row.refresh_from_db()
        assert (row.status, row.superseded_by_id) == (Status.SUPERSEDED, rollback.pk)


def test_a_request_made_after_the_freeze_ended_supersedes_what_it_held(function, envs, sent):
    _, production = envs
    window = freeze(production)
    held = request_promotion(function, production, trigger="api")
    thaw(window)
    later = request_promotion(function, production, trigger="api")
    held.refresh_from_db()
    assert (later.status, held.status, held.superseded_by_id) == (Status.QUEUED, Status.SUPERSEDED, later.pk)


# --- The beat's gates_due ------------------------------------------------------------------------------


def test_gates_due_runs_the_newest_request_a_freeze_held_and_supersedes_the_older(function, envs, sent):
    _, production = envs
    window = freeze(production)
    older = request_promotion(function, production, trigger="api")
    newer = request_promotion(function, production, trigger="api")
    assert gates.gates_due() == {"expired": [], "released": [], "superseded": []}  # still frozen
    thaw(window)
    assert gates.gates_due() == {"expired": [], "released": [newer.pk], "superseded": [older.pk]}
    older.refresh_from_db(), newer.refresh_from_db()
    assert (newer.status, newer.gated_since, sent_pks(sent)) == (Status.QUEUED, None, [newer.pk])
    assert (older.status, older.superseded_by_id, older.error_code) == (Status.SUPERSEDED, newer.pk, "superseded")
    assert older.error_message == f"promotion #{newer.pk}, the newest request the freeze on production held, runs " \
                                  "in its place"


def test_releasing_one_held_request_supersedes_the_older_ones_of_its_environment(function, envs, sent):
    _, production = envs
    window = freeze(production)
    older = request_promotion(function, production, trigger="api")
    newer = request_promotion(function, production, trigger="api")
    thaw(window)  # e.g. the window was deleted, and its page asked for the newer one at once
    assert gates.reconsider(newer.pk).status == Status.QUEUED
    older.refresh_from_db()
    assert (older.status, older.superseded_by_id) == (Status.SUPERSEDED, newer.pk)
    assert older.error_message == f"promotion #{newer.pk}, a newer request, was released before it"
    assert gates.gates_due() == {"expired": [], "released": [], "superseded": []}  # nothing left held


def test_a_thawed_request_that_still_needs_approval_goes_on_waiting_for_it(function, envs, sent, cast):
    _, production = envs
    protect(production)
    window = freeze(production)
    promotion = request_promotion(function, production, trigger="api", user=cast["bob"])
    thaw(window)
    gates.gates_due()
    assert Deployment.objects.get(pk=promotion.pk).status == Status.AWAITING_APPROVAL
    approve(promotion, cast["alice"])
    assert gates.gates_due()["released"] == [promotion.pk]
    assert sent_pks(sent) == [promotion.pk]


def test_gates_due_holds_an_approved_request_again_when_protection_was_raised(function, envs, sent, cast):
    _, production = envs
    protect(production)
    promotion = request_promotion(function, production, trigger="api", user=cast["bob"])
    approve(promotion, cast["alice"])
    Environment.objects.filter(pk=production.pk).update(required_approvals=2)  # raised: applies to it too
    assert gates.gates_due()["released"] == []
    assert Deployment.objects.get(pk=promotion.pk).status == Status.AWAITING_APPROVAL and sent.call_count == 0


def test_a_request_held_past_the_maximum_wait_ends_cancelled_gate_expired(function, envs, sent):
    _, production = envs
    protect(production)
    promotion = request_promotion(function, production, trigger="api")
    fresh = request_promotion(function, "production", trigger="api")  # supersedes it; then make an old one
    Deployment.objects.filter(pk=fresh.pk).update(
        gated_since=timezone.now() - timedelta(seconds=settings.SLIPWAY_GATE_MAX_WAIT + 60))
    assert gates.gates_due()["expired"] == [fresh.pk]
    fresh.refresh_from_db()
    assert (fresh.status, fresh.error_code) == (Status.CANCELLED, "gate-expired")
    assert "longer than SLIPWAY_GATE_MAX_WAIT (7 days)" in fresh.error_message
    assert AuditEvent.objects.filter(action="deployment.cancelled", detail__error_code="gate-expired").exists()
    assert Deployment.objects.get(pk=promotion.pk).status == Status.SUPERSEDED


def test_the_beat_runs_gates_due_on_the_rollbacks_queue_every_tick():
    entry = settings.CELERY_BEAT_SCHEDULE["gates-due"]
    assert (entry["task"], entry["schedule"]) == (GATES_DUE_TASK, float(settings.SLIPWAY_GATE_TICK))
    assert settings.CELERY_TASK_ROUTES[GATES_DUE_TASK] == {"queue": "rollbacks"}


# --- Rollbacks pass by; nothing else sees a held row ---------------------------------------------------


def test_a_rollback_runs_at_once_past_every_gate_and_its_audit_names_them(function, envs, sent):
    _, production = envs
    released(function, "1", "a" * 40, environment=production)
    released(function, "2", "e" * 40, environment=production)
    protect(production, 2, soak_seconds=600)
    window = freeze(production)
    rollback = request_rollback(function, trigger="ui", environment="production")
    assert (rollback.status, sent_pks(sent)) == (Status.QUEUED, [rollback.pk])
    assert pipeline.claimed(rollback.pk, Status.CHECKING, "task-1").status == Status.CHECKING
    audit = AuditEvent.objects.get(action="deployment.rollback_requested")
    assert audit.detail["passed_gates"] == [gates.describe(window), "2 approval(s) required", "a soak of 600 s"]


def test_a_rollback_of_an_ungated_environment_passed_no_gate(function, envs, sent):
    _, production = envs
    released(function, "1", "a" * 40, environment=production)
    released(function, "2", "e" * 40, environment=production)
    request_rollback(function, trigger="ui", environment="production")
    assert AuditEvent.objects.get(action="deployment.rollback_requested").detail["passed_gates"] == []


def test_the_sweeper_neither_fails_nor_resends_a_held_row(function, envs, sent):
    _, production = envs
    freeze(production)
    promotion = request_promotion(function, production, trigger="api")
    long_ago = timezone.now() - timedelta(hours=1)
    Deployment.objects.filter(pk=promotion.pk).update(heartbeat_at=long_ago, created_at=long_ago,
                                                      enqueued_at=long_ago, task_id="old")
    swept = sweeper.sweep()
    assert (swept["worker_lost"], swept["live_after_shift"], swept["redispatched_functions"]) == ([], [], [])
    assert Deployment.objects.get(pk=promotion.pk).status == Status.FROZEN and sent.call_count == 0


def test_the_lost_worker_handler_leaves_a_held_row_alone(function, envs, sent):
    from billiard.exceptions import WorkerLostError

    from workers import lost
    from workers.tasks import deploy as deploy_task

    staging, _ = envs
    protect(staging)
    deploy = pushed(function, staging, approvals_required=1, task_id="task-9")
    ship(deploy)
    lost.settle_after_lost_worker(sender=deploy_task, task_id="task-9", exception=WorkerLostError("killed"),
                                  args=[deploy.pk])
    deploy.refresh_from_db()
    assert (deploy.status, deploy.error_code) == (Status.AWAITING_APPROVAL, "")


def test_a_held_row_is_pending_on_gitlab():
    assert gitlab_state(Status.FROZEN) == gitlab_state(Status.AWAITING_APPROVAL) == PENDING


# --- Retention --------------------------------------------------------------------------------------------


def test_a_held_deploy_pins_its_digest_and_does_not_stop_retention(function, envs):
    staging, _ = envs
    protect(staging)
    deploy = pushed(function, staging, approvals_required=1)
    ship(deploy)
    assert retention.held_anywhere()[deploy.build.digest] == f"deploy #{deploy.pk} into hello (staging) ships it"
    with mock.patch("deploy.aws.client", autospec=True) as client:
        api = client.return_value
        api.list_versions_by_function.return_value = {"Versions": []}
        api.list_aliases.return_value = {"Aliases": []}
        api.describe_images.return_value = {"imageDetails": []}
        (report,) = retention.run(keep=1, dry_run=True, names=["hello"])
    assert (report.skipped, report.deferred) == ("", "")  # a held request is not an unfinished deployment
