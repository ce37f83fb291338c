"""Private repositories' credentials (form, API, storage, masking, how git gets them)
and checking for missed pushes (reconcile: the decisions, access, the periodic task).
Reconcile runs real git against a local repository; only the broker is patched."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from unittest import mock

import pytest
from django.urls import reverse
from django.utils.html import escape

from deploy import source
from deploy.logs import mask
from portal.core import crypto
from portal.deployments import reconciling as reconcile
from portal.models import AuditEvent, Deployment, DeploymentStep, Function, SourceAccess
from portal.sources import access
from tests.api_client import Api, openapi
from tests.conftest import create_function, released, update_function
from tests.integration.conftest import Repo
from tests.sshd import keygen

Status = Deployment.Status
TOKEN = "gldt-" + os.urandom(12).hex()  # made at run time


@pytest.fixture(autouse=True)
def no_rate_limit(settings):
    settings.SLIPWAY_API_DEPLOY_RATE = 0


@pytest.fixture
def hello(function):
    """The cast's function, with names the platform allows (so edits validate)."""
    update_function(function, lambda_name="slipway-hello", ecr_repository="slipway/hello",
                    execution_role_arn="arn:aws:iam::000000000000:role/x")
    function.refresh_from_db()
    return function


@pytest.fixture
def api(client, cast, hello):
    client.force_login(cast["alice"])
    return Api(client, openapi(client))


def patch(api, body: dict, status: int = 200) -> dict:
    response = api.call("patch", "/functions/{name}", body, name="hello")
    assert response.status_code == status, response.content
    return response.json()


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, str]:
    """A deploy key, a passphrase-protected one and a host key line, made at run time."""
    directory = tmp_path_factory.mktemp("keys")
    plain = keygen(directory / "deploy", "deploy")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(directory / "locked")],
                   check=True)
    kind, blob = keygen(directory / "host", "host").with_suffix(".pub").read_text().split()[:2]
    return {"private": plain.read_text(), "public": plain.with_suffix(".pub").read_text(),
            "locked": (directory / "locked").read_text(), "host": f"{kind} {blob}"}


def stored(function) -> SourceAccess:
    """`function`'s repository access as stored."""
    return SourceAccess.objects.get(function=function)


def token_body(**overrides) -> dict:
    return {"source_auth": "token", "source_username": "gitlab+deploy-token-7", "source_token": TOKEN, **overrides}


def key_body(keys, **overrides) -> dict:
    return {"repository_url": "ssh://git@gitlab.example.com/team/hello.git", "source_auth": "ssh-key",
            "source_private_key": keys["private"], "source_known_hosts": f"gitlab.example.com {keys['host']}",
            **overrides}


# --- Setting, keeping, replacing, removing ----------------------------------------------------


def test_an_owner_sets_a_deploy_token_that_is_kept_encrypted_and_shown_nowhere(api, client, hello):
    answer = patch(api, token_body())

    assert (answer["source_auth"], answer["source_secret_set"]) == ("token", True)
    sealed = stored(hello).source_secret
    assert TOKEN not in sealed and crypto.decrypt(sealed) == TOKEN
    pages = [client.get(reverse(name, args=["hello"])).content.decode()
             for name in ("portal-function", "portal-function-edit")]
    pages.append(client.get("/api/v1/functions/hello").content.decode())
    assert all(TOKEN not in page for page in pages)
    assert "A token is set" in pages[1] and "replace" in pages[1]
    audit = AuditEvent.objects.get(action="function.edited")
    assert audit.detail["source_secret"] == "(set)" and TOKEN not in str(audit.detail)


def test_an_empty_token_keeps_the_stored_one_a_new_one_replaces_it_and_none_removes_it(api, hello):
    patch(api, token_body())
    sealed = stored(hello).source_secret

    patch(api, {"source_auth": "token", "source_token": "", "description": "kept"})
    assert stored(hello).source_secret == sealed
    patch(api, token_body(source_token="gldt-" + "n" * 24))
    assert crypto.decrypt(stored(hello).source_secret) == "gldt-" + "n" * 24
    answer = patch(api, {"source_auth": "none"})

    now = stored(hello)
    assert (answer["source_secret_set"], now.source_secret, now.source_username) == (False, "", "")
    assert [e.detail.get("source_secret") for e in AuditEvent.objects.order_by("pk")
            if "source_secret" in e.detail] == ["(set)", "(replaced)", "(removed)"]


