"""Promotion end to end on the real local stack: the session's Celery worker, a beat
of this module's own (SLIPWAY_PROMOTION_TICK=1), Docker with BuildKit, Redis and the
local AWS plane. One build, two environments: what reaches production is the digest
that went live in staging, shipped without a build."""

from __future__ import annotations

import contextlib

import pytest
from django.utils import timezone

from deploy import aws
from portal.core.errors import RequestRefused
from portal.deployments import request_promotion
from portal.deployments.requesting import request_deploy, request_rollback
from portal.models import Deployment, Environment
from tests.conftest import wait_for
from tests.integration.conftest import invoke_live, own_beat, slow_dockerfile, wait_done

pytestmark = pytest.mark.integration
Status, Kind = Deployment.Status, Deployment.Kind
PROMOTION_STEPS = ["check", "update", "wait", "publish", "verify", "shift"]


@pytest.fixture(scope="module")
def beat(tmp_path_factory):
    """A celery beat of this module's own: promote_due every second, the other entries held off."""
    with own_beat(tmp_path_factory.mktemp("beat"), SLIPWAY_PROMOTION_TICK=1) as process:
        yield process


def two_environments(function, *, promotion: str = "manual", soak_seconds: int = 0):
    """The fixture function as staging (a Lambda of its own, where pushes deploy) then
    production; both Lambdas are removed afterwards (the fixture removes the first's)."""
    production = function.first_environment
    Environment.objects.filter(pk=production.pk).update(position=1, promotion=promotion, soak_seconds=soak_seconds)
    staging = Environment.objects.create(function=function, name="staging", position=0,
                                         lambda_name=f"{production.lambda_name}-stg", memory_mb=256, timeout_s=30,
                                         execution_role_arn=production.execution_role_arn)
    production.refresh_from_db()
    return staging, production


@pytest.fixture
def lambdas_removed(fixture_function):
    yield
    aws.reset()
    for name in (fixture_function.environments.values_list("lambda_name", flat=True)):
        with contextlib.suppress(Exception):
            aws.client("lambda").delete_function(FunctionName=name)


def live(deployment: Deployment) -> Deployment:
    done = wait_done(deployment)
    assert done.status == Status.SUCCEEDED, f"{done.kind} #{done.pk}: {done.error_code} {done.error_message}"
    return done


def image_of(environment: Environment, version: str) -> str:
    found = aws.client("lambda").get_function(FunctionName=environment.lambda_name, Qualifier=version)
    code = found["Code"]
    return code.get("ResolvedImageUri") or code["ImageUri"]


def promotion_into(environment: Environment) -> Deployment | None:
    return Deployment.objects.filter(environment=environment, kind=Kind.PROMOTION).order_by("-pk").first()


def test_a_push_goes_live_in_staging_then_the_same_digest_in_production_after_the_soak(
        worker, beat, fixture_function, lambdas_removed, repo):
    staging, production = two_environments(fixture_function, promotion="automatic", soak_seconds=3)
    sha = repo.release("one")
    deploy = live(request_deploy(fixture_function, trigger="cli"))
    assert deploy.environment == staging and deploy.commit_sha == sha
    soak = promotion_into(production)
    assert (soak.status, soak.trigger, soak.upstream_id) == (Status.SOAKING, "promotion", deploy.pk)
    assert soak.digest == deploy.build.digest and soak.promote_at > timezone.now()

    promoted = live(soak)
    assert promoted.started_at >= soak.promote_at  # released by the beat once the soak ended, not before
    timeline = list(promoted.steps.order_by("position").values_list("name", "status"))
    assert timeline == [(name, "succeeded") for name in PROMOTION_STEPS]  # no source, build or push
    check = promoted.steps.get(name="check").output
    assert f"serves version {deploy.version} = {deploy.build.digest}" in check
    # The same bytes in both Lambdas, by AWS's own account.
    assert image_of(staging, deploy.version).endswith("@" + deploy.build.digest)
    assert image_of(production, promoted.version).endswith("@" + deploy.build.digest)
    assert invoke_live(fixture_function)["release"] == "one"  # the first environment: staging
    from deploy import lambdas

    answer = lambdas.invoke(production.lambda_name, production.alias, {"probe": 1})
    assert answer.result == {"release": "one", "echo": {"probe": 1}}
    assert fixture_function.builds.count() == 1  # built once


