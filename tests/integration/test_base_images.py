"""Each base image, with a tiny handler, answers through the emulator."""

import json
import urllib.request

import pytest

from devstack import base_images
from tests.conftest import TEST_LABEL, build_handler_image, free_port, wait_for

pytestmark = pytest.mark.integration

HANDLER = b"""
import os, platform, sys
def handler(event, context):
    return {"echo": event, "machine": platform.machine(), "python": sys.version.split()[0],
            "user": os.getuid(), "task_root": os.environ["LAMBDA_TASK_ROOT"]}
"""


def _invoke(port: int, event: dict) -> dict | None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/2015-03-31/functions/function/invocations",
                                     data=json.dumps(event).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except OSError:
        return None


@pytest.mark.parametrize("arch,machine", [("arm64", "aarch64"), ("amd64", "x86_64")])
def test_base_image_runs_a_handler_through_the_emulator(docker_client, unique, arch, machine):
    tag = f"slipway-test/base-smoke:{arch}-{unique}"
    build_handler_image(docker_client, tag, arch, HANDLER)
    port = free_port()
    # As Lambda runs it: read-only root, only /tmp writable, not root.
    container = docker_client.containers.run(
        tag, name=f"slipway-test-base-{arch}-{unique}", detach=True, labels={TEST_LABEL: "1"},
        platform=f"linux/{arch}", ports={"8080/tcp": ("127.0.0.1", port)}, read_only=True,
        tmpfs={"/tmp": ""}, user="993:990",
    )
    try:
        answer = wait_for(lambda: _invoke(port, {"hello": arch}), 60, f"the {arch} emulator to answer")
        assert answer == {"echo": {"hello": arch}, "machine": machine, "python": answer["python"],
                          "user": 993, "task_root": "/var/task"}
        assert answer["python"].startswith(base_images.PYTHON_VERSION)
        uname = container.exec_run(["uname", "-m"]).output.decode().strip()
        assert uname == machine
    finally:
        container.remove(force=True)
        docker_client.images.remove(tag, force=True)


@pytest.mark.parametrize("arch", ["arm64", "amd64"])
def test_base_image_is_labelled_current_and_of_the_right_architecture(docker_client, arch):
    image = docker_client.images.get(base_images.image_tag(arch))
    assert image.attrs["Architecture"] == arch
    assert base_images.is_current(docker_client, arch)
    assert image.attrs["Config"]["Entrypoint"] == ["/lambda-entrypoint.sh"]
