import pytest

from portal.models import Build, Deployment, DeploymentStep, Function
from tests.conftest import create_function

Status = Deployment.Status


@pytest.fixture
def deployment(function):
    return Deployment.objects.create(function=function, trigger=Deployment.Trigger.CLI, ref="main")


@pytest.mark.postgres
def test_it_claims_a_queued_deployment_only_once(deployment):
    other = Deployment.objects.get(pk=deployment.pk)  # a second worker's copy
    assert deployment.claim(Status.SOURCE) is True
    assert other.claim(Status.SOURCE) is False
    assert Deployment.objects.get(pk=deployment.pk).started_at is not None


def test_finish_refuses_a_non_terminal_status(deployment):
    deployment.claim(Status.SOURCE)
    with pytest.raises(Deployment.TransitionError, match="needs a terminal status"):
        deployment.finish(Status.BUILDING)
    assert Deployment.objects.get(pk=deployment.pk).status == Status.SOURCE


def test_a_terminal_status_cannot_be_left(deployment):
    deployment.claim(Status.SOURCE)
    assert deployment.finish(Status.FAILED, "boom", "it broke") is True
    stale = Deployment.objects.get(pk=deployment.pk)
    with pytest.raises(Deployment.TransitionError, match="is failed; cannot move to building"):
        stale.advance(Status.BUILDING)
    assert stale.claim(Status.SOURCE) is False
    assert stale.finish(Status.SUCCEEDED) is False
    assert Deployment.objects.get(pk=deployment.pk).status == Status.FAILED


def test_it_advances_through_running_steps_and_records_the_heartbeat(deployment):
    deployment.claim(Status.SOURCE)
    before = deployment.heartbeat_at
    deployment.advance(Status.BUILDING)
    row = Deployment.objects.get(pk=deployment.pk)
    assert row.status == Status.BUILDING and row.heartbeat_at >= before


def test_cancel_ends_a_queued_deployment_at_once(deployment):
    assert deployment.request_cancel() is True
    assert Deployment.objects.get(pk=deployment.pk).status == Status.CANCELLED


def test_cancel_of_a_building_deployment_is_a_request_and_too_late_after_update(deployment):
    deployment.claim(Status.BUILDING)
    assert deployment.request_cancel() is True
    row = Deployment.objects.get(pk=deployment.pk)
    assert (row.status, row.cancel_requested) == (Status.BUILDING, True)
    deployment.advance(Status.UPDATING)
    deployment.cancel_requested = False
    Deployment.objects.filter(pk=deployment.pk).update(cancel_requested=False)
    assert deployment.request_cancel() is False


def test_a_cancel_accepted_after_the_push_keeps_the_deployment_from_touching_the_lambda(deployment):
    deployment.claim(Status.PUSHING)
    assert deployment.request_cancel() is True
    assert deployment.enter_lambda(Status.UPDATING) is False
    assert Deployment.objects.get(pk=deployment.pk).status == Status.PUSHING


def test_a_rollback_cancelled_in_its_check_step_never_enters_its_shift(deployment):
    deployment.claim(Status.CHECKING)
    assert deployment.request_cancel() is True
    assert deployment.enter_shift() is False
    assert Deployment.objects.get(pk=deployment.pk).status == Status.CHECKING


def test_a_cancel_after_the_move_to_updating_is_refused(deployment):
    deployment.claim(Status.PUSHING)
    assert deployment.enter_lambda(Status.UPDATING) is True
    assert deployment.request_cancel() is False
    assert Deployment.objects.get(pk=deployment.pk).cancel_requested is False


def test_every_status_is_either_waiting_running_rolling_out_or_terminal():
    # SOAKING and the gates' statuses are apart on purpose: dispatch, claim and the sweeper
    # look only at queued and running rows. A rollout between ticks has no heartbeat.
    assert set(Status) == {*Deployment.WAITING, *Deployment.RUNNING, *Deployment.ROLLOUT, *Deployment.TERMINAL}
    assert Deployment.WAITING == (Status.QUEUED, Status.SOAKING, Status.AWAITING_APPROVAL, Status.FROZEN)
    for apart in (Status.SOAKING, *Deployment.GATED, *Deployment.ROLLOUT):
        assert apart not in Deployment.RUNNING and apart not in Deployment.TERMINAL
    assert not set(Deployment.ROLLOUT) & set(Deployment.WAITING)
    assert Deployment._meta.get_field("status").max_length >= max(len(status) for status in Status)


def test_build_tag_is_the_commit_its_inputs_and_the_architecture(function):
    build = Build(function=function, commit_sha="3f9c2a1b7d4e" + "0" * 28, architecture="arm64",
                  inputs_digest="5e8a01c2" + "f" * 56)
    assert build.tag == "3f9c2a1b7d4e-5e8a01c2-arm64"
    build.architecture = "x86_64"
    assert build.tag == "3f9c2a1b7d4e-5e8a01c2-amd64"


def _function(name: str, **fields):
    return create_function(name=name, repository_url="https://gitlab.example.com/team/mono.git",
                           ecr_repository="team/mono", lambda_name=f"team-{name}", **fields)


