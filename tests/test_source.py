"""Repository URLs, refs and paths are validated before git sees them."""

import os
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from deploy import source
from deploy.errors import AppError, UserError


@pytest.mark.parametrize("url", [
    "https://gitlab.example.com/team/hello.git",
    "ssh://git@gitlab.example.com/team/hello.git",
    "ssh://git@gitlab.example.com:2222/team/hello.git",
    "git@gitlab.example.com:team/hello.git",
])
def test_it_accepts_https_ssh_and_scp_like_urls(url):
    assert source.validate_repository_url(url, allow_local=False) == url


@pytest.mark.parametrize("url", [
    "ext::sh -c touch% /tmp/pwned",
    "fd::17/repo",
    "--upload-pack=touch /tmp/pwned",
    "ssh://-oProxyCommand=touch%20pwned/x",
    "ssh://git@-oProxyCommand=touch%20pwned/x",
    "git@-oProxyCommand:team/hello.git",
    "git@-oProxyCommand=x:team/hello.git",
    "http://gitlab.example.com/team/hello.git",
    "https://user:secret@gitlab.example.com/team/hello.git",
])
def test_it_refuses_transports_and_urls_git_could_run_or_read_as_options(url):
    with pytest.raises(UserError) as refused:
        source.validate_repository_url(url, allow_local=True)
    assert refused.value.code == "bad-repository-url"


@pytest.mark.parametrize("url", ["{dir}", "file://{dir}"])
def test_it_refuses_local_paths_unless_local_mode_allows_them(url, tmp_path):
    url = url.format(dir=tmp_path)
    with pytest.raises(UserError, match="only allowed in local mode"):
        source.validate_repository_url(url, allow_local=False)
    assert source.validate_repository_url(url, allow_local=True) == str(tmp_path)


def test_it_refuses_a_local_path_that_is_not_a_directory(tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        source.validate_repository_url(str(tmp_path / "missing"), allow_local=True)


@pytest.mark.parametrize("ref", ["main", "release/1.2", "v1.0.0", "3f9c2a1b7d4e"])
def test_it_accepts_branches_tags_and_shas(ref):
    assert source.validate_ref(ref) == ref


@pytest.mark.parametrize("ref", [
    "--upload-pack=x", "-b", "main..other", "HEAD@{1}", "a//b", "main.lock", "main/", "has space", "",
    "x" * 201, "semi;colon", "new\nline",
])
def test_it_refuses_refs_git_could_read_as_options_or_ranges(ref):
    with pytest.raises(UserError) as refused:
        source.validate_ref(ref)
    assert refused.value.code == "bad-ref"


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc", "/", "a\\..\\b", "a\x00b"])
def test_it_refuses_paths_that_escape_the_checkout(path):
    with pytest.raises(UserError) as refused:
        source.validate_subpath(path, "build context")
    assert refused.value.code == "bad-path"


@pytest.mark.parametrize("path, clean", [(".", "."), ("", "."), ("services/api", "services/api"),
                                         ("./a/./Dockerfile", "a/Dockerfile")])
def test_it_keeps_relative_paths_inside_the_checkout(path, clean):
    assert source.validate_subpath(path, "build context") == clean


def test_it_refuses_a_symlink_that_leads_out_of_the_checkout(tmp_path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "ctx").symlink_to(tmp_path)
    with pytest.raises(UserError, match="leads outside the repository"):
        source.inside(checkout, "ctx", "build context")


def _repository_with(tmp_path, *, links: dict[str, str], files: dict[str, bytes]):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    for name, target in links.items():
        (repo / name).symlink_to(target)
    for name, data in files.items():
        (repo / name).write_bytes(data)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=repo, check=True)
    return repo, subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                                text=True).stdout.strip()


@pytest.fixture(params=["data filter", "before 3.11.4"])
def extraction(request, monkeypatch):
    """Both ways an export extracts: tarfile's data filter, and the member-by-member
    checks for Pythons without filters (Debian 12's own 3.11.2)."""
    if request.param == "before 3.11.4":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return request.param


def test_an_absolute_symlink_in_the_tree_ends_the_export_in_seconds_as_bad_checkout(tmp_path, extraction):
    # The link sorts first; the file behind it is larger than a pipe, so git archive is still writing.
    repo, sha = _repository_with(tmp_path, links={"a-link": "/etc/passwd"}, files={"big.bin": os.urandom(1 << 20)})
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(_raised(source.export, repo, sha, tmp_path / "out")),
                              daemon=True)
    thread.start()
    thread.join(15)
    assert not thread.is_alive(), "export still running after 15 s: git archive blocked on a full pipe"
    assert outcome[0].code == "bad-checkout" and "a-link" in outcome[0].message


