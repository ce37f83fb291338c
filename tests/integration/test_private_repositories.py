"""Private repositories on real git hosts started by the tests: HTTPS (git
http-backend behind TLS and basic auth, tests/git_http.py) with a deploy token,
and SSH (the private sshd, tests/sshd.py) with a deploy key and a pinned host
key. The secret must reach git and nothing else: not an argument list, not an
environment (checked at the runner seam and in /proc while git runs), not a log."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest

from deploy import source
from deploy.addresses import Allowed
from deploy.errors import UserError
from portal.deployments import reconciling as reconcile
from portal.deployments.requesting import request_deploy
from portal.models import AuditEvent, Deployment, SourceAccess
from portal.sources import SourceAuth, access
from tests.conftest import create_function, update_function
from tests.git_http import GitHttpServer, ProcessWatch, self_signed
from tests.integration.conftest import Worker, invoke_live, wait_done
from tests.sshd import keygen

pytestmark = pytest.mark.integration
Status = Deployment.Status
LOOPBACK = Allowed.parse(["127.0.0.0/8"])  # as in local mode: these git hosts listen on 127.0.0.1


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """The git hosts' TLS key and certificate (their own CA), one for the module: the worker trusts it."""
    return self_signed(tmp_path_factory.mktemp("git-tls"))


@pytest.fixture
def git_host(tmp_path, repo, monkeypatch, certificate):
    """The test repository behind HTTPS and basic auth; git in this process trusts its CA."""
    with GitHttpServer(tmp_path / "git-http", root=repo.path.parent, delay=0.1, certificate=certificate) as server:
        monkeypatch.setenv("GIT_SSL_CAINFO", str(server.ca_file))
        yield server


def token_of(server: GitHttpServer, token: str | None = None) -> source.Credentials:
    return source.Credentials(kind=source.TOKEN, secret=token or server.token, username=server.username)


def key_of(sshd, key_file: Path | None = None, known_hosts: str | None = None) -> source.Credentials:
    return source.Credentials(kind=source.SSH_KEY, secret=(key_file or sshd.client_key).read_text(),
                              known_hosts=sshd.known_hosts if known_hosts is None else known_hosts)


def spied_runner():
    return mock.patch("deploy.source.run", autospec=True, side_effect=source.run)


def assert_nowhere(secret_parts: list[str], runner) -> list[dict]:
    """No part of the secret in any argument list or environment git was started with."""
    calls = runner.call_args_list
    assert calls, "git never ran"
    for call in calls:
        argv, env = call.args[0], call.kwargs["env"]
        for part in secret_parts:
            assert part not in " ".join(argv), argv
            assert not any(part in value for value in env.values()), sorted(env)
    return [call.kwargs["env"] for call in calls]


def test_a_private_https_repository_is_fetched_with_its_deploy_token_which_no_process_shows(git_host, repo, tmp_path):
    sha = repo.release("one")
    credentials = token_of(git_host)
    watch = ProcessWatch(git_host.url("repo"))(git_host.token)

    with spied_runner() as runner, watch:
        mirror = source.fetch(git_host.url("repo"), tmp_path / "work", allow_local=False, allowed=LOOPBACK,
                              credentials=credentials, scope="function-1")

    assert source.resolve(mirror, "main") == sha
    assert [r for r in git_host.requests if r.authorized], "the server never saw the right credentials"
    envs = assert_nowhere([git_host.token], runner)
    askpass = Path(next(env["GIT_ASKPASS"] for env in envs if "GIT_ASKPASS" in env))
    assert not askpass.parent.exists(), "the private directory holding the token outlived the fetch"
    assert watch.seen, "the watch never saw git run: it proves nothing"
    assert watch.leaks == []
    assert mirror != source.mirror_path(tmp_path / "work", git_host.url("repo")), "a private mirror is shared"


