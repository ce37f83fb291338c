"""A merge request's preview through the real pipeline, recorder, queue and settling (only the
step bodies that build, push and touch the Lambda patched, as tests/test_plan.py does): its plan,
the alias step that a close refuses in the same UPDATE, a stale head, a fork's approval and
build inputs, the cap, and the queue keyed by merge request."""

import subprocess
from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from deploy import ecr, lambdas
from portal.deployments import plan, preview_cleanup, preview_pipeline, queue, steps
from portal.models import Build, Deployment, Preview
from tests.preview_fixtures import open_preview, preview_environment, queued

Kind, Status, State = Deployment.Kind, Deployment.Status, Preview.State
SHA, NEWER = "a" * 40, "b" * 40
BODIES = {"build": (steps, "build_image"), "push": (steps, "push_image"), "update": (steps, "update_function"),
          "wait": (steps, "wait_updated"), "verify": (steps, "verify_version")}


@pytest.fixture
def environment(function):
    return preview_environment(function)


@pytest.fixture
def lambda_calls():
    """What the preview's own steps ask of Lambda, at deploy.lambdas."""
    with mock.patch.object(lambdas, "point_alias", autospec=True, return_value=None) as alias, \
            mock.patch.object(lambdas, "ensure_url", autospec=True,
                              return_value="https://abc.lambda-url.us-east-1.on.aws/") as url:
        yield alias, url


@pytest.fixture
def bodies(lambda_calls):
    """Every step body that builds or touches the Lambda patched; what ran, with the row's status."""
    ran = []

    def noting(name):
        def body(run, out, **_):
            ran.append((name, Deployment.objects.values_list("status", flat=True).get(pk=run.deployment.pk)))
            if name == "publish":
                run.record(version="4")
        return body

    def fetched(run, out):
        ran.append(("source", Deployment.objects.values_list("status", flat=True).get(pk=run.deployment.pk)))
        build = Build.objects.create(function=run.function, commit_sha=SHA, architecture="arm64", inputs_digest="p",
                                     status=Build.Status.SUCCEEDED, digest="sha256:" + "c" * 64)
        run.record(build=build)
        run.stale, run.adopted = "", False

    patches = [mock.patch.object(module, attr, autospec=True, side_effect=noting(name))
               for name, (module, attr) in BODIES.items()]
    patches += [mock.patch.object(steps, "publish_version", autospec=True, side_effect=noting("publish")),
                mock.patch.object(preview_pipeline, "fetch_head", autospec=True, side_effect=fetched)]
    for patch in patches:
        patch.start()
    yield ran
    mock.patch.stopall()


def claimed(preview: Preview, sha: str = SHA) -> Deployment:
    deployment = queued(preview, sha)
    from portal.deployments import pipeline
    return pipeline.claimed(deployment.pk, None, "task-1")


def test_a_preview_runs_its_plan_and_moves_only_its_own_alias(transactional_db, environment, sent, bodies,
                                                              lambda_calls):
    environment.preview_policy.url_auth = "AWS_IAM"
    environment.preview_policy.save()
    preview = open_preview(environment, 7, SHA)
    deployment = claimed(preview)
    assert preview_pipeline.preview(deployment) == Status.SUCCEEDED
    assert [name for name, _ in bodies] == ["source", "build", "push", "update", "wait", "publish", "verify"]
    assert list(deployment.steps.order_by("position").values_list("name", "status")) == [
        (name, "succeeded") for name in plan.names(Kind.PREVIEW)]
    alias, url = lambda_calls
    assert alias.call_args.args == ("team-hello-preview", "mr-7", "4")
    assert url.call_args.args == ("team-hello-preview", "mr-7", "AWS_IAM")
    preview.refresh_from_db()
    assert (preview.version, preview.url_id) == ("4", "abc")


def test_without_a_url_the_url_step_is_recorded_as_skipped(transactional_db, environment, sent, bodies,
                                                           lambda_calls):
    deployment = claimed(open_preview(environment, 7, SHA))
    assert preview_pipeline.preview(deployment) == Status.SUCCEEDED
    assert deployment.steps.get(name="url").status == "skipped"
    lambda_calls[1].assert_not_called()