def test_a_stored_token_is_not_sent_to_another_host_without_being_entered_again(api, hello):
    patch(api, token_body())
    refused = patch(api, {"repository_url": "https://elsewhere.example.org/team/hello.git"}, status=400)
    assert "moved to another host" in refused["error"]["fields"]["source_token"][0]
    assert Function.objects.get(pk=hello.pk).repository_url == "https://gitlab.example.com/team/hello.git"
    patch(api, {"repository_url": "https://elsewhere.example.org/team/hello.git", "source_token": TOKEN})


@pytest.mark.parametrize("body, field, message", [
    (token_body(source_username=""), "source_username", "needs its username"),
    (token_body(source_username="deploy:token"), "source_username", "no spaces, colons"),
    (token_body(source_token="has a space"), "source_token", "without spaces"),
    (token_body(source_token=""), "source_token", "enter the deploy token"),
    (token_body(repository_url="git@gitlab.example.com:team/hello.git"), "source_auth", "must start with https://"),
    ({"source_auth": "none", "source_token": TOKEN}, "source_token", "choose HTTPS deploy token"),
])
def test_bad_deploy_token_settings_are_refused_with_the_field_that_is_wrong(api, hello, body, field, message):
    refused = patch(api, body, status=400)
    assert message in " ".join(refused["error"]["fields"][field])
    assert stored(hello).source_secret == ""


@pytest.mark.parametrize("change, field, message", [
    ({"source_private_key": "hello"}, "source_private_key", "not a private key"),
    ({"source_private_key": "public"}, "source_private_key", "this is a public key"),
    ({"source_private_key": "locked"}, "source_private_key", "protected by a passphrase"),
    ({"source_private_key": "truncated"}, "source_private_key", "not a valid private key"),
    ({"source_known_hosts": ""}, "source_known_hosts", "pin the git host's key"),
    ({"source_known_hosts": "other.example.org HOST"}, "source_known_hosts", "no line names gitlab.example.com"),
    ({"source_known_hosts": "gitlab.example.com ssh-ed25519 bm90IGEga2V5"}, "source_known_hosts",
     "not a valid ssh-ed25519 key"),
    ({"source_known_hosts": "gitlab.example.com ssh-foo AAAA"}, "source_known_hosts", "not an SSH host key type"),
    ({"repository_url": "https://gitlab.example.com/team/hello.git"}, "source_auth", "ssh:// or git@"),
    ({"source_token": TOKEN}, "source_token", "needs no token"),
])
def test_bad_deploy_key_settings_are_refused_with_the_field_that_is_wrong(api, hello, keys, change, field, message):
    change = {name: {"public": keys["public"], "locked": keys["locked"], "truncated": keys["private"][:200]}.get(
        value, value.replace("HOST", keys["host"])) for name, value in change.items()}
    refused = patch(api, key_body(keys, **change), status=400)
    assert message in " ".join(refused["error"]["fields"][field])
    assert stored(hello).source_auth == "none"


def test_a_deploy_key_on_a_port_is_pinned_by_its_bracketed_host_and_pasted_line_endings_are_fixed(api, hello, keys):
    url = "ssh://git@gitlab.example.com:2222/team/hello.git"
    refused = patch(api, key_body(keys, repository_url=url), status=400)
    assert "[gitlab.example.com]:2222" in refused["error"]["fields"]["source_known_hosts"][0]

    patch(api, key_body(keys, repository_url=url, source_private_key=keys["private"].replace("\n", "\r\n"),
                        source_known_hosts=f"[gitlab.example.com]:2222 {keys['host']}"))

    credentials = access.credentials_for(Function.objects.get(pk=hello.pk))
    assert credentials.kind == "ssh-key" and credentials.secret == keys["private"]
    assert credentials.known_hosts == f"[gitlab.example.com]:2222 {keys['host']}\n"


def test_the_edit_page_never_renders_a_stored_key_and_an_empty_field_keeps_it(client, cast, hello, keys):
    Function.objects.filter(pk=hello.pk).update(repository_url="git@gitlab.example.com:team/hello.git")
    SourceAccess.objects.filter(function=hello).update(
        source_auth="ssh-key", source_secret=crypto.encrypt(keys["private"]),
        source_known_hosts=f"gitlab.example.com {keys['host']}\n")
    client.force_login(cast["alice"])
    page = client.get(reverse("portal-function-edit", args=["hello"])).content.decode()
    body_line = keys["private"].splitlines()[1]
    assert body_line not in page and "A key is set" in page
    data = {"name": "hello", "repository_url": "git@gitlab.example.com:team/hello.git", "branch": "main",
            "context_path": ".", "dockerfile_path": "Dockerfile", "architecture": "arm64",
            "ecr_repository": "slipway/hello", "lambda_name": "slipway-hello", "alias": "live", "memory_mb": "1024",
            "timeout_s": "30", "execution_role_arn": "arn:aws:iam::000000000000:role/x", "auto_deploy": "on",
            "build_args_text": "{}", "smoke_event_text": "{}", "source_auth": "ssh-key", "source_private_key": "",
            "source_known_hosts": f"gitlab.example.com {keys['host']}"}
    assert client.post(reverse("portal-function-edit", args=["hello"]), data).status_code == 302
    assert crypto.decrypt(stored(hello).source_secret) == keys["private"]


