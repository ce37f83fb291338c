"""A real deploy worker whose SLIPWAY_OUTBOUND_ALLOWED_NETWORKS leaves loopback out (the
production default, `public`): a repository on 127.0.0.1 fails the deployment with
`outbound-address-refused` before git connects. The unit tests (tests/test_outbound.py)
cover the checked address, the pins, the proxy and the feedback channels."""

from __future__ import annotations

import socket

import pytest

from portal.deployments.requesting import request_deploy
from portal.models import Deployment
from tests.integration.conftest import Worker, wait_done

pytestmark = pytest.mark.integration
Status = Deployment.Status


@pytest.fixture
def refusing_worker(worker, faults, tmp_path):
    """A deploy worker allowed public addresses only; the session's worker steps aside meanwhile."""
    worker.stop()
    refusing = Worker(tmp_path / "worker.log", faults, env={"SLIPWAY_OUTBOUND_ALLOWED_NETWORKS": "public"})
    try:
        refusing.start()
        yield refusing
    finally:
        refusing.stop()
        worker.start()


def test_a_deploy_from_a_repository_at_a_refused_address_fails_before_git_connects(refusing_worker,
                                                                                    fixture_function):
    with socket.socket() as listener:  # where git would connect: a connection would wait in its backlog
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        fixture_function.repository_url = f"https://127.0.0.1:{listener.getsockname()[1]}/team/hello.git"
        fixture_function.save()

        deployment = wait_done(request_deploy(fixture_function, trigger="cli"))

        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert (deployment.status, deployment.error_code) == (Status.FAILED, "outbound-address-refused")
    assert "SLIPWAY_OUTBOUND_ALLOWED_NETWORKS" in deployment.error_message
    output = deployment.steps.get(name="source").output
    assert "SLIPWAY_OUTBOUND_ALLOWED_NETWORKS" in output and "retrying" not in output
    assert [step.name for step in deployment.steps.all()] == ["source"]
