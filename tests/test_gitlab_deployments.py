"""GitLab sees Slipway's deployments (portal/feedback/gitlab_deployments.py): environments and
deployments against a local GitLab that checks the API as documented (tests/fake_gitlab.py).
The run with a real worker is in tests/integration/test_feedback_pipeline.py."""

from __future__ import annotations

from unittest import mock

import pytest

from deploy import outbound
from portal.celery import GITLAB_DEPLOYMENT_TASK
from portal.feedback import gitlab_deployments as gitlab
from portal.models import Deployment, DeploymentStep, Environment, NotificationAttempt
from tests.conftest import add_environment
from tests.fake_gitlab import TOKEN
from tests.test_feedback import reporting

SHA = "5e6f7a8b9c0d" + "0" * 28
Status = Deployment.Status


@pytest.fixture
def quick(settings):
    settings.SLIPWAY_NOTIFY_TIMEOUT = 0.5
    settings.SLIPWAY_NOTIFY_ATTEMPTS = 2
    settings.SLIPWAY_NOTIFY_BACKOFF = 0.01
    settings.SLIPWAY_BASE_URL = "https://slipway.example.org"
    return settings


def in_lambda(function, *, ref="main", status=Status.UPDATING, **fields) -> Deployment:
    """A deployment as the worker leaves it once it entered its update step (its step recorded)."""
    deployment = Deployment.objects.create(function=function, trigger="api", commit_sha=SHA, ref=ref, status=status,
                                           **fields)
    DeploymentStep.objects.create(deployment=deployment, name="update", position=4)
    return deployment


def ended(deployment: Deployment, status: str) -> Deployment:
    assert deployment.finish(status)
    return deployment


def posts(fake):
    return [(c.body["status"], c.status) for c in fake.of("POST", "/deployments")]


def puts(fake):
    return [(c.path.rsplit("/", 1)[1], c.body["status"], c.status) for c in fake.of("PUT", "/deployments/")]


# --- One deployment, one POST, one final PUT --------------------------------------------------


def test_a_deploy_posts_running_then_puts_success(db, function, fake, quick):
    reporting(function, fake.url)
    deployment = in_lambda(function)
    assert gitlab.report(deployment.pk) == "running"
    ended(deployment, Status.SUCCEEDED)
    assert gitlab.report(deployment.pk) == "success"
    assert gitlab.report(deployment.pk) == "GitLab has success"  # a redelivered task sends nothing
    assert fake.errors == []
    (post,) = fake.of("POST", "/deployments")
    assert post.body == {"environment": "production/hello", "sha": SHA, "ref": "main", "tag": False,
                         "status": "running"}
    assert puts(fake) == [("900", "success", 200)]
    assert Deployment.objects.get(pk=deployment.pk).gitlab_deployment_id == 900


def test_the_gitlab_environment_is_made_once_with_its_tier_and_link(db, function, fake, quick):
    reporting(function, fake.url)
    staging = add_environment(function, "staging", "team-hello-staging", 1)
    for _ in range(2):
        gitlab.report(ended(in_lambda(function, environment=staging), Status.SUCCEEDED).pk)
    assert fake.environments == [{"id": 100, "name": "staging/hello", "state": "available", "tier": "staging",
                                  "external_url": "https://slipway.example.org/functions/hello/#environment-staging"}]
    assert len(fake.of("GET", "/environments")) == 1  # remembered: not looked up for the second deployment
    Environment.objects.filter(pk=staging.pk).update(gitlab_tier="testing")
    gitlab.report(ended(in_lambda(function, environment=staging), Status.SUCCEEDED).pk)
    assert fake.environments[0]["tier"] == "testing" and len(fake.environments) == 1


def test_a_failed_verify_ends_failed(db, function, fake, quick):
    reporting(function, fake.url)
    deployment = in_lambda(function, status=Status.VERIFYING)
    gitlab.report(deployment.pk)
    gitlab.report(ended(deployment, Status.FAILED).pk)
    assert posts(fake) == [("running", 201)] and puts(fake) == [("900", "failed", 200)]


@pytest.mark.parametrize("status", [Status.CANCELLED, Status.SUPERSEDED])
def test_a_cancel_or_a_supersede_ends_canceled(db, function, fake, quick, status):
    reporting(function, fake.url)
    deployment = in_lambda(function)
    gitlab.report(deployment.pk)
    gitlab.report(ended(deployment, status).pk)
    assert puts(fake) == [("900", "canceled", 200)]