def test_a_failed_staging_deploy_during_the_soak_cancels_the_promotion(worker, fixture_function, lambdas_removed,
                                                                       repo):
    staging, production = two_environments(fixture_function, promotion="automatic", soak_seconds=600)
    repo.release("one")
    live(request_deploy(fixture_function, trigger="cli"))
    soak = promotion_into(production)
    assert soak.status == Status.SOAKING
    fixture_function.smoke_event = {"fail": True}  # the next release fails its verify step in staging
    fixture_function.save(update_fields=["smoke_event"])
    repo.release("two")
    failed = wait_done(request_deploy(fixture_function, trigger="cli"))
    assert (failed.status, failed.error_code) == (Status.FAILED, "smoke-error-result")
    soak.refresh_from_db()
    assert (soak.status, soak.error_code) == (Status.CANCELLED, "not-verified-upstream")
    assert soak.error_message == f"deploy #{failed.pk} failed in staging during the soak"
    assert not _exists(production.lambda_name)  # no promotion ever ran


def _exists(name: str) -> bool:
    from deploy import lambdas

    return lambdas.get_configuration(name) is not None


def test_a_digest_staging_rolled_back_from_is_refused(worker, fixture_function, lambdas_removed, repo):
    staging, production = two_environments(fixture_function, promotion="automatic", soak_seconds=600)
    repo.release("one")
    one = live(request_deploy(fixture_function, trigger="cli"))
    repo.release("two")
    two = live(request_deploy(fixture_function, trigger="cli"))
    soak = promotion_into(production)
    assert (soak.upstream_id, soak.status) == (two.pk, Status.SOAKING)  # release one's soak was superseded by it
    back = live(request_rollback(fixture_function, trigger="cli", environment="staging"))
    assert back.version == one.version
    soak.refresh_from_db()
    assert (soak.status, soak.error_code) == (Status.CANCELLED, "not-verified-upstream")
    before = Deployment.objects.filter(environment=production).count()
    for ask in (dict(release=two.build.digest), dict(upstream=two)):
        with pytest.raises(RequestRefused) as refused:
            request_promotion(fixture_function, "production", trigger="api", **ask)
        assert refused.value.code == "not-verified-upstream", refused.value.message
    assert Deployment.objects.filter(environment=production).count() == before  # nothing was queued


@pytest.mark.postgres
def test_two_environments_deploy_concurrently_without_interleaving_on_either_lambda(worker, fixture_function,
                                                                                     lambdas_removed, repo):
    staging, production = two_environments(fixture_function)
    repo.release("one")
    one = live(request_deploy(fixture_function, trigger="cli"))
    repo.release("two", dockerfile=slow_dockerfile(f"promotion-{fixture_function.name}", 15))
    deploy = request_deploy(fixture_function, trigger="cli")
    wait_for(lambda: Deployment.objects.get(pk=deploy.pk).status == Status.BUILDING, 60, "staging's build")
    promoted = live(request_promotion(fixture_function, "production", trigger="api"))
    deploy.refresh_from_db()
    assert not deploy.is_terminal, "the promotion waited for staging's deploy: environments must not queue together"
    deploy = live(deploy)
    assert promoted.digest == one.build.digest and deploy.build.digest != one.build.digest
    # Each Lambda holds what its own deployments wrote, and their writes never overlapped on it.
    assert image_of(production, promoted.version).endswith("@" + one.build.digest)
    assert image_of(staging, deploy.version).endswith("@" + deploy.build.digest)
    for environment in (staging, production):
        windows = sorted((d.steps.get(name="update").started_at, d.steps.get(name="shift").finished_at, d.pk)
                         for d in Deployment.objects.filter(environment=environment, status=Status.SUCCEEDED))
        for (_, end, earlier), (start, _, later) in zip(windows, windows[1:], strict=False):
            assert start >= end, f"#{later} wrote {environment.lambda_name} while #{earlier} still did"
    from deploy import lambdas

    assert lambdas.alias_version(staging.lambda_name, staging.alias) == deploy.version
    assert lambdas.alias_version(production.lambda_name, production.alias) == promoted.version