def test_without_a_fernet_key_no_credentials_can_be_stored(api, hello, settings):
    settings.SLIPWAY_FERNET_KEYS = []
    refused = patch(api, token_body(), status=400)
    assert "SLIPWAY_FERNET_KEY is not set" in refused["error"]["fields"]["source_token"][0]
    assert stored(hello).source_secret == ""


def test_credentials_a_key_no_longer_opens_fail_the_fetch_as_a_user_error(hello, settings):
    SourceAccess.objects.filter(function=hello).update(source_auth="token", source_secret="gAAAAA-not-ours")
    hello.refresh_from_db()
    with pytest.raises(source.UserError) as refused:
        access.credentials_for(hello)
    assert refused.value.code == "repository-credentials"


# --- Masking and how git gets the secret ----------------------------------------------------------


def test_logs_mask_private_keys_deploy_tokens_and_the_functions_own_secret(keys):
    text = f"oops {keys['private']} and gldt-{'a' * 24} and custom-{TOKEN}"
    masked = mask(text, TOKEN)
    assert "<private key>" in masked and "gldt-***" in masked and TOKEN not in masked
    assert keys["private"].splitlines()[1] not in masked and "oops" in masked


def test_a_step_log_masks_the_repository_credentials_of_its_function(hello, keys):
    from portal.deployments.recording import Recorder

    SourceAccess.objects.filter(function=hello).update(source_auth="ssh-key",
                                                       source_secret=crypto.encrypt(keys["private"]))
    deployment = Deployment.objects.select_related("function").get(
        pk=Deployment.objects.create(function=hello, trigger="cli").pk)
    recorder = Recorder(deployment)
    line = keys["private"].splitlines()[1]
    with recorder.step("source") as out:
        out(f"git said: {line}")
    assert DeploymentStep.objects.get(deployment=deployment).output == "git said: ***"


def test_git_gets_the_token_from_a_private_file_never_from_its_environment(tmp_path):
    credentials = source.Credentials(kind=source.TOKEN, secret=TOKEN, username="deployer")
    assert TOKEN not in repr(credentials)
    with source.authenticated(credentials, "https://gitlab.example.com/team/hello.git") as env:
        askpass = Path(env["GIT_ASKPASS"])
        directory = askpass.parent
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert stat.S_IMODE((directory / "token").stat().st_mode) == 0o600
        assert TOKEN not in str(env) and env["GIT_CONFIG_GLOBAL"] == os.devnull
        asked = {prompt: subprocess.run([str(askpass), prompt], capture_output=True, text=True).stdout
                 for prompt in ("Username for 'https://gitlab.example.com': ",
                                "Password for 'https://deployer@gitlab.example.com': ")}
    assert list(asked.values()) == ["deployer", TOKEN]
    assert not directory.exists()


def test_a_token_is_never_sent_over_ssh_nor_a_key_over_https():
    with pytest.raises(source.UserError), source.authenticated(
            source.Credentials(kind=source.TOKEN, secret=TOKEN, username="u"), "git@gitlab.example.com:t/h.git"):
        pass
    with pytest.raises(source.UserError), source.authenticated(
            source.Credentials(kind=source.SSH_KEY, secret="k", known_hosts="h"), "https://gitlab.example.com/t"):
        pass


def test_a_private_repository_has_a_mirror_of_its_own(hello):
    public = access.mirror_for(hello)
    SourceAccess.objects.filter(function=hello).update(source_auth="token", source_secret=crypto.encrypt(TOKEN))
    hello.refresh_from_db()
    assert access.mirror_for(hello) != public


# --- Reconcile: what it decides -------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path):
    return Repo(tmp_path / "repo")


@pytest.fixture
def local(hello, repo):
    """`hello`, its repository a local one (local mode) with one commit on main."""
    repo.commit("one", {"app.py": "1"})
    Function.objects.filter(pk=hello.pk).update(repository_url=str(repo.path))
    hello.refresh_from_db()
    return hello