def _raised(fn, *args):
    try:
        fn(*args)
    except UserError as exc:
        return exc
    return None


def test_an_ordinary_tree_is_exported_whole(tmp_path, extraction):
    repo, sha = _repository_with(tmp_path, links={"link": "big.bin"}, files={"big.bin": b"x" * (1 << 20),
                                                                             "run.sh": b"#!/bin/sh\n"})
    (repo / "sub").mkdir()
    (repo / "sub" / "up").symlink_to("../big.bin")
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "add", "-A"], cwd=repo, check=True)
    os.chmod(repo / "run.sh", 0o755)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qam", "y"], cwd=repo,
                   check=True)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                         text=True).stdout.strip()
    out = source.export(repo, sha, tmp_path / "out")
    assert (out / "big.bin").stat().st_size == 1 << 20
    assert (out / "link").readlink() == Path("big.bin") and (out / "sub" / "up").read_bytes() == b"x" * (1 << 20)
    assert os.access(out / "run.sh", os.X_OK)


@pytest.mark.parametrize("target", ["../../outside", "sub/../../outside"])
def test_a_relative_symlink_leading_out_of_the_tree_is_bad_checkout(tmp_path, extraction, target):
    repo, sha = _repository_with(tmp_path, links={"escape": target}, files={"a.txt": b"a"})
    refused = _raised(source.export, repo, sha, tmp_path / "out")
    assert refused is not None and refused.code == "bad-checkout" and "escape" in refused.message


@pytest.mark.parametrize("stderr, code", [
    ("fatal: Authentication failed for 'https://gitlab.example.com/team/hello.git/'", "repository-auth-failed"),
    ("fatal: could not read Username for 'https://gitlab.example.com': terminal prompts disabled",
     "repository-auth-failed"),
    ("git@gitlab.example.com: Permission denied (publickey).\nfatal: Could not read from remote repository.",
     "repository-auth-failed"),
    ("Host key verification failed.\nfatal: Could not read from remote repository.", "repository-host-key"),
    ("remote: The project you were looking for could not be found or you don't have permission to view it.\n"
     "fatal: repository 'https://gitlab.example.com/team/gone.git/' not found", "repository-not-found"),
    ("fatal: '/srv/git/gone.git' does not appear to be a git repository", "repository-not-found"),
])
def test_a_refused_or_missing_repository_is_a_user_error_that_says_why(stderr, code):
    error = source.fetch_error("https://gitlab.example.com/team/hello.git", stderr)
    assert (type(error), error.code) == (UserError, code)
    assert "fatal:" in error.message or "Host key" in error.message


@pytest.mark.parametrize("stderr", [
    "fatal: unable to access 'https://gitlab.example.com/x.git/': Could not resolve host: gitlab.example.com",
    "fatal: unable to access 'https://127.0.0.1:1/x.git/': Failed to connect to 127.0.0.1 port 1: Couldn't connect",
    "error: cannot open FETCH_HEAD: Permission denied",
])
def test_a_host_that_does_not_answer_is_a_retryable_app_error(stderr):
    error = source.fetch_error("https://gitlab.example.com/x.git", stderr)
    assert (type(error), error.code, error.retryable) == (AppError, "git-fetch-failed", True)


def test_fetching_a_directory_that_is_no_repository_fails_at_once_as_repository_not_found(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as refused:
        source.fetch(str(tmp_path / "empty"), tmp_path / "work", allow_local=True)
    assert refused.value.code == "repository-not-found"
    assert "does not appear to be a git repository" in refused.value.message


def test_is_ancestor_tells_older_from_newer_and_says_none_for_commits_it_lacks(tmp_path):
    from tests.integration.conftest import Repo

    repo = Repo(tmp_path / "repo")
    older = repo.commit("one", {"a": "1"})
    newer = repo.commit("two", {"a": "2"})
    mirror = source.fetch(str(repo.path), tmp_path / "work", allow_local=True)
    assert source.is_ancestor(mirror, older, newer) is True
    assert source.is_ancestor(mirror, newer, older) is False
    assert source.is_ancestor(mirror, newer, newer) is True
    assert source.is_ancestor(mirror, older, "f" * 40) is None
    assert source.is_ancestor(mirror, "--output=/tmp/x", newer) is None  # never handed to git
