"""Remote builders over ssh: a private sshd on 127.0.0.1 stands in for the builder
host (its "remote" engine is this machine's, reached through ssh), with host keys
pinned by SLIPWAY_SSH_KNOWN_HOSTS."""

import pytest

from deploy import ssh
from deploy.errors import UserError
from portal.deployments.requesting import request_deploy
from portal.models import Deployment
from tests.integration.conftest import Worker, invoke_live, wait_done
from tests.sshd import keygen

pytestmark = pytest.mark.integration


@pytest.fixture
def ssh_worker(worker, faults, sshd, tmp_path):
    """A worker whose amd64 builder is the private sshd; the session's worker steps aside meanwhile."""
    worker.stop()
    remote = Worker(tmp_path / "worker.log", faults, env={
        "SLIPWAY_DOCKER_HOST_X86_64": sshd.url, "SLIPWAY_SSH_KNOWN_HOSTS": sshd.known_hosts,
        "SLIPWAY_SSH_IDENTITY_FILE": str(sshd.client_key)})
    try:
        remote.start()
        yield remote
    finally:
        remote.stop()
        worker.start()


def test_a_function_builds_and_ships_through_an_ssh_builder(ssh_worker, sshd, fixture_function, repo):
    repo.release("one")
    deployment = wait_done(request_deploy(fixture_function, trigger="cli"))
    assert deployment.status == Deployment.Status.SUCCEEDED, deployment.error_message
    for name in ("build", "push"):
        assert f"builder: {sshd.url} (host key pinned)" in deployment.steps.get(name=name).output
    assert sshd.accepted() >= 1, "the build and push did not log in through the sshd"
    assert invoke_live(fixture_function)["release"] == "one"


def test_a_builder_whose_host_key_is_not_the_pinned_one_is_refused_as_a_user_error(sshd, tmp_path):
    kind, key = keygen(tmp_path / "other", "someone-else").with_suffix(".pub").read_text().split()[:2]
    with pytest.raises(UserError) as refused:
        ssh.forward(sshd.url, known_hosts=f"[127.0.0.1]:{sshd.port} {kind} {key}\n",
                    identity_file=str(sshd.client_key))
    assert refused.value.code == "builder-host-key-mismatch"
    assert "not the one pinned" in refused.value.message
    assert sshd.accepted() == 0


def test_a_pinned_builder_is_forwarded_to_its_engine_socket(sshd, docker_client):
    import docker

    url = ssh.forward(sshd.url, known_hosts=sshd.known_hosts, identity_file=str(sshd.client_key))
    assert url.startswith("unix://") and sshd.accepted() == 1
    assert docker.DockerClient(base_url=url).info()["ID"] == docker_client.info()["ID"]