def test_a_head_nothing_deployed_is_queued_as_a_reconcile_deploy_that_supersedes_nothing(local, repo, sent, cast):
    waiting = Deployment.objects.create(function=local, trigger="ui", commit_sha="b" * 40, ref="b" * 40)
    head = repo.commit("two", {"app.py": "2"})

    found = reconcile.reconcile(local, user=cast["bob"], trigger="ui")

    assert (found.outcome, found.head) == ("deployed", head)
    deployment = found.deployment
    assert (deployment.trigger, deployment.commit_sha, deployment.ref, deployment.requested_by) == (
        "reconcile", head, "main", cast["bob"])
    waiting.refresh_from_db()
    assert waiting.status == Status.QUEUED  # like a webhook deploy, it supersedes nothing
    event = AuditEvent.objects.get(action="deployment.requested")
    assert (event.detail["trigger"], event.detail["missed_push"], event.actor) == ("reconcile", head, cast["bob"])


def test_a_head_that_is_live_is_up_to_date_and_nothing_is_queued(local, repo, sent):
    head = repo.git("rev-parse", "HEAD")
    live = released(local, "3", head)
    found = reconcile.reconcile(local)
    assert (found.outcome, found.deployment) == ("up-to-date", live)
    assert Deployment.objects.count() == 1 and not sent.called


def test_a_head_whose_deployment_failed_is_not_tried_again(local, repo, sent):
    head = repo.git("rev-parse", "HEAD")
    failed = Deployment.objects.create(function=local, trigger="reconcile", commit_sha=head, status=Status.FAILED)
    found = reconcile.reconcile(local)
    assert (found.outcome, found.deployment) == ("already-tried", failed)
    assert Deployment.objects.count() == 1


def test_a_deploy_of_the_branch_still_waiting_to_resolve_it_is_in_progress(local, sent):
    waiting = Deployment.objects.create(function=local, trigger="ui", ref="main")
    found = reconcile.reconcile(local)
    assert (found.outcome, found.deployment) == ("in-progress", waiting)
    assert Deployment.objects.count() == 1


@pytest.mark.parametrize("fields, outcome", [
    ({"paused_reason": "rolled back to version 2 by bob"}, "paused"),
    ({"auto_deploy": False}, "off"),
])
def test_paused_or_off_asks_the_git_host_nothing_and_queues_nothing(local, sent, fields, outcome):
    update_function(local, **fields)
    local.refresh_from_db()
    with mock.patch("deploy.source.run", autospec=True) as git:
        assert reconcile.reconcile(local).outcome == outcome
    assert not git.called and Deployment.objects.count() == 0


def test_an_archived_function_is_not_reconciled(local, sent):
    from django.utils import timezone

    Function.objects.filter(pk=local.pk).update(archived_at=timezone.now())
    local.refresh_from_db()
    assert reconcile.reconcile(local).outcome == "archived"
    assert Deployment.objects.count() == 0


def test_a_repository_that_cannot_be_read_is_an_error_with_its_code(local, repo, sent):
    Function.objects.filter(pk=local.pk).update(branch="no-such-branch")
    local.refresh_from_db()
    found = reconcile.reconcile(local)
    assert (found.outcome, found.code) == ("error", "branch-not-found")
    assert Deployment.objects.count() == 0


# --- Reconcile: who may, and the periodic task -----------------------------------------------------