def test_a_deployment_that_ends_before_its_lambda_steps_sends_nothing(db, function, fake, quick):
    reporting(function, fake.url)
    deployment = Deployment.objects.create(function=function, trigger="api", commit_sha=SHA, ref="main",
                                           status=Status.BUILDING)
    DeploymentStep.objects.create(deployment=deployment, name="build", position=2)
    assert gitlab.report(deployment.pk) == "nothing to report"
    assert gitlab.report(ended(deployment, Status.FAILED).pk) == "nothing to report"
    assert fake.calls == []


def test_one_whose_post_never_succeeded_gets_one_post_with_its_final_status(db, function, fake, quick):
    reporting(function, fake.url)
    deployment = ended(in_lambda(function), Status.SUCCEEDED)  # the running task was lost
    assert gitlab.report(deployment.pk) == "success"
    assert posts(fake) == [("success", 201)] and puts(fake) == []


def test_never_a_second_final_status(db, function, fake, quick):
    reporting(function, fake.url)
    deployment = in_lambda(function)
    gitlab.report(deployment.pk)
    ended(deployment, Status.SUCCEEDED)
    # Another task claimed the final status a moment before (the conditional UPDATE): this one sends nothing.
    Deployment.objects.filter(pk=deployment.pk).update(gitlab_deployment_final="success")
    assert gitlab.report(deployment.pk) == "GitLab has success"
    assert puts(fake) == []


@pytest.mark.postgres
def test_an_end_that_arrives_while_running_is_posted_leaves_and_the_holder_puts_it(db, function, fake, quick):
    reporting(function, fake.url)
    deployment = in_lambda(function)
    real_create = outbound.create_deployment
    overtaken = []

    def create_then_finish(*args, **kwargs):
        # While "running" is being posted, the deployment ends and its task arrives: the lease is taken.
        ended(Deployment.objects.get(pk=deployment.pk), Status.SUCCEEDED)
        overtaken.append(gitlab.report(deployment.pk))
        return real_create(*args, **kwargs)

    with mock.patch.object(outbound, "create_deployment", autospec=True, side_effect=create_then_finish):
        assert gitlab.report(deployment.pk) == "success"
    assert overtaken and overtaken[0].startswith("busy")
    assert posts(fake) == [("running", 201)] and puts(fake) == [("900", "success", 200)]


# --- Refs -------------------------------------------------------------------------------------


def test_a_tag_deploy_sends_the_tag(db, function, fake, quick):
    function.tag_pattern = "v*"
    function.save()
    reporting(function, fake.url)
    gitlab.report(in_lambda(function, ref="v1.2.0").pk)
    assert fake.of("POST", "/deployments")[0].body | {"status": ""} == {
        "environment": "production/hello", "sha": SHA, "ref": "v1.2.0", "tag": True, "status": ""}


def test_a_sha_deploy_and_a_promotion_send_the_branch_and_a_promotion_its_upstream_tag(db, function, fake, quick):
    function.tag_pattern = "v*"
    function.save()
    reporting(function, fake.url)
    staging = add_environment(function, "staging", "team-hello-staging", 1)
    by_sha = in_lambda(function, ref=SHA)
    assert gitlab.ref_of(by_sha) == ("main", False)
    upstream = ended(in_lambda(function, ref="v1.2.0", environment=staging), Status.SUCCEEDED)
    promotion = in_lambda(function, ref=SHA, kind=Deployment.Kind.PROMOTION, upstream=upstream)
    assert gitlab.ref_of(promotion) == ("v1.2.0", True)


# --- GitLab refuses, or does not answer -------------------------------------------------------


def test_a_timed_out_post_is_adopted_not_posted_again(db, function, fake, quick):
    reporting(function, fake.url)
    other = in_lambda(function)  # an older Slipway deployment of the same commit already holds its own id
    gitlab.report(other.pk)
    fake.hang_posts = 1  # GitLab makes the deployment, the answer never comes
    deployment = in_lambda(function)
    assert gitlab.report(deployment.pk) == "running"
    assert len(fake.deployments) == 2  # no third: the one the timed-out POST made was adopted
    assert Deployment.objects.get(pk=deployment.pk).gitlab_deployment_id == 901
    assert fake.of("GET", "/deployments")[0].query == {"environment": "production/hello", "status": "running",
                                                       "order_by": "id", "sort": "desc", "per_page": "50"}
    gitlab.report(ended(deployment, Status.SUCCEEDED).pk)
    assert puts(fake) == [("901", "success", 200)]
    attempts = NotificationAttempt.objects.filter(deployment=deployment, event="running").order_by("pk")
    assert [(a.outcome, a.status_code) for a in attempts] == [("failed", None), ("ok", 200)]
    assert "adopted GitLab deployment 901" in attempts[1].detail


