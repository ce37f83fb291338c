"""Promotion in the domain and the worker's pipeline, without the stack: what
request_promotion refuses, soaks (superseded, released, cancelled by the beat's
promote_due), what a settled row sets off (after_finished: the next environment's
automatic promotion, or soaks cancelled), and the check step's GetAlias, with only
the one SDK seam (deploy.aws.client) patched. End to end on the local plane:
tests/integration/test_promotion.py."""

from datetime import timedelta
from unittest import mock

import pytest
from botocore.exceptions import ClientError
from django.conf import settings
from django.utils import timezone

from portal.celery import PROMOTE_DUE_TASK
from portal.deployments import pipeline, promotion, sweeper
from portal.deployments.promotion import after_finished, promote_due, request_promotion
from portal.models import AuditEvent, Deployment, Function
from tests.conftest import refused, released, staged

Status, Kind, Trigger = Deployment.Status, Deployment.Kind, Deployment.Trigger
NOT_VERIFIED = "not-verified-upstream"


def live_in(environment, version: str, sha: str, *, minutes_ago: int = 0, **fields) -> Deployment:
    """A release that went live in `environment` (finished `minutes_ago`)."""
    return released(environment.function, version, sha, environment=environment,
                    finished_at=timezone.now() - timedelta(minutes=minutes_ago), **fields)


def rolled_back(environment, to: Deployment, off: Deployment) -> Deployment:
    """A succeeded rollback in `environment` from `off`'s version to `to`'s."""
    return Deployment.objects.create(function=environment.function, environment=environment, trigger="cli",
                                     kind=Kind.ROLLBACK, status=Status.SUCCEEDED, build=to.build,
                                     version=to.version, target_version=to.version,
                                     previous_version=off.version, finished_at=timezone.now())


@pytest.fixture
def envs(function):
    """hello as staging (team-hello-stg, position 0) then production (team-hello, manual)."""
    return staged(function)


# --- request_promotion's refusals ------------------------------------------------------


def test_a_promotion_into_the_first_environment_is_refused_deploy_instead(function, envs, sent):
    staging, _ = envs
    error = refused(lambda: request_promotion(function, "staging", trigger="api"), "deploy-instead")
    assert error.status == 400 and "deploy to it instead" in error.message
    assert not Deployment.objects.filter(kind=Kind.PROMOTION).exists()


def test_nothing_live_upstream_is_not_verified(function, envs, sent):
    error = refused(lambda: request_promotion(function, "production", trigger="api"), NOT_VERIFIED)
    assert error.message == "nothing is live in hello (staging) to promote"


def test_a_release_that_is_not_what_upstream_serves_is_refused(function, envs, sent):
    staging, _ = envs
    live_in(staging, "1", "a" * 40, minutes_ago=5)
    live_in(staging, "2", "b" * 40)
    error = refused(lambda: request_promotion(function, "production", trigger="api", release="1"), NOT_VERIFIED)
    assert "is not what hello (staging) serves (version 2" in error.message
    promoted = request_promotion(function, "production", trigger="api", release="2")
    assert (promoted.kind, promoted.status, promoted.digest) == (Kind.PROMOTION, Status.QUEUED, "sha256:" + "bb" * 32)


def test_a_digest_staging_was_rolled_back_from_is_not_verified(function, envs, sent):
    staging, _ = envs
    one = live_in(staging, "1", "a" * 40, minutes_ago=5)
    two = live_in(staging, "2", "b" * 40, minutes_ago=2)
    rolled_back(staging, to=one, off=two)
    error = refused(lambda: request_promotion(function, "production", trigger=Trigger.PROMOTION, upstream=two),
                    NOT_VERIFIED)
    assert f"{two.build.digest} is not verified in staging" in error.message
    # What staging serves after the rollback, release 1's image, may be promoted.
    assert request_promotion(function, "production", trigger="api").digest == one.build.digest


