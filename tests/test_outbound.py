"""Requests to owner-given URLs (GitLab API, notification webhook, git repository) go
only to addresses SLIPWAY_OUTBOUND_ALLOWED_NETWORKS allows, and to the address that
was checked: the one resolver seam (deploy.addresses.resolve) is patched to answer
differently on a second lookup. Every server here listens on a loopback address;
a guard fails any test that would open a connection anywhere else."""

from __future__ import annotations

import ipaddress
import socket
import ssl
from unittest import mock

import pytest

from deploy import addresses, outbound, source
from deploy.addresses import Allowed
from deploy.errors import UserError
from portal.core import crypto
from portal.deployments import reconciling as reconcile
from portal.feedback import delivery as work
from portal.models import Deployment, NotificationAttempt
from tests.git_http import GitHttpServer, self_signed
from tests.http_receiver import Receiver
from tests.integration.conftest import Repo
from tests.sshd import Sshd

SHA = "3f9c2a1b7d4e" + "0" * 28
REFUSED = "outbound-address-refused"
_real_connect = socket.create_connection


def _loopback_only(address, *args, **kwargs):
    host = addresses.literal(address[0])
    found = [host] if host else [ipaddress.ip_address(i[4][0]) for i in socket.getaddrinfo(address[0], address[1])]
    assert found and all(a.is_loopback for a in found), f"a test tried to connect to {address}"
    return _real_connect(address, *args, **kwargs)


@pytest.fixture(autouse=True)
def loopback_only():
    """A guard, not a seam: nothing in these tests may leave this machine."""
    with mock.patch("socket.create_connection", side_effect=_loopback_only):
        yield


@pytest.fixture
def allow(settings):
    def set_to(*items: str) -> Allowed:
        settings.SLIPWAY_OUTBOUND_ALLOWED_NETWORKS = Allowed.parse(items)
        return settings.SLIPWAY_OUTBOUND_ALLOWED_NETWORKS
    settings.SLIPWAY_NOTIFY_TIMEOUT, settings.SLIPWAY_NOTIFY_ATTEMPTS, settings.SLIPWAY_NOTIFY_BACKOFF = 2, 3, 0.05
    return set_to


@pytest.fixture
def receivers():
    started: list[Receiver] = []

    def start(host: str = "127.0.0.1", port: int = 0) -> Receiver:
        started.append(Receiver(host=host, port=port).start())
        return started[-1]
    yield start
    for receiver in started:
        receiver.stop()


def resolving(*answers: list[str]):
    """The resolver seam answering `answers` in turn, one per lookup."""
    return mock.patch("deploy.addresses.resolve", autospec=True, side_effect=list(answers))


def webhook_to(function, url: str):
    reports = function.feedback_settings
    reports.notify_webhook_url, reports.notify_webhook_secret = url, crypto.encrypt("slwsec_test-signing-secret")
    reports.save()
    return function


def attempts(channel: str) -> list[NotificationAttempt]:
    return list(NotificationAttempt.objects.filter(channel=channel).order_by("pk"))


# --- The setting ------------------------------------------------------------------------------


def test_a_receiver_on_loopback_is_refused_when_the_setting_leaves_loopback_out(function, allow, receivers):
    receiver = receivers()
    allow("public", "10.0.0.0/8")
    work.send_notification(webhook_to(function, receiver.url + "/hook").pk, "resume", None, {"by": "alice"})
    assert receiver.requests == []
    [attempt] = attempts("webhook")  # refused once, not retried
    assert attempt.status_code is None and attempt.outcome == "failed"
    assert REFUSED in attempt.detail and "SLIPWAY_OUTBOUND_ALLOWED_NETWORKS" in attempt.detail


def test_a_commit_status_to_a_refused_gitlab_is_never_sent_nor_retried(function, allow, receivers):
    receiver = receivers()
    allow("public")
    reports = function.feedback_settings
    reports.gitlab_api_url, reports.gitlab_project = receiver.url, "team/hello"
    reports.gitlab_status_token = crypto.encrypt("glpat-test-token-1234567")
    reports.save()
    deployment = Deployment.objects.create(function=function, trigger="api", commit_sha=SHA, ref="main")
    work.report_commit_status(deployment.pk, "pending")
    assert receiver.requests == []
    [attempt] = attempts("gitlab")
    assert REFUSED in attempt.detail


def test_the_same_receiver_is_reached_once_its_network_is_listed(function, allow, receivers):
    receiver = receivers()
    allow("127.0.0.0/8")
    work.send_notification(webhook_to(function, receiver.url + "/hook").pk, "resume", None, {"by": "alice"})
    assert len(receiver.requests) == 1 and attempts("webhook")[0].status_code == 201