def test_a_running_post_that_never_got_an_answer_is_ended_not_posted_again(db, function, fake, quick):
    reporting(function, fake.url)
    fake.hang_posts = 2  # both attempts made a deployment in GitLab, neither answered
    deployment = in_lambda(function)
    gitlab.report(deployment.pk)
    assert Deployment.objects.get(pk=deployment.pk).gitlab_deployment_id == 900  # adopted before the second POST
    assert len(fake.deployments) == 1


def test_the_end_of_a_running_post_lost_to_an_outage_puts_the_one_gitlab_made(db, function, fake, quick):
    reporting(function, fake.url)
    deployment = in_lambda(function)
    fake.deployments.append({"id": 900, "iid": 1, "ref": "main", "sha": SHA, "status": "running", "tag": False,
                             "environment": {"name": "production/hello"}})  # made by a POST whose answer was lost
    NotificationAttempt.objects.create(function=function, deployment=deployment, channel="deployment",
                                       event="running", outcome="failed", detail="timed out")
    gitlab.report(ended(deployment, Status.SUCCEEDED).pk)
    assert posts(fake) == [] and puts(fake) == [("900", "success", 200)]


def test_an_id_another_row_holds_is_never_adopted(db, function, fake, quick):
    reporting(function, fake.url)
    other = in_lambda(function)
    gitlab.report(other.pk)  # GitLab's 900, running, same sha and ref
    fake.lose_posts = 1  # a POST that times out before GitLab made anything
    deployment = in_lambda(function)
    gitlab.report(deployment.pk)
    assert fake.of("GET", "/deployments")  # it looked, found only 900 (held by the other row), posted again
    assert Deployment.objects.get(pk=deployment.pk).gitlab_deployment_id == 901
    assert Deployment.objects.get(pk=other.pk).gitlab_deployment_id == 900


@pytest.mark.parametrize(("setup", "code", "excerpt"), [
    (lambda fake: fake.protected.add("production/hello"), 403, "403 Forbidden"),
    (lambda fake: fake.refs.pop("main"), 400, "The branch or tag does not exist"),
])
def test_a_refusal_leaves_the_deployment_succeeded_and_the_failure_recorded(db, function, fake, quick, setup, code,
                                                                           excerpt):
    reporting(function, fake.url)
    setup(fake)
    deployment = in_lambda(function)
    gitlab.report(deployment.pk)
    gitlab.report(ended(deployment, Status.SUCCEEDED).pk)
    deployment.refresh_from_db()
    assert deployment.status == Status.SUCCEEDED and deployment.gitlab_deployment_id is None
    attempts = NotificationAttempt.objects.filter(deployment=deployment, channel="deployment",
                                                  event__in=("running", "success"))
    # A 4xx is not asked again: one attempt for running, one for the final POST.
    assert [(a.event, a.outcome, a.status_code) for a in attempts.order_by("pk")] == [
        ("running", "failed", code), ("success", "failed", code)]
    assert excerpt in attempts.first().detail
    assert fake.errors == []


def test_a_wrong_token_is_recorded_masked(db, function, fake, quick, client):
    reporting(function, fake.url, token="glpat-wrong-token-456")
    deployment = in_lambda(function)
    gitlab.report(deployment.pk)
    attempt = NotificationAttempt.objects.get(deployment=deployment)
    assert (attempt.event, attempt.status_code) == ("environment", 401)
    assert "glpat-wrong" not in attempt.detail and TOKEN not in attempt.detail


def test_the_deployment_page_shows_gitlabs_answer(db, function, fake, quick, cast, client):
    reporting(function, fake.url)
    fake.protected.add("production/hello")
    deployment = ended(in_lambda(function), Status.SUCCEEDED)
    gitlab.report(deployment.pk)
    client.force_login(cast["charlie"])
    page = client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert 'id="gitlab-deployment"' in page and "403" in page and "403 Forbidden" in page