def test_an_archived_function_accepts_no_promotion(function, envs, sent):
    staging, _ = envs
    live_in(staging, "1", "a" * 40)
    Function.objects.filter(pk=function.pk).update(archived_at=timezone.now())
    function.refresh_from_db()
    error = refused(lambda: request_promotion(function, "production", trigger="api"), "refused")
    assert "archived" in error.message
    assert not Deployment.objects.filter(kind=Kind.PROMOTION).exists()


# --- Soaks -----------------------------------------------------------------------------------


@pytest.fixture
def automatic(function):
    """staging then production, promoted automatically after a 60 s soak."""
    return staged(function, promotion="automatic", soak_seconds=60)


def test_a_newer_soak_into_the_same_environment_supersedes_the_older(function, automatic, sent):
    staging, production = automatic
    first = request_promotion(function, production, trigger=Trigger.PROMOTION,
                              upstream=live_in(staging, "1", "a" * 40, minutes_ago=1), soak=True)
    assert first.status == Status.SOAKING and first.promote_at > timezone.now() + timedelta(seconds=50)
    second = request_promotion(function, production, trigger=Trigger.PROMOTION,
                               upstream=live_in(staging, "2", "b" * 40), soak=True)
    first.refresh_from_db()
    assert (first.status, first.superseded_by_id) == (Status.SUPERSEDED, second.pk)
    assert second.status == Status.SOAKING
    sent.assert_not_called()  # nothing soaking is sent to a worker