def test_a_wrong_deploy_token_fails_the_fetch_as_a_user_error_without_echoing_it(git_host, repo, tmp_path):
    repo.release("one")
    wrong = "gldt-" + "x" * 24

    with pytest.raises(UserError) as refused:
        source.fetch(git_host.url("repo"), tmp_path / "work", allow_local=False, allowed=LOOPBACK,
                     credentials=token_of(git_host, wrong))

    assert refused.value.code == "repository-auth-failed"
    assert "refused the credentials" in refused.value.message and wrong not in refused.value.message
    assert [r for r in git_host.requests if r.sent_credentials and not r.authorized], "git never tried the token"


def test_without_credentials_the_private_repository_is_refused_as_a_user_error(git_host, repo, tmp_path):
    repo.release("one")
    with pytest.raises(UserError) as refused:
        source.fetch(git_host.url("repo"), tmp_path / "work", allow_local=False, allowed=LOOPBACK)
    assert refused.value.code == "repository-auth-failed"


def test_the_branch_head_is_read_with_ls_remote_and_the_token(git_host, repo):
    repo.release("one")
    head = repo.release("two")
    with spied_runner() as runner:
        assert source.remote_head(git_host.url("repo"), "main", allow_local=False, allowed=LOOPBACK,
                                  credentials=token_of(git_host), timeout=30) == head
    assert_nowhere([git_host.token], runner)
    argv = runner.call_args.args[0]  # git, the -c options that pin and bound it, then the command
    assert argv[0] == "git" and argv[argv.index("ls-remote") - 1] == "http.proxy=" and "fetch" not in argv
    with pytest.raises(UserError) as missing:
        source.remote_head(git_host.url("repo"), "no-such-branch", allow_local=False, allowed=LOOPBACK,
                           credentials=token_of(git_host))
    assert missing.value.code == "branch-not-found"
    with pytest.raises(UserError) as refused:
        source.remote_head(git_host.url("repo"), "main", allow_local=False, allowed=LOOPBACK,
                           credentials=token_of(git_host, "gldt-" + "y" * 24))
    assert refused.value.code == "repository-auth-failed"


# --- SSH ---------------------------------------------------------------------------------------


def ssh_url(sshd, repo) -> str:
    return f"{sshd.url}{repo.path}"


def test_a_private_ssh_repository_is_fetched_with_its_deploy_key_and_pinned_host_key(sshd, repo, tmp_path):
    sha = repo.release("one")
    credentials = key_of(sshd)
    secret_parts = credentials.secrets()[1:]  # the key's body lines: what a leak would show
    assert secret_parts
    watch = ProcessWatch(f"127.0.0.1:{sshd.port}")(*secret_parts)

    with spied_runner() as runner, watch:
        mirror = source.fetch(ssh_url(sshd, repo), tmp_path / "work", allow_local=False, allowed=LOOPBACK,
                              credentials=credentials)

    assert source.resolve(mirror, "main") == sha
    assert sshd.accepted() == 1
    envs = assert_nowhere(secret_parts, runner)
    command = next(env["GIT_SSH_COMMAND"] for env in envs if "GIT_SSH_COMMAND" in env)
    assert "StrictHostKeyChecking=yes" in command and "IdentitiesOnly=yes" in command
    assert not Path(command.split(" -i ")[1].split()[0]).exists(), "the key file outlived the fetch"
    assert watch.seen and watch.leaks == []


def test_an_ssh_host_whose_key_is_not_the_pinned_one_is_refused_as_a_user_error(sshd, repo, tmp_path):
    repo.release("one")
    kind, key = keygen(tmp_path / "other", "someone-else").with_suffix(".pub").read_text().split()[:2]
    with pytest.raises(UserError) as refused:
        source.fetch(ssh_url(sshd, repo), tmp_path / "work", allow_local=False, allowed=LOOPBACK,
                     credentials=key_of(sshd, known_hosts=f"[127.0.0.1]:{sshd.port} {kind} {key}\n"))
    assert refused.value.code == "repository-host-key"
    assert sshd.accepted() == 0