def test_a_close_before_the_alias_step_creates_nothing(transactional_db, environment, sent, bodies, lambda_calls):
    preview = open_preview(environment, 7, SHA)
    deployment = claimed(preview)

    def closing(run, out, **_):  # the MR closes while the new version is verified
        Preview.objects.filter(pk=preview.pk).update(state=State.CLOSED)
    steps.verify_version.side_effect = closing
    with mock.patch.object(preview_cleanup, "request", autospec=True) as removal:
        assert preview_pipeline.preview(deployment) == Status.CANCELLED
    deployment.refresh_from_db()
    assert deployment.error_code == preview_pipeline.CLOSED
    lambda_calls[0].assert_not_called()
    assert not deployment.steps.filter(name="alias").exists()
    assert removal.call_args.args == (preview.pk,)  # its end sends the removal again


def test_a_public_url_is_never_given_to_a_fork(transactional_db, function, sent, bodies, lambda_calls):
    environment = preview_environment(function, url_auth="NONE", allow_forks=True)
    deployment = claimed(open_preview(environment, 7, SHA, fork=True, approved_sha=SHA))
    assert preview_pipeline.preview(deployment) == Status.SUCCEEDED
    assert lambda_calls[1].call_args.args[2] == "AWS_IAM"


# --- The source step, on a real repository with a merge request's ref -----------------------


GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]


@pytest.fixture
def repository(tmp_path, settings):
    settings.SLIPWAY_ALLOW_LOCAL_REPOSITORIES = True
    settings.WORK_DIR = str(tmp_path / "work")
    path = tmp_path / "repo"
    path.mkdir()
    subprocess.run([*GIT, "init", "-q", "-b", "main"], cwd=path, check=True)
    subprocess.run([*GIT, "commit", "-q", "--allow-empty", "-m", "the MR's change"], cwd=path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, check=True, capture_output=True,
                          text=True).stdout.strip()
    subprocess.run(["git", "update-ref", "refs/merge-requests/7/head", head], cwd=path, check=True)
    return path, head


@pytest.fixture
def source_run(function, repository):
    path, head = repository
    function.repository_url = str(path)
    function.build_args = {"PIP_TOKEN": "secret-build-arg"}
    function.save()
    return head


def run_source(deployment):
    run = steps.Run(deployment)
    lines = []
    with mock.patch.object(ecr, "ensure_repository", autospec=True, return_value="repo"), \
            mock.patch.object(steps, "adopt_held_image", autospec=True, return_value=False):
        preview_pipeline.fetch_head(run, lines.append)
    return run, lines


def test_the_source_step_builds_the_merge_requests_head(transactional_db, environment, source_run):
    deployment = queued(open_preview(environment, 7, source_run))
    run, lines = run_source(deployment)
    assert run.stale == ""
    assert run.build.commit_sha == source_run and run.deployment.commit_message == "the MR's change"
    assert run.build.inputs["build_args"].get("PIP_TOKEN") == "secret-build-arg"
    assert lines[0] == f"refs/merge-requests/7/head is {source_run}"


def test_a_head_other_than_the_deliverys_last_commit_is_skipped_as_stale(transactional_db, environment, source_run):
    deployment = queued(open_preview(environment, 7, NEWER))
    run, _ = run_source(deployment)
    assert run.stale.startswith(f"stale: the merge request's head is {source_run[:12]}, not {NEWER[:12]}")
    assert run.build is None


def test_a_fork_builds_only_an_approved_head_without_the_functions_build_args(transactional_db, function, source_run):
    from portal.deployments.recording import Stopped

    environment = preview_environment(function, allow_forks=True)
    preview = open_preview(environment, 7, source_run, fork=True)
    with pytest.raises(Stopped) as stopped:
        run_source(queued(preview))
    assert stopped.value.code == preview_pipeline.NOT_APPROVED
    Preview.objects.filter(pk=preview.pk).update(approved_sha=source_run)
    run, lines = run_source(queued(Preview.objects.get(pk=preview.pk)))
    assert "PIP_TOKEN" not in run.build.inputs["build_args"]
    assert run.build.inputs["scope"] == steps.FORK_SCOPE
    assert any("without the layer cache" in line for line in lines)