def test_promote_due_queues_the_soaks_that_ended_and_leaves_the_others(function, automatic, sent,
                                                                      django_capture_on_commit_callbacks):
    staging, production = automatic
    soak = request_promotion(function, production, trigger=Trigger.PROMOTION,
                             upstream=live_in(staging, "1", "a" * 40), soak=True)
    assert promote_due() == []
    Deployment.objects.filter(pk=soak.pk).update(promote_at=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert promote_due() == [soak.pk]
    soak.refresh_from_db()
    assert soak.status == Status.QUEUED and soak.enqueued_at is not None
    assert sent.call_args.kwargs["args"] == [soak.pk]


@pytest.mark.postgres
def test_promote_due_cancels_a_soak_whose_digest_upstream_rolled_back_from(function, automatic, sent):
    staging, production = automatic
    one = live_in(staging, "1", "a" * 40, minutes_ago=5)
    two = live_in(staging, "2", "b" * 40, minutes_ago=2)
    soak = request_promotion(function, production, trigger=Trigger.PROMOTION, upstream=two, soak=True)
    Deployment.objects.filter(pk=soak.pk).update(promote_at=timezone.now() - timedelta(seconds=1))
    rolled_back(staging, to=one, off=two)  # recorded without after_finished: the beat still catches it
    assert promote_due() == []
    soak.refresh_from_db()
    assert (soak.status, soak.error_code) == (Status.CANCELLED, NOT_VERIFIED)
    assert "no longer verified in staging" in soak.error_message
    sent.assert_not_called()


def test_the_beat_runs_promote_due_on_the_rollbacks_queue_every_tick():
    scheduled = [e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == PROMOTE_DUE_TASK]
    assert scheduled == [{"task": PROMOTE_DUE_TASK, "schedule": float(settings.SLIPWAY_PROMOTION_TICK)}]
    assert settings.SLIPWAY_PROMOTION_TICK == 15
    assert settings.CELERY_TASK_ROUTES[PROMOTE_DUE_TASK] == {"queue": "rollbacks"}


# --- after_finished: what a settled row sets off -------------------------------------------------


@pytest.mark.postgres
def test_a_succeeded_staging_deploy_requests_the_automatic_promotion_after_the_soak(function, automatic, sent):
    staging, production = automatic
    deploy = live_in(staging, "1", "a" * 40)
    after_finished(deploy)
    soak = Deployment.objects.get(kind=Kind.PROMOTION)
    assert (soak.environment, soak.status, soak.trigger) == (production, Status.SOAKING, Trigger.PROMOTION)
    assert (soak.digest, soak.upstream, soak.build) == (deploy.build.digest, deploy, deploy.build)
    assert 55 < (soak.promote_at - timezone.now()).total_seconds() <= 60
    event = AuditEvent.objects.get(action="deployment.promotion_requested")
    assert event.detail["source"] == "staging" and event.actor_label == Trigger.PROMOTION


def test_without_a_soak_the_automatic_promotion_is_queued_at_once(function, sent,
                                                                 django_capture_on_commit_callbacks):
    staging, _ = staged(function, promotion="automatic", soak_seconds=0)
    with django_capture_on_commit_callbacks(execute=True):
        after_finished(live_in(staging, "1", "a" * 40))
    assert Deployment.objects.get(kind=Kind.PROMOTION).status == Status.QUEUED
    assert sent.call_count == 1


def test_a_manual_next_environment_gets_nothing(function, envs, sent):
    staging, _ = envs
    after_finished(live_in(staging, "1", "a" * 40))
    assert not Deployment.objects.filter(kind=Kind.PROMOTION).exists()


def test_a_paused_next_environment_is_skipped_and_the_audit_log_says_why(function, automatic, sent):
    staging, production = automatic
    production.paused_reason = "rolled back to version 3 by alice"
    production.save()
    deploy = live_in(staging, "1", "a" * 40)
    after_finished(deploy)
    assert not Deployment.objects.filter(kind=Kind.PROMOTION).exists()
    event = AuditEvent.objects.get(action="deployment.promotion_skipped")
    assert event.detail == {"deployment": deploy.pk, "environment": "production", "source": "staging",
                            "digest": deploy.build.digest,
                            "reason": "production is paused: rolled back to version 3 by alice"}


def soaking_from(function, staging, production) -> Deployment:
    return request_promotion(function, production, trigger=Trigger.PROMOTION,
                             upstream=live_in(staging, "1", "a" * 40, minutes_ago=1), soak=True)


def test_a_failed_staging_deploy_during_the_soak_cancels_it(function, automatic, sent):
    staging, production = automatic
    soak = soaking_from(function, staging, production)
    failed = Deployment.objects.create(function=function, environment=staging, trigger="webhook",
                                       status=Status.FAILED, error_code="build-failed", finished_at=timezone.now())
    after_finished(failed)
    soak.refresh_from_db()
    assert (soak.status, soak.error_code) == (Status.CANCELLED, NOT_VERIFIED)
    assert soak.error_message == f"deploy #{failed.pk} failed in staging during the soak"


def test_a_staging_rollback_during_the_soak_cancels_it(function, automatic, sent):
    staging, production = automatic
    soak = soaking_from(function, staging, production)
    back = rolled_back(staging, to=soak.upstream, off=soak.upstream)
    after_finished(back)
    soak.refresh_from_db()
    assert (soak.status, soak.error_code) == (Status.CANCELLED, NOT_VERIFIED)
    assert f"rollback #{back.pk} of staging" in soak.error_message


def test_a_failed_production_deploy_leaves_staging_soaks_alone(function, automatic, sent):
    staging, production = automatic
    soak = soaking_from(function, staging, production)
    after_finished(Deployment.objects.create(function=function, environment=production, trigger="cli",
                                             kind=Kind.PROMOTION, status=Status.FAILED, finished_at=timezone.now()))
    soak.refresh_from_db()
    assert soak.status == Status.SOAKING


def test_a_deploy_settled_live_by_the_sweeper_is_promoted_on(transactional_db, function, sent):
    """Its worker died after the shift: the sweeper settles it succeeded, and that counts."""
    from django.db.models import Q

    staging, production = staged(function, promotion="automatic", soak_seconds=30)
    deploy = live_in(staging, "1", "a" * 40)
    Deployment.objects.filter(pk=deploy.pk).update(status=Status.SHIFTING, finished_at=None)
    deploy.refresh_from_db()
    deploy.steps.create(name="shift", position=1, status="succeeded")
    assert sweeper.settle_lost(deploy, Q(), "the worker died", "sweeper")
    assert Deployment.objects.get(kind=Kind.PROMOTION, environment=production).status == Status.SOAKING


# --- The check step, with the one SDK seam patched -----------------------------------------------


def claimed_promotion(function, staging, production) -> Deployment:
    live_in(staging, "2", "b" * 40)
    queued = request_promotion(function, production, trigger="cli")
    return pipeline.claimed(queued.pk, None, "task-1")


def not_found(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "ResourceNotFoundException", "Message": "gone"}}, operation)