# --- When the task is sent --------------------------------------------------------------------


def test_entering_the_first_lambda_step_sends_the_task_once(function, sent, django_capture_on_commit_callbacks):
    reporting(function, "https://gitlab.example.org")
    deployment = Deployment.objects.create(function=function, trigger="api", commit_sha=SHA, ref="main",
                                           status=Status.PUSHING)
    with django_capture_on_commit_callbacks(execute=True):
        assert deployment.enter_lambda(Status.UPDATING)
        deployment.advance(Status.VERIFYING)
        assert deployment.enter_shift()  # a deploy's shift is not its first Lambda step
    assert [c.kwargs["args"] for c in sent.call_args_list if c.args[0] == GITLAB_DEPLOYMENT_TASK] == [
        [deployment.pk]]


def test_a_rollbacks_alias_move_is_its_first_lambda_step(function, sent, django_capture_on_commit_callbacks):
    reporting(function, "https://gitlab.example.org")
    rollback = Deployment.objects.create(function=function, trigger="ui", commit_sha=SHA, ref=SHA,
                                         kind=Deployment.Kind.ROLLBACK, status=Status.CHECKING)
    with django_capture_on_commit_callbacks(execute=True):
        assert rollback.enter_shift()
    assert [c.kwargs["args"] for c in sent.call_args_list if c.args[0] == GITLAB_DEPLOYMENT_TASK] == [
        [rollback.pk]]


def test_nothing_is_sent_for_a_function_without_gitlab(function, sent, django_capture_on_commit_callbacks):
    deployment = Deployment.objects.create(function=function, trigger="api", commit_sha=SHA, ref="main",
                                           status=Status.PUSHING)
    with django_capture_on_commit_callbacks(execute=True):
        deployment.enter_lambda(Status.UPDATING)
    assert sent.call_args_list == []


def test_the_tier_defaults_by_name_and_the_client_refuses_an_unknown_one(function):
    assert [add_environment(function, name, f"team-hello-{name}", i).gitlab_tier
            for i, name in enumerate(["staging", "eu"], 1)] == ["staging", "other"]
    assert function.first_environment.gitlab_tier == "production"
    with pytest.raises(ValueError, match="not a GitLab tier"):
        outbound.create_environment("https://g", "p", "t", name="n", external_url="", tier="prod")


def test_the_environment_form_offers_the_tier(client, cast, function):
    client.force_login(cast["alice"])
    page = client.get(f"/functions/hello/environments/{function.first_environment.name}/edit/").content.decode()
    assert 'name="gitlab_tier"' in page and '<option value="production" selected>' in page


def test_the_sweep_resends_an_end_gitlab_never_had_only_for_one_that_touched_its_lambda(function, sent):
    from datetime import timedelta

    from django.utils import timezone

    from workers import tasks

    reporting(function, "https://gitlab.example.org")
    three_minutes_ago = timezone.now() - timedelta(minutes=3)
    lost = in_lambda(function, status=Status.SUCCEEDED, finished_at=three_minutes_ago)
    in_lambda(function, status=Status.FAILED, finished_at=three_minutes_ago, gitlab_deployment_final="failed")
    Deployment.objects.create(function=function, trigger="api", commit_sha=SHA, ref="main", status=Status.FAILED,
                              finished_at=three_minutes_ago)  # ended at its build: nothing for GitLab
    assert tasks.sweep()["gitlab_deployments_resent"] == [lost.pk]
    assert [c.kwargs["args"] for c in sent.call_args_list if c.args[0] == GITLAB_DEPLOYMENT_TASK] == [[lost.pk]]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_migration_sets_existing_environments_tiers_by_name(migrations):
    old = migrations(("portal", "0021_gates"))
    Fn, Env = old.get_model("portal", "Function"), old.get_model("portal", "Environment")
    fn = Fn.objects.create(name="fn", repository_url="https://gitlab.example.com/team/fn.git", ecr_repository="t/fn")
    for position, name in enumerate(("staging", "production", "eu")):
        Env.objects.create(function=fn, name=name, position=position, lambda_name=f"fn-{name}")
    new = migrations(("portal", "0022_gitlab_deployments"))
    tiers = dict(new.get_model("portal", "Environment").objects.filter(function_id=fn.pk)
                 .values_list("name", "gitlab_tier"))
    assert tiers == {"staging": "staging", "production": "production", "eu": "other"}
