"""Cleaning up after a run removes what that run made and nothing of a run beside it
on the same Docker engine (CI and a developer's run share one)."""

import io
import tarfile
import uuid

from tests.conftest import TEST_LABEL
from tests.integration.conftest import remove_images


def _tiny_image(docker_client, name: str):
    """An image of one file, built here (FROM scratch: nothing to pull), tagged `name:ours`."""
    dockerfile = f"FROM scratch\nLABEL {TEST_LABEL}=cleanup\nCOPY marker /marker\n".encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for path, data in (("Dockerfile", dockerfile), ("marker", name.encode())):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    image, _ = docker_client.images.build(fileobj=context, custom_context=True, tag=f"{name}:ours", rm=True)
    return image


def test_cleanup_leaves_another_runs_tag_of_the_same_image(docker_client):
    name = f"slipway-test/cleanup-{uuid.uuid4().hex[:8]}"
    ours, theirs = f"{name}:ours", f"{name}:theirs"
    image = _tiny_image(docker_client, name)
    image.tag(name, "theirs")  # the same inputs build the same image: two runs' tags name one image ID
    try:
        image = docker_client.images.get(ours)
        assert theirs in image.tags

        remove_images(docker_client, [image], ours=lambda tag: tag == ours)

        left = docker_client.images.get(theirs)
        assert left.id == image.id and left.tags == [theirs]
    finally:
        for tag in (ours, theirs):
            try:
                docker_client.images.remove(tag, force=True)
            except Exception:
                pass