def test_metadata_and_link_local_addresses_are_refused_even_when_the_setting_lists_everything():
    everything = Allowed.parse(["0.0.0.0/0", "::/0", "public"])
    for address in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "fe80::1", "::ffff:169.254.169.254",
                    "64:ff9b::a9fe:a9fe"):
        assert not everything.permits(ipaddress.ip_address(address)), address
    assert everything.permits(ipaddress.ip_address("10.1.2.3"))
    with pytest.raises(UserError) as refused:
        addresses.checked("169.254.169.254", 80, everything, what="the receiver")
    assert refused.value.code == REFUSED and "link-local or metadata" in refused.value.message


def test_a_name_that_resolves_to_the_metadata_address_is_refused_under_0_0_0_0_slash_0(function, allow, receivers):
    receiver = receivers()
    allow("0.0.0.0/0")
    with resolving(["169.254.169.254"]):
        work.send_notification(webhook_to(function, f"http://localhost:{receiver.server.server_address[1]}/").pk,
                               "resume", None, {"by": "alice"})
    [attempt] = attempts("webhook")
    assert REFUSED in attempt.detail and "169.254.169.254" in attempt.detail
    assert receiver.requests == []


def test_public_means_globally_routable_only():
    public = Allowed.parse(["public"])
    for address in ("127.0.0.1", "10.0.0.1", "172.16.0.1", "192.168.1.1", "100.64.0.1", "0.0.0.0", "::1",
                    "fc00::1", "224.0.0.1", "::ffff:10.0.0.1", "2002:a00:1::"):
        assert not public.permits(ipaddress.ip_address(address)), address
    assert public.permits(ipaddress.ip_address("93.184.216.34"))
    assert public.permits(ipaddress.ip_address("2606:4700::1111"))


def test_a_setting_that_is_not_a_network_is_refused():
    with pytest.raises(ValueError, match="10.0.0.0/33"):
        Allowed.parse(["public", "10.0.0.0/33"])


# --- Connecting to the checked address ---------------------------------------------------------


def test_the_request_goes_to_the_address_that_was_checked_not_to_a_second_lookup(function, allow, receivers):
    checked = receivers("127.0.0.2")
    port = checked.server.server_address[1]
    elsewhere = receivers("127.0.0.3", port)
    allow("127.0.0.2/32")
    webhook_to(function, f"http://localhost:{port}/hook")
    with resolving(["127.0.0.2"], ["127.0.0.3"]) as resolve:
        work.send_notification(function.pk, "resume", None, {"by": "alice"})
        assert resolve.call_count == 1
        assert len(checked.requests) == 1 and elsewhere.requests == []
        assert checked.requests[0].headers["host"] == f"localhost:{port}"  # the name, not the address
        # The next request looks the name up again: now a refused address, and nothing is sent there.
        work.send_notification(function.pk, "resume", None, {"by": "alice"})
    assert elsewhere.requests == [] and len(checked.requests) == 1
    assert [a.status_code for a in attempts("webhook")] == [201, None]
    assert REFUSED in attempts("webhook")[1].detail


def test_https_is_verified_for_the_name_while_connecting_to_the_checked_address(tmp_path):
    key, cert = self_signed(tmp_path, "127.0.0.2", names=("localhost",))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    receiver = Receiver(host="127.0.0.2").start()
    receiver.server.socket = context.wrap_socket(receiver.server.socket, server_side=True)
    port = receiver.server.server_address[1]
    try:
        with resolving(["127.0.0.2"]), mock.patch.dict("os.environ", {"SSL_CERT_FILE": str(cert)}):
            answer = outbound.send("POST", f"https://localhost:{port}/hook", b"{}", {}, 2,
                                   allowed=Allowed.parse(["127.0.0.2/32"]))
    finally:
        receiver.stop()
    assert answer.status == 201, answer
    assert receiver.requests[0].headers["host"] == f"localhost:{port}"


def test_proxy_variables_are_not_used(function, allow, receivers, monkeypatch):
    receiver, proxy = receivers(), receivers()
    allow("127.0.0.0/8")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy.url)
    work.send_notification(webhook_to(function, receiver.url + "/hook").pk, "resume", None, {"by": "alice"})
    assert proxy.requests == [] and len(receiver.requests) == 1


# --- The GitLab base URL --------------------------------------------------------------------------


def _feedback_form(function, **data):
    from portal.feedback.forms import FeedbackForm

    base = {"gitlab_api_url": "", "gitlab_project": "42", "notify_webhook_url": "", "gitlab_token": "glpat-abcdefgh"}
    return FeedbackForm({**base, **data}, instance=function.feedback_settings)


@pytest.mark.parametrize("url, error", [
    ("https://gitlab.example.org/?x=/projects/1/issues", "must not have a ?query"),
    ("https://gitlab.example.org/?", "must not have a ?query"),
    ("https://gitlab.example.org/#", "#fragment"),
])
def test_the_gitlab_url_takes_no_query_or_fragment(function, url, error):
    form = _feedback_form(function, gitlab_api_url=url)
    assert not form.is_valid() and error in str(form.errors["gitlab_api_url"])


