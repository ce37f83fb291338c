"""A merge request's head is fetched from GitLab's refs/merge-requests/<iid>/head, which a
fetch of branches and tags never holds (a fork's commits live only there)."""

import subprocess

import pytest

from deploy import source
from deploy.errors import AppError, UserError

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]


def _commit(repo, message: str) -> str:
    subprocess.run([*GIT, "commit", "-q", "--allow-empty", "-m", message], cwd=repo, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A target project whose main branch has one commit, and MR 7's head a commit on no branch."""
    path = tmp_path / "target"
    path.mkdir()
    subprocess.run([*GIT, "init", "-q", "-b", "main"], cwd=path, check=True)
    _commit(path, "main")
    subprocess.run(["git", "checkout", "-q", "--detach"], cwd=path, check=True)
    head = _commit(path, "the MR's change")
    subprocess.run(["git", "update-ref", "refs/merge-requests/7/head", head], cwd=path, check=True)
    subprocess.run(["git", "checkout", "-q", "main"], cwd=path, check=True)
    return path, head


def test_the_merge_requests_head_is_fetched_only_when_asked_for(repo, tmp_path):
    path, head = repo
    mirror = source.fetch(str(path), tmp_path / "work", allow_local=True)
    assert source.merge_request_head(mirror, 7) is None
    assert source.describe(mirror, head) is None  # on no branch: a plain fetch never brings it
    mirror = source.fetch(str(path), tmp_path / "work", allow_local=True, merge_request=7)
    assert source.merge_request_head(mirror, 7) == head
    assert source.describe(mirror, head).subject == "the MR's change"


def test_a_new_head_replaces_the_old_one_and_a_plain_fetch_keeps_it(repo, tmp_path):
    path, _ = repo
    source.fetch(str(path), tmp_path / "work", allow_local=True, merge_request=7)
    subprocess.run(["git", "checkout", "-q", "--detach"], cwd=path, check=True)
    rebased = _commit(path, "rebased")  # a force-push: the new head need not descend from the old
    subprocess.run(["git", "update-ref", "refs/merge-requests/7/head", rebased], cwd=path, check=True)
    mirror = source.fetch(str(path), tmp_path / "work", allow_local=True, merge_request=7)
    assert source.merge_request_head(mirror, 7) == rebased
    mirror = source.fetch(str(path), tmp_path / "work", allow_local=True)  # --prune touches only heads and tags
    assert source.merge_request_head(mirror, 7) == rebased


def test_an_mr_the_repository_lacks_is_a_fetch_error_not_a_silent_head(repo, tmp_path):
    path, _ = repo
    with pytest.raises(AppError) as failed:
        source.fetch(str(path), tmp_path / "work", allow_local=True, merge_request=8)
    assert failed.value.code == "git-fetch-failed"
    assert "refs/merge-requests/8/head" in failed.value.message


@pytest.mark.parametrize("iid", [0, -1, True, "7", 10**9, None.__class__])
def test_only_a_positive_number_names_a_merge_request(iid):
    with pytest.raises(UserError) as refused:
        source.merge_request_ref(iid)
    assert refused.value.code == "bad-ref"