# --- The cap ---------------------------------------------------------------------------------


def test_the_cap_closes_the_oldest_idle_preview(transactional_db, environment, settings,
                                                django_capture_on_commit_callbacks):
    settings.SLIPWAY_PREVIEW_CAP = 2
    now = timezone.now()
    oldest = open_preview(environment, 1, SHA, last_commit_at=now - timedelta(hours=3), version="1")
    busy = open_preview(environment, 2, SHA, last_commit_at=now - timedelta(hours=5), version="2")
    queued(busy)  # not idle: never the one that makes room, however old
    newcomer = open_preview(environment, 3, SHA)
    with mock.patch.object(preview_cleanup, "request", autospec=True) as removal, \
            django_capture_on_commit_callbacks(execute=True):
        line = preview_pipeline.make_room(newcomer)
    assert line == "2 previews open (the cap is 2): closed !1, the oldest idle one"
    oldest.refresh_from_db()
    assert oldest.state == State.CLOSED and oldest.removed_reason.startswith("cap:")
    assert removal.call_args.args == (oldest.pk,)
    assert Preview.objects.get(pk=busy.pk).state == State.OPEN


def test_the_cap_refuses_a_new_preview_when_none_is_idle(transactional_db, environment, settings):
    from deploy.errors import UserError

    settings.SLIPWAY_PREVIEW_CAP = 2
    for iid in (1, 2):
        queued(open_preview(environment, iid, SHA, version="1"))
    newcomer = open_preview(environment, 3, SHA)
    with pytest.raises(UserError) as refused:
        preview_pipeline.make_room(newcomer)
    assert refused.value.code == preview_pipeline.CAP
    assert "2 previews are open (the cap is 2) and none is idle" in refused.value.message
    newcomer.refresh_from_db()
    assert newcomer.state == State.REMOVED and newcomer.removed_reason.startswith("refused:")
    assert Preview.objects.filter(state=State.OPEN).count() == 2


def test_a_live_preview_takes_no_new_place(transactional_db, environment, settings):
    settings.SLIPWAY_PREVIEW_CAP = 1
    open_preview(environment, 1, SHA, version="1")
    live = open_preview(environment, 2, SHA, version="3")
    assert preview_pipeline.make_room(live) == "mr-2 is live already: no new place taken"


# --- The queue, keyed by merge request --------------------------------------------------------


def test_previews_of_two_merge_requests_run_side_by_side_and_one_mr_waits_for_itself(
        transactional_db, environment, sent, django_capture_on_commit_callbacks):
    seven, eight = open_preview(environment, 7, SHA), open_preview(environment, 8, SHA)
    running = queued(seven, status=Status.BUILDING)
    later_seven, first_eight = queued(seven), queued(eight)
    with django_capture_on_commit_callbacks(execute=True):
        queue.dispatch(environment.pk)
    assert [c.kwargs["args"][0] for c in sent.call_args_list] == [first_eight.pk]
    assert queue.claim(later_seven, Status.SOURCE) is False  # its own MR's preview still runs
    running.finish(Status.SUCCEEDED)
    with django_capture_on_commit_callbacks(execute=True):
        queue.dispatch(environment.pk)
    assert [c.kwargs["args"][0] for c in sent.call_args_list][-1] == later_seven.pk


def test_a_freeze_never_holds_a_preview(transactional_db, environment):
    from portal.deployments import gates
    from portal.models import FreezeWindow

    now = timezone.now()
    FreezeWindow.objects.create(environment=None, starts_at=now - timedelta(hours=1),  # every environment
                                ends_at=now + timedelta(hours=1), reason="release week")
    production = Deployment.objects.create(function=environment.function, trigger="cli", kind=Kind.DEPLOY)
    assert gates.hold_reason(production)[0] == Status.FROZEN  # the freeze is real
    deployment = queued(open_preview(environment, 7, SHA))
    assert gates.hold_reason(deployment) is None