def test_two_functions_of_one_repository_never_share_an_image_built_from_other_inputs(db, settings):
    from portal.deployments.steps import build_inputs

    api, worker = _function("api", context_path="api"), _function("worker", context_path="worker")
    sha = "c" * 40
    digests = {Build.digest_inputs(sha, "arm64", build_inputs(f)) for f in (api, worker)}
    assert len(digests) == 2


def test_changing_a_build_arg_or_the_base_image_changes_the_build(db, settings):
    from portal.deployments.steps import build_inputs

    function = _function("api")
    before = Build.digest_inputs("c" * 40, "arm64", build_inputs(function))
    function.build_args = {"MODEL": "v2"}
    with_arg = Build.digest_inputs("c" * 40, "arm64", build_inputs(function))
    settings.SLIPWAY_BASE_IMAGES = {**settings.SLIPWAY_BASE_IMAGES, "arm64": "registry.example/python:3.12-next"}
    with_base = Build.digest_inputs("c" * 40, "arm64", build_inputs(function))
    assert len({before, with_arg, with_base}) == 3


def test_a_lambda_belongs_to_at_most_one_function(db):
    from django.db import IntegrityError, transaction

    _function("api")
    with pytest.raises(IntegrityError), transaction.atomic():
        create_function(name="thief", repository_url="https://gitlab.example.com/x/y.git",
                        ecr_repository="x/y", lambda_name="team-api")
    assert Function.objects.filter(environments__lambda_name="team-api").count() == 1


def test_two_environments_never_share_a_lambda_and_each_gets_its_drift_state(function):
    from django.core.exceptions import ValidationError

    from portal.models import DriftState, Environment

    staging = Environment.objects.create(function=function, name="staging", position=1, lambda_name="team-hello-stg")
    assert DriftState.objects.filter(environment=staging).exists()  # made with it, as a function's side rows
    assert [e.name for e in function.environments.all()] == ["production", "staging"]
    assert function.first_environment.lambda_name == "team-hello"
    taken = Environment(function=function, name="qa", position=2, lambda_name="team-hello")
    with pytest.raises(ValidationError) as refused:
        taken.full_clean()
    assert refused.value.message_dict["lambda_name"] == ["another environment already deploys to this Lambda"]


def test_a_deployment_that_names_no_environment_goes_to_the_first(function):
    from portal.models import Environment

    Environment.objects.create(function=function, name="staging", position=1, lambda_name="team-hello-stg")
    deployment = Deployment.objects.create(function=function, trigger="cli")
    assert deployment.environment == function.first_environment and deployment.environment.name == "production"


def test_a_build_cannot_start_twice_or_succeed_without_building(function):
    build = Build.objects.create(function=function, commit_sha="c" * 40, architecture="arm64", inputs_digest="d")
    with pytest.raises(Build.TransitionError, match="cannot succeed"):
        build.succeed(digest="sha256:" + "1" * 64)
    build.start()
    with pytest.raises(Build.TransitionError, match="is building; cannot start"):
        Build.objects.get(pk=build.pk).start()
    build.succeed(digest="sha256:" + "1" * 64)
    assert (build.status, build.finished_at is not None) == (Build.Status.SUCCEEDED, True)
    assert Build.fail_unfinished(build.pk) is False


def test_step_output_loses_nul_bytes_and_is_capped_keeping_head_and_tail():
    text = "start\x00" + "x" * 600_000 + "end"
    clean = DeploymentStep.clean_output(text)
    assert "\x00" not in clean
    assert clean.startswith("start") and clean.endswith("end") and len(clean) < 270_000
    assert "characters cut" in clean


@pytest.mark.parametrize("url, expected", [
    ("https://gitlab.example.com/team/hello.git", "https://gitlab.example.com/team/hello/-/commit/abc"),
    ("git@gitlab.example.com:team/hello.git", "https://gitlab.example.com/team/hello/-/commit/abc"),
    ("ssh://git@gitlab.example.com:2222/team/hello.git", "https://gitlab.example.com/team/hello/-/commit/abc"),
    ("/srv/repos/hello", ""),
])
def test_a_commit_links_to_the_repositorys_page(function, url, expected):
    function.repository_url = url
    assert function.commit_url("abc") == expected


def test_a_build_pushed_again_after_retention_deleted_its_image_is_no_longer_marked_gone(function):
    from django.utils import timezone

    build = Build.objects.create(function=function, commit_sha="c" * 40, architecture="arm64", inputs_digest="d",
                                 status=Build.Status.SUCCEEDED, digest="sha256:" + "1" * 64,
                                 image_gone_at=timezone.now())
    build.start()  # a deploy of the same commit rebuilds it
    build.succeed(digest="sha256:" + "2" * 64)
    assert Build.objects.get(pk=build.pk).image_gone_at is None
    Build.objects.filter(pk=build.pk).update(image_gone_at=timezone.now())
    build.adopt("sha256:" + "3" * 64, 10, "team/hello")  # or ECR holds its tag again (pushed by someone else)
    assert Build.objects.get(pk=build.pk).image_gone_at is None
