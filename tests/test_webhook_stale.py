"""Which webhook deploys the worker skips as stale: a real repository and mirror,
deployment rows, no broker (nothing is sent)."""

import pytest

from deploy import source
from portal.deployments import steps
from portal.models import Deployment
from tests.conftest import create_function
from tests.integration.conftest import Repo

Status = Deployment.Status


@pytest.fixture
def repo(tmp_path):
    return Repo(tmp_path / "repo")


@pytest.fixture
def hello(db, repo):
    return create_function(name="hello", repository_url=str(repo.path), ecr_repository="slipway/hello",
                           lambda_name="slipway-hello")


def reason(function, repo, tmp_path, commit, ref="main", **fields) -> str:
    mirror = source.fetch(str(repo.path), tmp_path / "work", allow_local=True)
    mine = Deployment.objects.create(function=function, trigger="webhook", ref=ref, commit_sha=commit,
                                     status=Status.SOURCE, **fields)
    return steps.stale_reason(steps.Run(mine, mirror=mirror))


def live(function, sha):
    return Deployment.objects.create(function=function, trigger="webhook", commit_sha=sha, version="3",
                                     status=Status.SUCCEEDED)


def queued(function, sha):
    return Deployment.objects.create(function=function, trigger="webhook", commit_sha=sha, ref="main")


def test_an_older_commit_than_the_live_one_is_stale(hello, repo, tmp_path):
    older, newer = repo.release("one"), repo.release("two")
    live(hello, newer)
    assert reason(hello, repo, tmp_path, older).startswith(f"stale: {older[:12]} is older than {newer[:12]}")


def test_an_older_commit_than_a_queued_one_is_stale(hello, repo, tmp_path):
    older, newer = repo.release("one"), repo.release("two")
    waiting = queued(hello, newer)
    assert f"deployment #{waiting.pk}, queued from another delivery" in reason(hello, repo, tmp_path, older)


def test_a_newer_commit_than_live_and_queued_ones_deploys(hello, repo, tmp_path):
    first, second, third = repo.release("one"), repo.release("two"), repo.release("three")
    live(hello, first)
    queued(hello, second)
    assert reason(hello, repo, tmp_path, third) == ""


def test_the_live_commit_again_is_skipped(hello, repo, tmp_path):
    sha = repo.release("one")
    live(hello, sha)
    assert "is already live" in reason(hello, repo, tmp_path, sha)


def test_a_branch_moved_back_to_an_older_commit_deploys_it(hello, repo, tmp_path):
    older, newer = repo.release("one"), repo.release("two")
    live(hello, newer)
    repo.git("reset", "--hard", "--quiet", older)  # git push --force to the older commit
    assert reason(hello, repo, tmp_path, older) == ""


def test_an_older_tag_than_the_live_commit_is_stale(hello, repo, tmp_path):
    older, newer = repo.release("one"), repo.release("two")
    repo.git("tag", "v1.0", older)
    live(hello, newer)
    assert reason(hello, repo, tmp_path, older, ref="v1.0").startswith("stale:")


def test_commits_on_other_lines_are_not_stale(hello, repo, tmp_path):
    base = repo.release("one")
    other = repo.release("two")
    repo.git("checkout", "--quiet", "-b", "side", base)
    side = repo.release("side")
    live(hello, other)
    assert reason(hello, repo, tmp_path, side) == ""