def test_the_api_refuses_a_gitlab_url_with_a_query(client, function, cast):
    from portal.models import ApiToken
    from tests.api_client import Api, openapi

    api = Api(client, openapi(client))
    answer = api.call("patch", "/functions/{name}/feedback", {"gitlab_api_url": "https://gitlab.example.org/?a=b"},
                      name="hello", token=ApiToken.issue(cast["alice"], "alice's")[1])
    assert answer.status_code == 400, answer.content
    assert "?query" in answer.json()["error"]["fields"]["gitlab_api_url"][0]


def test_an_address_outside_the_setting_is_refused_when_it_is_entered(function, allow):
    allow("public")
    form = _feedback_form(function, notify_webhook_url="http://169.254.169.254/latest/meta-data/")
    assert not form.is_valid() and "SLIPWAY_OUTBOUND_ALLOWED_NETWORKS" in str(form.errors["notify_webhook_url"])


def test_a_stored_gitlab_url_with_a_query_cannot_steer_the_path():
    url = outbound.commit_status_url("https://gitlab.example.org/?x=", "team/hello", SHA)
    assert url == f"https://gitlab.example.org/api/v4/projects/team%2Fhello/statuses/{SHA}"


# --- git -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["https://127.0.0.1:9/team/hello.git", "ssh://git@127.0.0.1:9/team/hello.git",
                                 "git@localhost:team/hello.git"])
def test_a_fetch_from_a_refused_address_fails_with_the_code_before_git_runs(tmp_path, url):
    with mock.patch("deploy.source.run", autospec=True, side_effect=source.run) as run, \
            resolving(["127.0.0.1"]), pytest.raises(UserError) as refused:
        source.fetch(url, tmp_path / "work", allow_local=False, allowed=Allowed.parse(["public"]))
    assert refused.value.code == REFUSED and "SLIPWAY_OUTBOUND_ALLOWED_NETWORKS" in refused.value.message
    assert run.call_count == 0
    assert not (tmp_path / "work").exists()


def test_a_repository_url_with_a_port_that_is_no_number_is_refused_as_such(tmp_path):
    with pytest.raises(UserError) as refused:
        source.fetch("ssh://git@localhost:port/x.git", tmp_path / "work", allow_local=False)
    assert refused.value.code == "bad-repository-url"


def test_reconcile_of_a_refused_repository_reports_the_code_and_runs_no_git(function, allow):
    allow("public")
    function.repository_url, function.auto_deploy = "https://127.0.0.1:9/team/hello.git", True
    function.save()
    with mock.patch("deploy.source.run", autospec=True, side_effect=source.run) as run:
        found = reconcile.reconcile(function)
    assert found.outcome == "error" and found.code == REFUSED
    assert run.call_count == 0


@pytest.fixture
def repo(tmp_path) -> Repo:
    made = Repo(tmp_path / "repo")
    made.commit("first", {"README": "hello\n"})
    return made


def test_git_over_https_connects_to_the_checked_address_with_the_name_for_tls(tmp_path, repo, monkeypatch):
    certificate = self_signed(tmp_path, "127.0.0.2", names=("localhost",))
    with GitHttpServer(tmp_path / "git-http", root=repo.path.parent, certificate=certificate,
                       host="127.0.0.2") as server:
        monkeypatch.setenv("GIT_SSL_CAINFO", str(server.ca_file))
        token = source.Credentials(kind=source.TOKEN, secret=server.token, username=server.username)
        url = f"https://localhost:{server.port}/repo"  # the system resolver says 127.0.0.1: nothing listens there
        with resolving(["127.0.0.2"], ["127.0.0.3"]), \
                mock.patch("deploy.source.run", autospec=True, side_effect=source.run) as run:
            head = source.remote_head(url, "main", allow_local=False, credentials=token,
                                      allowed=Allowed.parse(["127.0.0.2/32"]))
    assert head == repo.git("rev-parse", "HEAD")
    assert server.requests and all(seen.authorized for seen in server.requests if seen.sent_credentials)
    argv = run.call_args.args[0]
    assert f"http.curloptResolve=localhost:{server.port}:127.0.0.2" in argv
    assert "http.followRedirects=false" in argv and "http.proxy=" in argv


def test_git_over_ssh_connects_to_the_checked_address_and_checks_the_host_key_by_name(tmp_path, repo):
    with Sshd(tmp_path / "sshd", host="127.0.0.2") as sshd:
        kind, key = (sshd.dir / "host_key.pub").read_text().split()[:2]
        credentials = source.Credentials(kind=source.SSH_KEY, secret=sshd.client_key.read_text(),
                                         known_hosts=f"[localhost]:{sshd.port} {kind} {key}\n")
        url = f"ssh://{sshd.user}@localhost:{sshd.port}{repo.path}"
        with resolving(["127.0.0.2"], ["127.0.0.3"]):
            head = source.remote_head(url, "main", allow_local=False, credentials=credentials,
                                      allowed=Allowed.parse(["127.0.0.2/32"]))
        assert head == repo.git("rev-parse", "HEAD")
        assert sshd.accepted() == 1