@pytest.mark.postgres
def test_the_check_step_cancels_when_staging_alias_serves_another_digest(transactional_db, function, sent):
    staging, production = staged(function)
    promoted = claimed_promotion(function, staging, production)
    assert promoted.status == Status.CHECKING  # first=None: the first step of a promotion's plan
    with mock.patch("deploy.aws.client", autospec=True) as client:
        api = client.return_value
        api.get_alias.return_value = {"Name": "live", "FunctionVersion": "3"}
        api.get_function.return_value = {"Code": {"ResolvedImageUri": "123.dkr.ecr/team/hello@sha256:" + "c" * 64}}
        assert pipeline.promote(promoted) == Status.CANCELLED
    api.get_alias.assert_called_once_with(FunctionName="team-hello-stg", Name="live")
    api.get_function.assert_called_once_with(FunctionName="team-hello-stg", Qualifier="3")
    api.update_function_code.assert_not_called()
    api.describe_images.assert_not_called()
    promoted.refresh_from_db()
    assert (promoted.status, promoted.error_code) == (Status.CANCELLED, NOT_VERIFIED)
    assert promoted.error_message.startswith("staging's alias live (team-hello-stg) serves version 3 (sha256:ccc")
    assert list(promoted.steps.values_list("name", "status")) == [("check", "failed")]


def test_the_check_step_fails_image_missing_when_ecr_lost_the_digest(transactional_db, function, sent):
    staging, production = staged(function)
    promoted = claimed_promotion(function, staging, production)
    with mock.patch("deploy.aws.client", autospec=True) as client:
        api = client.return_value
        api.get_alias.return_value = {"Name": "live", "FunctionVersion": "2"}
        api.get_function.return_value = {"Code": {"ImageUri": "123.dkr.ecr/team/hello@" + promoted.digest}}
        api.describe_images.side_effect = ClientError(
            {"Error": {"Code": "ImageNotFoundException", "Message": "no such image"}}, "DescribeImages")
        assert pipeline.promote(promoted) == Status.FAILED
    promoted.refresh_from_db()
    assert promoted.error_code == "image-missing" and promoted.digest in promoted.error_message
    assert promoted.build.image_gone_at is not None
    check = promoted.steps.get(name="check")
    assert "staging's alias live (team-hello-stg) serves version 2 = sha256:bb" in check.output
    api.update_function_code.assert_not_called()


def test_the_check_step_cancels_when_staging_has_no_alias(transactional_db, function, sent):
    staging, production = staged(function)
    promoted = claimed_promotion(function, staging, production)
    with mock.patch("deploy.aws.client", autospec=True) as client:
        client.return_value.get_alias.side_effect = not_found("GetAlias")
        assert pipeline.promote(promoted) == Status.CANCELLED
    promoted.refresh_from_db()
    assert promoted.error_code == NOT_VERIFIED and "does not exist" in promoted.error_message


def test_promotion_module_names_its_code_in_the_catalogue():
    from deploy.errors import CATALOGUE

    assert promotion.NOT_VERIFIED in CATALOGUE and "promote" in CATALOGUE["image-missing"].meaning
