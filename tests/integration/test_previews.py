"""Merge requests' previews end to end with a real worker on the local plane: an amd64 fixture
function (a one-file handler; each new head a build of seconds, a head already built adopted
from ECR, no build), its production deployed first. A merge request's events go in through
portal/deployments/previews.receive (the receiver's own entry; tests/test_previews_* cover the
parsing). Cap is 2 here (tests/settings.py)."""

import datetime
import json
import urllib.request

import pytest
from django.utils import timezone

from deploy import lambdas
from portal.deployments import preview_cleanup, previews
from portal.deployments.previews import MergeRequest
from portal.deployments.requesting import request_deploy
from portal.models import Deployment, Preview, PreviewPolicy
from tests.conftest import aws_calls_file, stack_env, wait_for
from tests.integration.conftest import remove_from_plane, wait_done
from tests.preview_fixtures import preview_environment

pytestmark = pytest.mark.integration
Status, State = Deployment.Status, Preview.State
T0 = datetime.datetime(2026, 12, 1, 9, 0, tzinfo=datetime.UTC)


@pytest.fixture
def previewing(fixture_function):
    """The function's preview environment (public URLs allowed, forks too); its Lambda removed after."""
    environment = preview_environment(fixture_function, url_auth="NONE", allow_forks=True)
    environment.memory_mb, environment.timeout_s = 256, 30
    environment.save()
    yield environment
    remove_from_plane(environment.lambda_name, "")


class Events:
    """A merge request's events as GitLab would send them, minute after minute."""

    def __init__(self, function, repo):
        self.function, self.repo, self.minute = function, repo, 0

    def head(self, iid: int, release: str = "") -> str:
        """Commit `release` on a branch of its own (or reuse HEAD) as MR `iid`'s head ref."""
        if release:
            self.repo.git("checkout", "--quiet", "-B", f"mr-{iid}", "main")
            sha = self.repo.release(release)
            self.repo.git("checkout", "--quiet", "main")
        else:
            sha = self.repo.git("rev-parse", f"mr-{iid - 2}")  # the head of an MR opened before
        self.repo.git("update-ref", f"refs/merge-requests/{iid}/head", sha)
        return sha

    def send(self, iid: int, action: str, sha: str, **fields) -> previews.Received:
        self.minute += 1
        fields = {"source_project_id": 1, "target_project_id": 1, **fields}
        mr = MergeRequest(iid=iid, action=action, updated_at=T0 + datetime.timedelta(minutes=self.minute),
                          author="alice", title=f"change {iid}", source_branch=f"mr-{iid}", target_branch="main",
                          head_sha=sha, **fields)
        return previews.receive(self.function, mr)


def through_alias(environment, iid: int) -> dict:
    invocation = lambdas.invoke(environment.lambda_name, f"mr-{iid}", {"probe": iid})
    assert not invocation.error, invocation.result
    return invocation.result