@pytest.mark.parametrize("name, status", [("charlie", 403), ("dave", 404)])
def test_only_deployers_check_for_missed_pushes(client, cast, local, sent, name, status):
    client.force_login(cast[name])
    assert client.post(reverse("portal-function-reconcile", args=["hello"])).status_code == status
    from portal.models import ApiToken

    token = ApiToken.issue(cast[name], "t")[1]
    response = client.post("/api/v1/functions/hello/reconcile", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == status
    assert Deployment.objects.count() == 0


def test_a_deployer_checks_from_the_page_and_follows_the_deployment_it_queued(client, cast, local, repo, sent):
    client.force_login(cast["bob"])
    response = client.post(reverse("portal-function-reconcile", args=["hello"]), follow=True)
    deployment = Deployment.objects.get()
    assert response.redirect_chain[-1][0] == reverse("portal-deployment", args=[deployment.pk])
    assert b"Missed push found" in response.content
    again = client.post(reverse("portal-function-reconcile", args=["hello"]), follow=True)
    assert b"in progress" in again.content and Deployment.objects.count() == 1


def test_the_api_answers_the_outcome_and_the_deployment(api, client, cast, local, repo, sent):
    head = repo.git("rev-parse", "HEAD")
    client.force_login(cast["bob"])
    response = api.call("post", "/functions/{name}/reconcile", name="hello")
    assert response.status_code == 200
    body = response.json()
    assert (body["outcome"], body["head"], body["deployment"]["trigger"]) == ("deployed", head, "reconcile")


def test_the_periodic_task_sends_one_check_per_function_that_auto_deploys(local, sent, settings):
    from workers import tasks

    others = [create_function(name=f"f{n}", repository_url="/nowhere", ecr_repository=f"slipway/f{n}",
                              lambda_name=f"slipway-f{n}", **fields)
              for n, fields in enumerate([{}, {"paused_reason": "rolled back"}, {"auto_deploy": False}])]
    assert tasks.reconcile_all.run() == 2
    sent_for = [(c.args[0], c.kwargs["args"][0], c.kwargs["expires"]) for c in sent.call_args_list]
    assert sent_for == [("slipway.reconcile", local.pk, settings.SLIPWAY_RECONCILE_INTERVAL),
                        ("slipway.reconcile", others[0].pk, settings.SLIPWAY_RECONCILE_INTERVAL)]
    assert settings.CELERY_BEAT_SCHEDULE["reconcile"]["task"] == "slipway.reconcile_all"


def test_one_function_that_fails_its_check_does_not_stop_the_next(local, repo, sent):
    from workers import tasks

    broken = create_function(name="broken", repository_url=str(repo.path.parent / "gone"),
                             ecr_repository="slipway/broken", lambda_name="slipway-broken")
    assert [tasks.reconcile.run(broken.pk), tasks.reconcile.run(local.pk)] == ["error", "deployed"]
    assert tasks.reconcile.run(999999) == "gone"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_checks_at_once_queue_the_missed_head_once(local, repo, sent):
    """The button and the periodic task at the same moment: the second waits for the
    function's lock, then finds the first one's deployment (Postgres: a real row lock)."""
    import threading

    from django.db import connection, transaction

    from portal.deployments import reconciling as reconcile

    if connection.vendor != "postgresql":
        pytest.skip("select_for_update locks nothing on SQLite")
    head = repo.git("rev-parse", "HEAD")
    answers = []

    def second():
        try:
            answers.append(reconcile.request_reconcile_deploy(local, head=head))
        finally:
            connection.close()

    with transaction.atomic():
        Function.objects.select_for_update().get(pk=local.pk)  # the first check holds the lock...
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive() and answers == [], "the second check did not wait for the lock"
        first = reconcile.request_reconcile_deploy(local, head=head)  # ...and queues the head
    thread.join(10)
    assert first.outcome == "deployed"
    assert [(a.outcome, a.deployment.pk) for a in answers] == [("in-progress", first.deployment.pk)]
    assert Deployment.objects.filter(commit_sha=head).count() == 1


def test_a_reconcile_deploy_older_than_the_live_commit_is_skipped_as_stale_by_its_source_step(
        local, repo, settings, tmp_path):
    from portal.deployments import steps

    settings.WORK_DIR = tmp_path / "work"

    older = repo.git("rev-parse", "HEAD")
    newer = repo.commit("two", {"app.py": "2"})
    Deployment.objects.create(function=local, trigger="webhook", commit_sha=newer, version="2",
                              status=Status.SUCCEEDED)
    mine = Deployment.objects.create(function=local, trigger="reconcile", ref="main", commit_sha=older,
                                     status=Status.SOURCE)
    run, said = steps.Run(mine), []

    steps.fetch_source(run, said.append)  # stops before the build is looked up: nothing else is reached

    assert f"stale: {older[:12]} is older than {newer[:12]}" in run.stale and said == [run.stale]
    assert Deployment.objects.get(pk=mine.pk).build is None


def test_the_last_check_is_kept_and_shown_on_the_function_page_even_when_it_failed(client, cast, local, sent):
    Function.objects.filter(pk=local.pk).update(branch="no-such-branch")
    local.refresh_from_db()
    reconcile.reconcile(local, trigger="reconcile")  # the periodic task: nobody sees its answer
    last = stored(local)
    assert (last.reconcile_outcome, last.reconcile_checked_at is not None) == ("error", True)
    client.force_login(cast["charlie"])
    page = client.get(f"/functions/{local.name}/").content.decode()
    assert "Last check for missed pushes" in page and escape(last.reconcile_message) in page
    assert "no-such-branch" in last.reconcile_message