def test_a_deploy_key_the_git_host_does_not_accept_is_refused_as_a_user_error(sshd, repo, tmp_path):
    repo.release("one")
    stranger = keygen(tmp_path / "stranger", "not-authorized")
    with pytest.raises(UserError) as refused:
        source.remote_head(ssh_url(sshd, repo), "main", allow_local=False, allowed=LOOPBACK,
                           credentials=key_of(sshd, stranger))
    assert refused.value.code == "repository-auth-failed"
    assert stranger.read_text().splitlines()[1] not in refused.value.message
    assert sshd.accepted() == 0


# --- Through a real worker ------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_worker(worker, faults, certificate, tmp_path_factory):
    """A worker whose git trusts the test git hosts' CA; the session's worker steps aside meanwhile."""
    worker.stop()
    trusting = Worker(tmp_path_factory.mktemp("private-worker") / "worker.log", faults,
                      env={"GIT_SSL_CAINFO": str(certificate[1])})
    try:
        trusting.start()
        yield trusting
    finally:
        trusting.stop()
        worker.start()


@pytest.fixture
def private_function(fixture_function, git_host):
    """The fixture function, its repository now private behind the HTTPS git host."""
    from portal.core import crypto

    fixture_function.repository_url = git_host.url("repo")
    fixture_function.save()
    stored = fixture_function.source_access
    stored.source_auth = SourceAuth.TOKEN
    stored.source_username = git_host.username
    stored.source_secret = crypto.encrypt(git_host.token)
    stored.save()
    return fixture_function


def everything_recorded(function) -> str:
    """Every row a deployment of `function` left: deployments, steps, builds, audit events."""
    from django.core import serializers

    from portal.models import Build, DeploymentStep

    rows = [*Deployment.objects.filter(function=function),
            *DeploymentStep.objects.filter(deployment__function=function),
            *Build.objects.filter(function=function), *AuditEvent.objects.filter(function=function)]
    assert rows
    return serializers.serialize("json", rows)


def test_a_private_repository_deploys_through_a_worker_and_its_token_is_in_no_process_or_row(
        private_worker, private_function, git_host, repo):
    repo.release("one")

    with ProcessWatch(git_host.url("repo"), interval=0.02)(git_host.token) as watch:
        deployment = wait_done(request_deploy(private_function, trigger="cli"))

    assert deployment.status == Status.SUCCEEDED, deployment.error_message
    assert invoke_live(private_function)["release"] == "one"
    assert "private repository: HTTPS deploy token" in deployment.steps.get(name="source").output
    assert watch.seen, "the watch never saw the worker's git run"
    assert watch.leaks == []
    assert git_host.token not in everything_recorded(private_function)  # builds' inputs (build args) too
    assert [r for r in git_host.requests if r.authorized]
    mirror = access.mirror_for(private_function)
    kept = [path for path in mirror.rglob("*") if path.is_file()]
    assert (mirror / "config").is_file() and kept
    assert not [path for path in kept if git_host.token.encode() in path.read_bytes()], "the mirror kept the token"


def test_a_wrong_deploy_token_fails_the_deployment_as_a_user_error_and_is_not_retried(
        private_worker, private_function, git_host, repo):
    from portal.core import crypto

    repo.release("one")
    wrong = "gldt-" + "w" * 24
    SourceAccess.objects.filter(function=private_function).update(source_secret=crypto.encrypt(wrong))

    deployment = wait_done(request_deploy(private_function, trigger="cli"))

    assert (deployment.status, deployment.error_code) == (Status.FAILED, "repository-auth-failed")
    output = deployment.steps.get(name="source").output
    assert "refused the credentials" in output and "retrying" not in output
    assert [s.name for s in deployment.steps.all()] == ["source"]
    recorded = everything_recorded(private_function)
    assert wrong not in recorded and git_host.token not in recorded