def through_url(url_id: str) -> dict:
    request = urllib.request.Request(f"{stack_env('AWS_ENDPOINT_URL')}/_aws/lambda-url/{url_id}/",
                                     data=b'{"via": "url"}', headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - the local plane
        return json.loads(answer.read())


def recorded(action: str, qualifier: str) -> list[dict]:
    lines = [json.loads(line) for line in aws_calls_file().read_text().splitlines()]
    return [line for line in lines if line["action"] == action and line.get("Qualifier") == qualifier]


def test_a_merge_requests_preview_from_open_to_merge(worker, fixture_function, repo, previewing, inject, tmp_path):
    function, environment = fixture_function, previewing
    production = function.first_environment
    repo.release("production")
    assert wait_done(request_deploy(function, trigger="cli")).status == Status.SUCCEEDED
    before = lambdas.observed_state(production.lambda_name, production.alias)
    events = Events(function, repo)

    # Opened: alias mr-7 on the preview Lambda, its public URL, production untouched.
    seven = events.head(7, "mr-7")
    opened = wait_done(events.send(7, "open", seven).deployment)
    assert opened.status == Status.SUCCEEDED, opened.error_message
    assert lambdas.alias_version(environment.lambda_name, "mr-7") == opened.version
    assert through_alias(environment, 7)["release"] == "mr-7"
    preview = Preview.objects.get(function=function, mr_iid=7)
    assert through_url(preview.url_id)["release"] == "mr-7"
    assert lambdas.observed_state(production.lambda_name, production.alias) == before

    # An update moves it.
    newer = events.head(7, "mr-7 again")
    moved = wait_done(events.send(7, "update", newer).deployment)
    assert moved.status == Status.SUCCEEDED, moved.error_message
    assert through_alias(environment, 7)["release"] == "mr-7 again"
    assert lambdas.alias_version(environment.lambda_name, "mr-7") == moved.version != opened.version

    # A build that finishes after its MR closed creates nothing.
    held, release = tmp_path / "held", tmp_path / "release"
    inject({"operation": "enter-lambda-steps", "pause": True, "function": function.name, "held": str(held),
            "release": str(release)})
    eight = events.head(8, "mr-8")
    late = events.send(8, "open", eight).deployment
    wait_for(held.exists, 120, "the worker to finish the build of !8")
    assert events.send(8, "close", eight).accepted
    release.write_text("go")
    late = wait_done(late)
    assert late.status == Status.CANCELLED and late.error_code in ("cancelled", "preview-closed")
    assert lambdas.get_alias(environment.lambda_name, "mr-8") is None

    # Merged: URL, both statements and the alias go, in that order, on the alias.
    assert events.send(7, "merge", newer).accepted
    wait_for(lambda: Preview.objects.get(pk=preview.pk).state == State.REMOVED, 60, "!7's removal")
    assert lambdas.get_alias(environment.lambda_name, "mr-7") is None
    assert lambdas.list_urls(environment.lambda_name) == []
    assert sorted(line["StatementId"] for line in recorded("lambda:RemovePermission", "mr-7")) == [
        "slipway-mr-7-invoke", "slipway-mr-7-url"]
    assert len(recorded("lambda:DeleteFunctionUrlConfig", "mr-7")) == 1
    assert lambdas.observed_state(production.lambda_name, production.alias) == before

    # The cap (2): a head built before is adopted, no build; the third open preview closes the oldest idle.
    PreviewPolicy.objects.filter(environment=environment).update(url_auth="")
    nine = wait_done(events.send(9, "open", events.head(9, "mr-9")).deployment)
    ten = wait_done(events.send(10, "open", events.head(10, "mr-10")).deployment)
    eleven = wait_done(events.send(11, "open", events.head(11)).deployment)  # !9's head again
    assert [d.status for d in (nine, ten, eleven)] == [Status.SUCCEEDED] * 3
    assert eleven.steps.get(name="build").status == "skipped"
    wait_for(lambda: Preview.objects.get(function=function, mr_iid=9).state == State.REMOVED, 60, "!9 evicted")
    assert lambdas.get_alias(environment.lambda_name, "mr-9") is None
    assert through_alias(environment, 11)["release"] == "mr-9"

    # The TTL: an idle preview without a new commit for too long is removed by the sweep.
    Preview.objects.filter(function=function, mr_iid=10).update(last_commit_at=timezone.now()
                                                                - datetime.timedelta(days=30))
    assert preview_cleanup.sweep()["closed"] == 1
    wait_for(lambda: lambdas.get_alias(environment.lambda_name, "mr-10") is None, 60, "!10 removed by the TTL")
    assert lambdas.get_alias(environment.lambda_name, "mr-11") is not None

    # A fork's merge request waits for a deployer's approval: nothing queued.
    fork = events.send(12, "open", events.head(12, "fork"), fork=True, source_project_id=2)
    assert fork.deployment is None and "waits for a deployer's approval" in fork.detail
    assert lambdas.observed_state(production.lambda_name, production.alias) == before
