"""Repository URLs, refs and paths are validated before git sees them."""

import pytest

from deploy import source
from deploy.errors import UserError


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