def test_reconcile_deploys_a_push_no_webhook_announced_then_finds_it_up_to_date_or_paused(
        private_worker, private_function, git_host, repo):
    from workers import tasks

    repo.release("one")
    assert wait_done(request_deploy(private_function, trigger="cli")).status == Status.SUCCEEDED
    missed = repo.release("two")  # pushed while Slipway heard nothing

    assert tasks.reconcile.run(private_function.pk) == "deployed"  # the periodic check, in this process

    deployment = Deployment.objects.get(function=private_function, commit_sha=missed)
    assert (deployment.trigger, deployment.ref) == ("reconcile", "main")
    assert wait_done(deployment).status == Status.SUCCEEDED, deployment.error_message
    assert invoke_live(private_function)["release"] == "two"
    count = Deployment.objects.count()
    again = reconcile.reconcile(private_function)
    assert (again.outcome, again.head, again.deployment.pk) == ("up-to-date", missed, deployment.pk)
    repo.release("three")
    update_function(private_function, paused_reason="rolled back by alice")
    private_function.refresh_from_db()
    assert reconcile.reconcile(private_function).outcome == "paused"
    assert Deployment.objects.count() == count  # neither check queued anything
    assert AuditEvent.objects.filter(function=private_function, action="deployment.requested",
                                     detail__trigger="reconcile").count() == 1


def test_reconcile_does_not_retry_a_head_whose_deployment_failed(private_worker, private_function, git_host, repo):
    broken = repo.commit("broken", {"Dockerfile": "FROM scratch\nRUN false\n"})

    first = reconcile.reconcile(private_function)
    assert (first.outcome, first.head) == ("deployed", broken)
    assert wait_done(first.deployment).status == Status.FAILED

    second = reconcile.reconcile(private_function)
    assert (second.outcome, second.deployment.pk) == ("already-tried", first.deployment.pk)
    assert "deploy it explicitly to try again" in second.message
    assert Deployment.objects.filter(function=private_function).count() == 1


# --- In a real browser ---------------------------------------------------------------------------


def test_an_owner_sets_a_deploy_token_in_the_browser_sees_only_set_and_checks_for_missed_pushes(
        page, transactional_db, django_user_model, git_host, repo, artifacts):
    from playwright.sync_api import expect

    from portal.models import Membership
    from tests.conftest import released

    head = repo.release("one")
    alice = django_user_model.objects.create_user("alice", "alice@example.org", "alice-password-1")
    function = create_function(name="private-ui", repository_url=git_host.url("repo"),
                               ecr_repository="slipway/private-ui", lambda_name="slipway-private-ui",
                               execution_role_arn="arn:aws:iam::000000000000:role/slipway-test")
    Membership.objects.create(function=function, user=alice, role="owner")
    released(function, "1", head)
    page.goto("/functions/private-ui/edit/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("alice-password-1")
    page.get_by_role("button", name="Sign in").click()

    page.get_by_label("Repository access").select_option("token")
    page.get_by_label("Deploy token username").fill(git_host.username)
    page.get_by_label("Deploy token", exact=True).fill(git_host.token)
    page.get_by_role("button", name="Save").click()

    expect(page.locator("#repository")).to_contain_text(f"HTTPS deploy token of {git_host.username} (set")
    assert git_host.token not in page.content()
    page.get_by_role("button", name="Check for missed pushes").click()
    expect(page.locator("body")).to_contain_text(f"up to date — main is at {head[:12]}")
    page.screenshot(path=str(artifacts / "private-repository-checked.png"), full_page=True)
    page.goto("/functions/private-ui/edit/")
    expect(page.locator("#field-source_token")).to_contain_text("A token is set")
    assert page.get_by_label("Deploy token", exact=True).input_value() == ""
    assert git_host.token not in page.content()
    assert [r for r in git_host.requests if r.authorized], "the check never read the head with the token"
